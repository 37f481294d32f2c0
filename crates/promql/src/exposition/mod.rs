//! Prometheus exposition formats: turns a `/metrics` body into samples and metadata.
//!
//! Two formats, as Prometheus 2.42 reads them: the text format 0.0.4 ([`text`]) and OpenMetrics
//! 1.0 ([`openmetrics`]). Histograms and summaries come out as their series (`_bucket`, `_sum`,
//! `_count`, quantiles), exactly as Prometheus stores them. Malformed input is an error naming the
//! line and column; no input makes the parsers panic.

mod line;
pub mod openmetrics;
pub mod text;

use crate::value::{Labels, Millis};

/// Which exposition format a body is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4` (also the fallback for unknown content types, as Prometheus).
    Text,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

impl Format {
    /// The `Accept` header Prometheus 2.42 sends: OpenMetrics preferred, text 0.0.4 accepted.
    pub const ACCEPT_HEADER: &'static str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

    /// The format a response's `Content-Type` announces; anything but OpenMetrics is read as text.
    pub fn from_content_type(content_type: Option<&str>) -> Format {
        match content_type {
            Some(ct)
                if ct
                    .trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/openmetrics-text") =>
            {
                Format::OpenMetrics
            }
            _ => Format::Text,
        }
    }
}

/// A metric family's declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
    /// `untyped` (text) or `unknown` (OpenMetrics).
    Unknown,
}

/// What `# TYPE`, `# HELP` and `# UNIT` lines said about one metric family.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    pub family: String,
    pub kind: MetricType,
    pub help: Option<String>,
    pub unit: Option<String>,
}

/// One exposed sample: its full label set (including `__name__`), value and optional timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct ExposedSample {
    pub labels: Labels,
    pub value: f64,
    /// Milliseconds since the epoch when the exposition carried a timestamp.
    pub timestamp: Option<Millis>,
}

/// A parsed body: samples in exposition order, and family metadata in declaration order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    pub samples: Vec<ExposedSample>,
    pub metadata: Vec<Metadata>,
}

/// Why a body did not parse, and where (1-based line and byte column).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Parses `body` in `format`. Bytes that are not UTF-8 are an error at their position.
pub fn parse(body: &[u8], format: Format) -> Result<Exposition, ParseError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        let valid = &body[..e.valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        ParseError {
            line,
            column: valid.len() - line_start + 1,
            message: "invalid UTF-8".into(),
        }
    })?;
    match format {
        Format::Text => text::parse(text),
        Format::OpenMetrics => openmetrics::parse(text),
    }
}

/// Parses a sample value as Go's `strconv.ParseFloat` does for the spellings exporters use:
/// decimal and exponent forms, `NaN`, `+Inf`, `-Inf`, `Inf` (any case).
pub(crate) fn parse_float(s: &str) -> Option<f64> {
    if s.is_empty() || s.contains('_') {
        return None;
    }
    // Rust accepts exactly the decimal, `inf`, `infinity` and `nan` spellings (any case, with a
    // sign) that Go does; hexadecimal floats are not used by any exporter.
    s.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_choose_the_format() {
        for (ct, expect) in [
            (
                Some("application/openmetrics-text; version=1.0.0; charset=utf-8"),
                Format::OpenMetrics,
            ),
            (Some("text/plain; version=0.0.4"), Format::Text),
            (Some("application/json"), Format::Text),
            (None, Format::Text),
        ] {
            assert_eq!(Format::from_content_type(ct), expect, "{ct:?}");
        }
    }

    #[test]
    fn invalid_utf8_is_located() {
        let err = parse(b"a 1\nb{x=\"\xff\"} 2\n", Format::Text).unwrap_err();
        assert_eq!((err.line, err.column), (2, 6));
    }

    #[test]
    fn floats_parse_like_go() {
        for (s, v) in [
            ("1", 1.0),
            ("-1.5e3", -1500.0),
            ("+Inf", f64::INFINITY),
            ("-Inf", f64::NEG_INFINITY),
            ("inf", f64::INFINITY),
            (".5", 0.5),
        ] {
            assert_eq!(parse_float(s), Some(v), "{s}");
        }
        assert!(parse_float("NaN").is_some_and(f64::is_nan));
        for bad in ["", "1_000", "one", "1.2.3", "0x"] {
            assert_eq!(parse_float(bad), None, "{bad}");
        }
    }
}
