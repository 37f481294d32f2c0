//! Writing files so that a crash leaves the old state or the new one, never a mix.
//!
//! Whole-file artifacts go through [`write_atomic`]: the bytes are written to a temporary file in
//! the same directory (`.NAME.tmp`), fsynced, renamed over the final name, and the directory is
//! fsynced so the rename itself survives a power cut. A crash before the rename leaves only the
//! temporary file; the final name holds either nothing or its previous content.
//!
//! Logs that grow during the run (the check log, the burst transcript) go through [`AppendLog`]:
//! one line per write, fsynced before the call returns. A line cut short by a crash has no
//! newline; reopening the log drops it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The temporary name [`write_atomic`] uses for `name` while writing it.
pub fn temp_name(name: &str) -> String {
    format!(".{name}.tmp")
}

/// Whether `name` is a temporary file left by an interrupted [`write_atomic`].
pub fn is_temp(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// Fsyncs a directory, so that entries created, renamed or removed in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `dir/name` with `bytes` atomically and durably (see the module docs).
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    Staged::write(dir, name, bytes)?.commit()
}

/// A file written and fsynced under its temporary name, not yet renamed into place. Dropping a
/// `Staged` without [`Staged::commit`] leaves the temporary file behind, exactly as a crash would.
#[derive(Debug)]
pub struct Staged {
    dir: PathBuf,
    temp: PathBuf,
    target: PathBuf,
}

impl Staged {
    /// Writes `bytes` to `dir/.NAME.tmp` (replacing a stale one) and fsyncs it.
    pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<Staged> {
        let temp = dir.join(temp_name(name));
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        Ok(Staged {
            dir: dir.to_path_buf(),
            temp,
            target: dir.join(name),
        })
    }

    /// Where the bytes are until [`Staged::commit`].
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Renames the temporary file over the final name and fsyncs the directory.
    pub fn commit(self) -> io::Result<()> {
        fs::rename(&self.temp, &self.target)?;
        sync_dir(&self.dir)
    }
}

/// A log that only grows, one fsynced line at a time.
#[derive(Debug)]
pub struct AppendLog {
    file: File,
    path: PathBuf,
}

impl AppendLog {
    /// Opens `path` for appending, creating it if needed. A last line without its newline (cut
    /// short by a crash) is dropped first, so the next line starts on a line of its own.
    pub fn open(path: &Path) -> io::Result<AppendLog> {
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        let len = file.metadata()?.len();
        if len > 0 {
            let keep = complete_lines_len(&mut file)?;
            if keep < len {
                file.set_len(keep)?;
                file.sync_all()?;
            }
        }
        if created && let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        Ok(AppendLog {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Appends `line` and a newline, then fsyncs. A line holding a newline is refused: split it.
    pub fn append_line(&mut self, line: &str) -> io::Result<()> {
        if line.contains('\n') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a log line must not contain a newline: append each line separately",
            ));
        }
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.file.write_all(&bytes)?;
        self.file.sync_data()
    }

    /// Appends each line in turn, each fsynced.
    pub fn append_lines<'a>(&mut self, lines: impl IntoIterator<Item = &'a str>) -> io::Result<()> {
        for line in lines {
            self.append_line(line)?;
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The length of the file up to and including its last newline.
pub(crate) fn complete_lines_len(file: &mut File) -> io::Result<u64> {
    let len = file.metadata()?.len();
    // Scan backwards in blocks for the last newline.
    let mut end = len;
    let mut buf = [0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|b| *b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_log_drops_a_torn_line_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("check.log");
        let mut log = AppendLog::open(&path).unwrap();
        log.append_lines(["one", "two"]).unwrap();
        assert!(log.append_line("three\nfour").is_err());
        drop(log);
        // A crash mid-line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"thr").unwrap();
        drop(f);
        let mut log = AppendLog::open(&path).unwrap();
        log.append_line("three").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "one\ntwo\nthree\n");
    }

    #[test]
    fn staged_file_is_invisible_until_committed() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "a.txt", b"old").unwrap();
        let staged = Staged::write(dir.path(), "a.txt", b"new").unwrap();
        assert_eq!(fs::read(dir.path().join("a.txt")).unwrap(), b"old");
        assert!(staged.temp_path().exists());
        staged.commit().unwrap();
        assert_eq!(fs::read(dir.path().join("a.txt")).unwrap(), b"new");
        assert!(!dir.path().join(temp_name("a.txt")).exists());
        assert!(is_temp(&temp_name("a.txt")) && !is_temp("a.txt"));
    }
}
