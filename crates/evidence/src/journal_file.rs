//! `journal.jsonl` on disk: the run's plan, then every engine input, one fsynced line each.
//!
//! The runtime appends each input *before* carrying out the actions it causes, so after a crash
//! the journal holds every input the engine took and `canary resume` rebuilds the engine by
//! replaying it. A crash mid-write leaves a last line without its newline; such a line is torn,
//! whether or not its bytes happen to parse, because the writer never confirmed it. Resuming
//! drops it; verifying calls the bundle incomplete.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use canary_core::engine::Input;
use canary_core::journal::{self, Header, Journal, JournalError};

use crate::durable;

/// Why the journal file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum JournalFileError {
    #[error(
        "cannot {action} the journal {path}: {source}; check that the evidence directory exists, is writable and the disk is not full"
    )]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "the journal {path} already exists: a new run needs a new run id (resume an interrupted run with `canary resume RUN_ID`)"
    )]
    Exists { path: PathBuf },
    #[error(
        "the journal {path} has no complete header line: the run crashed before it started; delete its bundle directory and start a new run"
    )]
    TornHeader { path: PathBuf },
    #[error(
        "the journal {path} is not valid UTF-8: it was damaged or is not a canary journal; it cannot be resumed or verified"
    )]
    NotText { path: PathBuf },
    #[error(
        "the journal {path} cannot be read: {source}; it was damaged or written by another canary version"
    )]
    Parse { path: PathBuf, source: JournalError },
}

/// Appends engine inputs to `journal.jsonl`, fsyncing each line.
#[derive(Debug)]
pub struct JournalWriter {
    file: File,
    path: PathBuf,
    inputs: usize,
}

impl JournalWriter {
    /// Creates the journal at `path` with its header line. Refuses an existing file.
    pub fn create(path: &Path, header: &Header) -> Result<JournalWriter, JournalFileError> {
        let io = |action| {
            move |source| JournalFileError::Io {
                action,
                path: path.to_path_buf(),
                source,
            }
        };
        let mut file = match OpenOptions::new().append(true).create_new(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(JournalFileError::Exists {
                    path: path.to_path_buf(),
                });
            }
            Err(e) => return Err(io("create")(e)),
        };
        file.write_all(journal::line(header).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io("write"))?;
        if let Some(dir) = path.parent() {
            durable::sync_dir(dir).map_err(io("sync the directory of"))?;
        }
        Ok(JournalWriter {
            file,
            path: path.to_path_buf(),
            inputs: 0,
        })
    }

    /// Reopens the journal of an interrupted run for appending: drops a torn last line (see the
    /// module docs), then returns the writer and the journal as it now stands. The returned
    /// journal's `torn_tail` says whether a line was dropped.
    pub fn resume(path: &Path) -> Result<(JournalWriter, Journal), JournalFileError> {
        let io = |action| {
            move |source| JournalFileError::Io {
                action,
                path: path.to_path_buf(),
                source,
            }
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(path)
            .map_err(io("open"))?;
        let len = file.metadata().map_err(io("read"))?.len();
        let keep = durable::complete_lines_len(&mut file).map_err(io("read"))?;
        if keep == 0 {
            return Err(JournalFileError::TornHeader {
                path: path.to_path_buf(),
            });
        }
        let dropped = keep < len;
        if dropped {
            file.set_len(keep)
                .and_then(|()| file.sync_all())
                .map_err(io("truncate the torn last line of"))?;
        }
        let mut journal = read(path)?;
        journal.torn_tail = dropped;
        let inputs = journal.inputs.len();
        Ok((
            JournalWriter {
                file,
                path: path.to_path_buf(),
                inputs,
            },
            journal,
        ))
    }

    /// Appends one input and fsyncs it. When this returns `Ok`, the input survives a crash.
    pub fn append(&mut self, input: &Input) -> Result<(), JournalFileError> {
        self.file
            .write_all(journal::line(input).as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|source| JournalFileError::Io {
                action: "append to",
                path: self.path.clone(),
                source,
            })?;
        self.inputs += 1;
        Ok(())
    }

    /// Inputs in the journal, counting those written before a resume.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads and parses a journal without changing it. A last line without its newline is
/// reported as `torn_tail` (and left out of `inputs`) even when its bytes parse.
pub fn read(path: &Path) -> Result<Journal, JournalFileError> {
    let bytes = fs::read(path).map_err(|source| JournalFileError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    parse_bytes(path, &bytes)
}

/// Parses journal bytes read from `path` (named in errors).
pub fn parse_bytes(path: &Path, bytes: &[u8]) -> Result<Journal, JournalFileError> {
    let complete = match bytes.iter().rposition(|b| *b == b'\n') {
        Some(i) => &bytes[..=i],
        None if bytes.is_empty() => bytes,
        None => {
            return Err(JournalFileError::TornHeader {
                path: path.to_path_buf(),
            });
        }
    };
    let torn = complete.len() < bytes.len();
    let text = std::str::from_utf8(complete).map_err(|_| JournalFileError::NotText {
        path: path.to_path_buf(),
    })?;
    let mut journal = journal::parse(text).map_err(|source| JournalFileError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    journal.torn_tail = torn;
    Ok(journal)
}
