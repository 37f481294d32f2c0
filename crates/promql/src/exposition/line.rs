//! A cursor over one line of an exposition body: the tokens both formats share (metric and
//! label names, quoted label values, label sets), each failure located at its column.

use super::ParseError;
use crate::value::Labels;

pub(crate) struct Line<'a> {
    text: &'a str,
    number: usize,
    pos: usize,
}

impl<'a> Line<'a> {
    pub(crate) fn new(text: &'a str, number: usize) -> Self {
        Line {
            text,
            number,
            pos: 0,
        }
    }

    /// An error at the cursor.
    pub(crate) fn error(&self, message: impl Into<String>) -> ParseError {
        self.error_at(self.pos, message)
    }

    pub(crate) fn error_at(&self, pos: usize, message: impl Into<String>) -> ParseError {
        ParseError {
            line: self.number,
            column: pos + 1,
            message: message.into(),
        }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    pub(crate) fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.text.len());
    }

    /// Skips spaces and tabs; returns how many were skipped.
    pub(crate) fn skip_blanks(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// Consumes `c` or fails with `what`.
    pub(crate) fn expect(&mut self, c: u8, what: &str) -> Result<(), ParseError> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(format!("expected {what}, found {}", self.describe_next())))
        }
    }

    /// The next character, for messages.
    pub(crate) fn describe_next(&self) -> String {
        match self.rest().chars().next() {
            None => "end of line".into(),
            Some(c) => format!("{c:?}"),
        }
    }

    /// The characters up to the next space, tab or end of line.
    pub(crate) fn token(&mut self) -> &'a str {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if b == b' ' || b == b'\t' {
                break;
            }
            self.pos += 1;
        }
        &self.text[start..self.pos]
    }

    /// `[a-zA-Z_:][a-zA-Z0-9_:]*`
    pub(crate) fn metric_name(&mut self) -> Result<&'a str, ParseError> {
        self.name(true, "a metric name")
    }

    /// `[a-zA-Z_][a-zA-Z0-9_]*`
    pub(crate) fn label_name(&mut self) -> Result<&'a str, ParseError> {
        self.name(false, "a label name")
    }

    fn name(&mut self, colons: bool, what: &str) -> Result<&'a str, ParseError> {
        let start = self.pos;
        while let Some(b) = self.peek() {
            let ok = b.is_ascii_alphabetic()
                || b == b'_'
                || (colons && b == b':')
                || (self.pos > start && b.is_ascii_digit());
            if !ok {
                break;
            }
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.error(format!("expected {what}, found {}", self.describe_next())));
        }
        Ok(&self.text[start..self.pos])
    }

    /// A double-quoted label value with `\\`, `\"` and `\n` escapes (other escapes are kept
    /// verbatim, as Prometheus does).
    pub(crate) fn quoted(&mut self) -> Result<String, ParseError> {
        self.expect(b'"', "'\"' to open a label value")?;
        let open = self.pos - 1;
        let mut out = String::new();
        let mut chunk_start = self.pos;
        loop {
            match self.peek() {
                None => return Err(self.error_at(open, "label value is not closed by '\"'")),
                Some(b'"') => {
                    out.push_str(&self.text[chunk_start..self.pos]);
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    out.push_str(&self.text[chunk_start..self.pos]);
                    match self.text.as_bytes().get(self.pos + 1) {
                        Some(b'\\') => out.push('\\'),
                        Some(b'"') => out.push('"'),
                        Some(b'n') => out.push('\n'),
                        Some(_) => {
                            // Keep the backslash; the escaped character is copied with the next
                            // chunk (it may be multi-byte).
                            out.push('\\');
                            self.pos += 1;
                            chunk_start = self.pos;
                            self.advance_char();
                            continue;
                        }
                        None => {
                            return Err(self.error_at(open, "label value is not closed by '\"'"));
                        }
                    }
                    self.pos += 2;
                    chunk_start = self.pos;
                }
                Some(_) => self.advance_char(),
            }
        }
    }

    fn advance_char(&mut self) {
        let n = self.rest().chars().next().map_or(1, char::len_utf8);
        self.pos += n;
    }

    /// `{name="value", ...}` (the cursor is on `{`), trailing comma allowed; the labels are added
    /// to `labels`. Duplicate names are an error.
    pub(crate) fn label_set(
        &mut self,
        labels: &mut Vec<(String, String)>,
        allow_blanks: bool,
    ) -> Result<(), ParseError> {
        self.expect(b'{', "'{'")?;
        loop {
            if allow_blanks {
                self.skip_blanks();
            }
            if self.peek() == Some(b'}') {
                self.pos += 1;
                return Ok(());
            }
            let name_pos = self.pos;
            let name = self.label_name()?;
            if allow_blanks {
                self.skip_blanks();
            }
            self.expect(b'=', "'=' after the label name")?;
            if allow_blanks {
                self.skip_blanks();
            }
            let value = self.quoted()?;
            if labels.iter().any(|(n, _)| n == name) {
                return Err(self.error_at(name_pos, format!("label {name:?} appears twice")));
            }
            labels.push((name.to_owned(), value));
            if allow_blanks {
                self.skip_blanks();
            }
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                _ => {
                    return Err(self.error(format!(
                        "expected ',' or '}}' in the label set, found {}",
                        self.describe_next()
                    )));
                }
            }
        }
    }
}

/// Builds the series' label set from its name and exposed labels.
pub(crate) fn series_labels(name: &str, pairs: Vec<(String, String)>) -> Labels {
    let mut labels = Labels::from_pairs(pairs);
    labels.set("__name__".to_owned(), name.to_owned());
    labels
}
