//! The journal of a run: its plan, then every engine input, one JSON object per line.
//!
//! Written by the runtime (fsynced per line), read back by `canary resume` and `canary verify`.
//! This module only turns journals into text and back; files are the caller's business.

use serde::{Deserialize, Serialize};

use crate::engine::Input;
use crate::plan::Plan;

/// Version of the journal format, bumped on incompatible changes.
pub const FORMAT: u32 = 1;

/// The first line of a journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub format: u32,
    pub run_id: String,
    pub plan: Plan,
}

/// A journal line that could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JournalError {
    #[error("the journal is empty: it must start with a header line")]
    Empty,
    #[error("journal line {line}: {message}")]
    Line { line: usize, message: String },
    #[error("journal format {found} is not supported (this canary reads format {FORMAT})")]
    Format { found: u32 },
}

/// A parsed journal.
#[derive(Debug, Clone, PartialEq)]
pub struct Journal {
    pub header: Header,
    pub inputs: Vec<Input>,
    /// The last line had no newline and did not parse: the writer died mid-line. Resuming drops
    /// it; verifying treats the bundle as incomplete.
    pub torn_tail: bool,
}

/// One line (with its newline) for `value`.
pub fn line<T: Serialize>(value: &T) -> String {
    // Plans and inputs hold only strings, integers and floats written by `json_float`:
    // serialisation cannot fail.
    let mut s = serde_json::to_string(value).unwrap_or_default();
    s.push('\n');
    s
}

/// Parses a whole journal.
pub fn parse(text: &str) -> Result<Journal, JournalError> {
    let ends_clean = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let (first, rest) = lines.split_first().ok_or(JournalError::Empty)?;
    let header: Header = serde_json::from_str(first).map_err(|e| JournalError::Line {
        line: 1,
        message: e.to_string(),
    })?;
    if header.format != FORMAT {
        return Err(JournalError::Format {
            found: header.format,
        });
    }
    let mut inputs = Vec::with_capacity(rest.len());
    let mut torn_tail = false;
    for (i, l) in rest.iter().enumerate() {
        let last = i + 1 == rest.len();
        match serde_json::from_str::<Input>(l) {
            Ok(input) => inputs.push(input),
            Err(_) if last && !ends_clean => torn_tail = true,
            Err(e) => {
                return Err(JournalError::Line {
                    line: i + 2,
                    message: e.to_string(),
                });
            }
        }
    }
    Ok(Journal {
        header,
        inputs,
        torn_tail,
    })
}
