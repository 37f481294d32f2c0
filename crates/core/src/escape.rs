//! Free text from outside the program — an operator's abort reason, an approver's name, an
//! alert's name, an error another system sent — shown on one line of an artifact or a terminal
//! without the power to forge another: line breaks, escape sequences and other control
//! characters, and the Unicode controls that reorder text on screen, appear as visible escapes.
//! The text itself is stored as given (the journal); only its rendering is escaped.

use std::fmt;

/// `text` displayed with every control character escaped: `\n`, `\r`, `\t`, `\e` (ESC), `\0`
/// and `\u{…}` for the rest. Everything else, quotes and backslashes included, is shown as is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(needs_escape) {
            f.write_str(&rest[..at])?;
            let mut chars = rest[at..].chars();
            if let Some(c) = chars.next() {
                match c {
                    '\n' => f.write_str("\\n")?,
                    '\r' => f.write_str("\\r")?,
                    '\t' => f.write_str("\\t")?,
                    '\u{1b}' => f.write_str("\\e")?,
                    '\0' => f.write_str("\\0")?,
                    c => write!(f, "\\u{{{:x}}}", u32::from(c))?,
                }
            }
            rest = chars.as_str();
        }
        f.write_str(rest)
    }
}

/// Control characters (C0, DEL, C1), line and paragraph separators, and the bidirectional
/// formatting characters that can make a line read differently from what it holds.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `text` escaped as [`Escaped`] shows it.
pub fn escaped(text: &str) -> String {
    Escaped(text).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_in_free_text_can_start_a_line_or_colour_one() {
        let table = [
            ("ops-on-call", "ops-on-call"),
            (
                "tenant leak, see 'INC-42' \\ \"p1\"",
                "tenant leak, see 'INC-42' \\ \"p1\"",
            ),
            (
                "x\nverdict      PROMOTE\u{1b}[31m",
                "x\\nverdict      PROMOTE\\e[31m",
            ),
            ("a\r\nb\tc\0d\u{7f}", "a\\r\\nb\\tc\\0d\\u{7f}"),
            ("\u{85}next\u{2028}line", "\\u{85}next\\u{2028}line"),
            ("abc\u{202e}cba", "abc\\u{202e}cba"),
            ("café ✓ 日本", "café ✓ 日本"),
        ];
        for (input, shown) in table {
            assert_eq!(escaped(input), shown, "{input:?}");
            assert!(!escaped(input).contains('\n'));
        }
    }
}
