//! Configuration errors that point at file:line:col, show the line, and say how to fix it.

use std::fmt;
use std::ops::Range;

/// One problem in the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// Byte range in the file; `None` when the problem is not at one place.
    pub span: Option<Range<usize>>,
    pub message: String,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn at(span: Range<usize>, message: impl Into<String>) -> Self {
        Diagnostic {
            span: Some(span),
            message: message.into(),
            help: None,
        }
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// Every problem found in one file, rendered against its source.
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    pub file: String,
    pub source: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl std::error::Error for ConfigErrors {}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = source[line_start..offset].chars().count() + 1;
    (line, col)
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match &d.span {
                Some(span) => {
                    let (line, col) = line_col(&self.source, span.start);
                    writeln!(f, "error: {}:{line}:{col}: {}", self.file, d.message)?;
                    let text = self.source.lines().nth(line - 1).unwrap_or("");
                    let gutter = line.to_string().len();
                    // Underline the span within this line (at least one caret).
                    let line_start: usize = self
                        .source
                        .lines()
                        .take(line - 1)
                        .map(|l| l.len() + 1)
                        .sum();
                    let end_in_line = span.end.saturating_sub(line_start).min(text.len());
                    let start_in_line = span.start.saturating_sub(line_start).min(text.len());
                    let width = text
                        .get(start_in_line..end_in_line.max(start_in_line))
                        .map_or(1, |s| s.chars().count().max(1));
                    writeln!(f, "{:gutter$} |", "")?;
                    writeln!(f, "{line} | {text}")?;
                    writeln!(
                        f,
                        "{:gutter$} | {}{}",
                        "",
                        " ".repeat(col - 1),
                        "^".repeat(width)
                    )?;
                    if let Some(help) = &d.help {
                        writeln!(f, "{:gutter$} = help: {help}", "")?;
                    }
                }
                None => {
                    writeln!(f, "error: {}: {}", self.file, d.message)?;
                    if let Some(help) = &d.help {
                        writeln!(f, "  = help: {help}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The closest candidate to `word`, if it is close enough to be a typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Turns a TOML/serde error into a diagnostic; unknown keys get a did-you-mean.
pub fn from_toml(err: &toml::de::Error) -> Diagnostic {
    let message = err.message().trim().to_owned();
    let span = err.span();
    // serde's wording: "unknown field `evalution_interval`, expected one of `service`, `duration`".
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((field, expected)) = rest.split_once('`')
    {
        let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        let mut d = Diagnostic {
            span,
            message: format!("unknown key `{field}`"),
            help: None,
        };
        d.help = Some(match did_you_mean(field, candidates.iter().copied()) {
            Some(best) => format!("did you mean `{best}`?"),
            None => format!("valid keys here: {}", candidates.join(", ")),
        });
        return d;
    }
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next())
    {
        return Diagnostic {
            span,
            message: format!("missing key `{field}`"),
            help: Some(format!(
                "add `{field} = ...` to this table (see `canary init`)"
            )),
        };
    }
    Diagnostic {
        span,
        message,
        help: None,
    }
}
