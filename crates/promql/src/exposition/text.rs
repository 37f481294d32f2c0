//! The Prometheus text exposition format 0.0.4.
//!
//! ```text
//! # HELP http_requests_total The total number of HTTP requests.
//! # TYPE http_requests_total counter
//! http_requests_total{method="post",code="200"} 1027 1395066363000
//! ```
//!
//! Blank lines and comments other than `# HELP`/`# TYPE` are ignored; tokens may be separated by
//! any run of spaces and tabs; timestamps are integer milliseconds.

use super::line::{Line, series_labels};
use super::{ExposedSample, Exposition, Metadata, MetricType, ParseError, parse_float};

/// Parses a text-format body.
pub fn parse(input: &str) -> Result<Exposition, ParseError> {
    let mut out = Exposition::default();
    for (i, raw) in input.split('\n').enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let mut line = Line::new(raw, i + 1);
        line.skip_blanks();
        match line.peek() {
            None => continue,
            Some(b'#') => comment(&mut line, &mut out)?,
            Some(_) => out.samples.push(sample(&mut line)?),
        }
    }
    Ok(out)
}

fn comment(line: &mut Line<'_>, out: &mut Exposition) -> Result<(), ParseError> {
    line.advance(1);
    line.skip_blanks();
    let keyword = line.token();
    if keyword != "HELP" && keyword != "TYPE" {
        return Ok(()); // an ordinary comment
    }
    if line.skip_blanks() == 0 {
        return Err(line.error(format!("expected a metric name after # {keyword}")));
    }
    let name = line.metric_name()?.to_owned();
    if !line.at_end() && line.skip_blanks() == 0 {
        return Err(line.error(format!(
            "expected a space after the metric name, found {}",
            line.describe_next()
        )));
    }
    let meta = metadata(out, &name);
    if keyword == "HELP" {
        meta.help = Some(unescape_help(line.rest()));
    } else {
        let kind_pos = line.pos();
        let kind = line.token();
        meta.kind = match kind {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            "summary" => MetricType::Summary,
            "untyped" => MetricType::Unknown,
            other => {
                return Err(line.error_at(
                    kind_pos,
                    format!(
                        "unknown metric type {other:?}: expected counter, gauge, histogram, summary or untyped"
                    ),
                ));
            }
        };
        line.skip_blanks();
        if !line.at_end() {
            return Err(line.error("unexpected text after the metric type"));
        }
    }
    Ok(())
}

/// The metadata entry for `family`, created on first mention.
pub(super) fn metadata<'a>(out: &'a mut Exposition, family: &str) -> &'a mut Metadata {
    let index = match out.metadata.iter().position(|m| m.family == family) {
        Some(i) => i,
        None => {
            out.metadata.push(Metadata {
                family: family.to_owned(),
                kind: MetricType::Unknown,
                help: None,
                unit: None,
            });
            out.metadata.len() - 1
        }
    };
    &mut out.metadata[index]
}

fn unescape_help(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('\\') => out.push('\\'),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn sample(line: &mut Line<'_>) -> Result<ExposedSample, ParseError> {
    let name = line.metric_name()?;
    let mut blanks = line.skip_blanks();
    let mut pairs = Vec::new();
    if line.peek() == Some(b'{') {
        line.label_set(&mut pairs, true)?;
        blanks = line.skip_blanks();
    }
    if blanks == 0 {
        return Err(line.error(format!(
            "expected a space before the value, found {}",
            line.describe_next()
        )));
    }
    let value_pos = line.pos();
    let value_text = line.token();
    let value = parse_float(value_text)
        .ok_or_else(|| line.error_at(value_pos, format!("{value_text:?} is not a number")))?;
    line.skip_blanks();
    let mut timestamp = None;
    if !line.at_end() {
        let ts_pos = line.pos();
        let ts_text = line.token();
        timestamp = Some(ts_text.parse::<i64>().map_err(|_| {
            line.error_at(
                ts_pos,
                format!("{ts_text:?} is not a timestamp (integer milliseconds)"),
            )
        })?);
        line.skip_blanks();
        if !line.at_end() {
            return Err(line.error("unexpected text after the timestamp"));
        }
    }
    Ok(ExposedSample {
        labels: series_labels(name, pairs),
        value,
        timestamp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_error(input: &str, line: usize, column: usize, contains: &str) {
        let err = parse(input).expect_err(input);
        assert_eq!((err.line, err.column), (line, column), "{input:?}: {err}");
        assert!(err.message.contains(contains), "{input:?}: {err}");
    }

    #[test]
    fn reads_the_documented_example() {
        let input = r#"# HELP http_requests_total The total number of HTTP requests.
# TYPE http_requests_total counter
http_requests_total{method="post",code="200"} 1027 1395066363000
http_requests_total{method="post",code="400"}    3 1395066363000

# Escaping in label values:
msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n\"FILE.TXT\""} 1.458255915e9

# Minimalistic line:
metric_without_timestamp_and_labels 12.47

# A weird metric from before the epoch:
something_weird{problem="division by zero"} +Inf -3982045

# A histogram, which has a pretty complex representation in the text format:
# HELP http_request_duration_seconds A histogram of the request duration.
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.05"} 24054
http_request_duration_seconds_bucket{le="+Inf"} 144320
http_request_duration_seconds_sum 53423
http_request_duration_seconds_count 144320
	  indented_with_tab{a="b",} NaN
"#;
        let e = parse(input).unwrap();
        assert_eq!(e.samples.len(), 10);
        let s = &e.samples[0];
        assert_eq!(
            s.labels.to_string(),
            r#"http_requests_total{code="200", method="post"}"#
        );
        assert_eq!((s.value, s.timestamp), (1027.0, Some(1_395_066_363_000)));
        assert_eq!(e.samples[2].labels.get("path"), Some(r"C:\DIR\FILE.TXT"));
        assert_eq!(
            e.samples[2].labels.get("error"),
            Some("Cannot find file:\n\"FILE.TXT\"")
        );
        assert_eq!(e.samples[4].value, f64::INFINITY);
        assert_eq!(e.samples[4].timestamp, Some(-3_982_045));
        assert!(e.samples[9].value.is_nan());
        assert_eq!(e.samples[9].labels.get("a"), Some("b"));
        assert_eq!(e.metadata.len(), 2);
        assert_eq!(e.metadata[1].kind, MetricType::Histogram);
        assert_eq!(
            e.metadata[0].help.as_deref(),
            Some("The total number of HTTP requests.")
        );
    }

    #[test]
    fn malformed_lines_are_located() {
        check_error("ok 1\n9bad 1\n", 2, 1, "metric name");
        check_error("a{b=\"c} 1\n", 1, 5, "not closed");
        check_error("a{b=c} 1\n", 1, 5, "'\"'");
        check_error("a{b=\"c\" d=\"e\"} 1\n", 1, 9, "',' or '}'");
        check_error("a one\n", 1, 3, "not a number");
        check_error("a 1 12.5\n", 1, 5, "timestamp");
        check_error("a 1 2 3\n", 1, 7, "after the timestamp");
        check_error("a{x=\"1\",x=\"2\"} 1", 1, 9, "twice");
        check_error("# TYPE a countr\n", 1, 10, "unknown metric type");
        check_error("a\n", 1, 2, "space before the value");
        check_error("a{\n", 1, 3, "label name");
    }

    #[test]
    fn unescaped_backslashes_survive() {
        let e = parse("a{p=\"x\\qy\\\\\"} 1").unwrap();
        assert_eq!(e.samples[0].labels.get("p"), Some("x\\qy\\"));
    }
}
