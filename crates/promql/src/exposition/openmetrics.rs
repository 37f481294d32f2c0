//! OpenMetrics 1.0 text format.
//!
//! ```text
//! # TYPE acme_http_router_request_seconds summary
//! # UNIT acme_http_router_request_seconds seconds
//! acme_http_router_request_seconds_sum{path="/api/v1",method="GET"} 9036.32 1605281325.12
//! acme_http_router_request_seconds_count{path="/api/v1",method="GET"} 807283.0
//! # EOF
//! ```
//!
//! Stricter than the text format, as the specification is: the body must end with `# EOF`,
//! blank lines and free comments are errors, timestamps are seconds (fractions allowed; converted
//! to milliseconds by truncation, as Prometheus does). Exemplars are checked and discarded.
//! A series may appear several times with increasing timestamps, which is how
//! `promtool tsdb create-blocks-from openmetrics` reads history files.

use super::line::{Line, series_labels};
use super::text::metadata;
use super::{ExposedSample, Exposition, MetricType, ParseError, parse_float};

/// Parses an OpenMetrics body.
pub fn parse(input: &str) -> Result<Exposition, ParseError> {
    parse_numbered(input).map(|(exposition, _)| exposition)
}

/// [`parse`], also giving the (1-based) line of every sample, in the order of
/// [`Exposition::samples`]: history files name the line of a conflicting sample.
pub(crate) fn parse_numbered(input: &str) -> Result<(Exposition, Vec<usize>), ParseError> {
    let mut out = Exposition::default();
    let mut sample_lines = Vec::new();
    let mut lines = input.split('\n').enumerate().peekable();
    while let Some((i, raw)) = lines.next() {
        let mut line = Line::new(raw, i + 1);
        if raw == "# EOF" {
            // Only an empty remainder (the final newline) may follow.
            match lines.next() {
                None => return Ok((out, sample_lines)),
                Some((_, "")) if lines.peek().is_none() => return Ok((out, sample_lines)),
                Some((j, _)) => {
                    return Err(ParseError {
                        line: j + 1,
                        column: 1,
                        message: "unexpected data after # EOF".into(),
                    });
                }
            }
        }
        match line.peek() {
            None if lines.peek().is_none() => {
                return Err(line.error("the body must end with \"# EOF\""));
            }
            None => return Err(line.error("empty lines are not allowed in OpenMetrics")),
            Some(b'#') => descriptor(&mut line, &mut out)?,
            Some(_) => {
                out.samples.push(sample(&mut line)?);
                sample_lines.push(i + 1);
            }
        }
    }
    // `split` always yields at least one item, so the loop above returned unless the input ended
    // without `# EOF` on a non-empty last line.
    let last = input.split('\n').count();
    Err(ParseError {
        line: last,
        column: input.rsplit('\n').next().map_or(0, str::len) + 1,
        message: "the body must end with \"# EOF\"".into(),
    })
}

fn descriptor(line: &mut Line<'_>, out: &mut Exposition) -> Result<(), ParseError> {
    line.advance(1);
    line.expect(b' ', "a space after '#'")?;
    let keyword_pos = line.pos();
    let keyword = line.token();
    if !matches!(keyword, "HELP" | "TYPE" | "UNIT") {
        return Err(line.error_at(
            keyword_pos,
            format!("expected HELP, TYPE, UNIT or EOF after '# ', found {keyword:?}"),
        ));
    }
    line.expect(b' ', "a space")?;
    let name = line.metric_name()?.to_owned();
    let meta_text = if line.at_end() {
        ""
    } else {
        line.expect(b' ', "a space after the metric name")?;
        line.rest()
    };
    let text_pos = line.pos();
    let meta = metadata(out, &name);
    match keyword {
        "HELP" => meta.help = Some(unescape_help(meta_text)),
        "UNIT" => meta.unit = Some(meta_text.to_owned()),
        _ => {
            meta.kind = match meta_text {
                "counter" => MetricType::Counter,
                "gauge" => MetricType::Gauge,
                "histogram" => MetricType::Histogram,
                "gaugehistogram" => MetricType::GaugeHistogram,
                "summary" => MetricType::Summary,
                "info" => MetricType::Info,
                "stateset" => MetricType::StateSet,
                "unknown" => MetricType::Unknown,
                other => {
                    return Err(line.error_at(
                        text_pos,
                        format!(
                            "unknown metric type {other:?}: expected counter, gauge, histogram, gaugehistogram, summary, info, stateset or unknown"
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn unescape_help(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn sample(line: &mut Line<'_>) -> Result<ExposedSample, ParseError> {
    let name = line.metric_name()?;
    let mut pairs = Vec::new();
    if line.peek() == Some(b'{') {
        line.label_set(&mut pairs, false)?;
    }
    line.expect(b' ', "a space before the value")?;
    let value = number(line, "value")?;
    let mut timestamp = None;
    if line.peek() == Some(b' ') && !line.rest().starts_with(" #") {
        line.advance(1);
        let ts_pos = line.pos();
        let seconds = number(line, "timestamp")?;
        if !seconds.is_finite() {
            return Err(line.error_at(ts_pos, "the timestamp must be a finite number of seconds"));
        }
        // Prometheus: int64(ts * 1000) — truncation toward zero.
        timestamp = Some((seconds * 1000.0) as i64);
    }
    if line.rest().starts_with(" # ") {
        line.advance(3);
        exemplar(line)?;
    }
    if !line.at_end() {
        return Err(line.error(format!(
            "unexpected {} after the sample",
            line.describe_next()
        )));
    }
    Ok(ExposedSample {
        labels: series_labels(name, pairs),
        value,
        timestamp,
    })
}

fn number(line: &mut Line<'_>, what: &str) -> Result<f64, ParseError> {
    let pos = line.pos();
    let text = line.token();
    parse_float(text).ok_or_else(|| {
        if text.is_empty() {
            line.error_at(pos, format!("expected a {what}"))
        } else {
            line.error_at(pos, format!("{text:?} is not a number ({what})"))
        }
    })
}

/// ` # {labels} value [timestamp]` — validated, then dropped: the store keeps no exemplars.
fn exemplar(line: &mut Line<'_>) -> Result<(), ParseError> {
    let mut pairs = Vec::new();
    line.label_set(&mut pairs, false)?;
    line.expect(b' ', "a space before the exemplar value")?;
    number(line, "exemplar value")?;
    if line.peek() == Some(b' ') {
        line.advance(1);
        number(line, "exemplar timestamp")?;
    }
    Ok(())
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
    fn reads_families_timestamps_and_exemplars() {
        let input = r#"# TYPE acme_http_router_request_seconds summary
# UNIT acme_http_router_request_seconds seconds
# HELP acme_http_router_request_seconds Latency though all of ACME's HTTP request router.
acme_http_router_request_seconds_sum{path="/api/v1",method="GET"} 9036.32 1605281325.123
acme_http_router_request_seconds_count{path="/api/v1",method="GET"} 807283.0
# TYPE foo histogram
foo_bucket{le="0.01"} 0
foo_bucket{le="+Inf"} 17 # {trace_id="KOO5S4vxi0o"} 0.67
foo_count 17
foo_sum 324789.3
# TYPE ttfv_ms counter
ttfv_ms_total{version="r1"} 1 1700000000
ttfv_ms_total{version="r1"} 2 1700000001.5
# EOF
"#;
        let e = parse(input).unwrap();
        assert_eq!(e.samples.len(), 8);
        assert_eq!(e.samples[0].timestamp, Some(1_605_281_325_123));
        assert_eq!(e.samples[1].timestamp, None);
        assert_eq!(e.samples[3].value, 17.0);
        assert_eq!(e.samples[3].labels.get("le"), Some("+Inf"));
        assert_eq!(e.samples[7].timestamp, Some(1_700_000_001_500));
        let meta = &e.metadata[0];
        assert_eq!(meta.kind, MetricType::Summary);
        assert_eq!(meta.unit.as_deref(), Some("seconds"));
        assert_eq!(
            meta.help.as_deref(),
            Some("Latency though all of ACME's HTTP request router.")
        );
        assert!(parse("# EOF").unwrap().samples.is_empty());
    }

    #[test]
    fn malformed_bodies_are_located() {
        check_error("a 1\n", 2, 1, "# EOF");
        check_error("a 1", 1, 4, "# EOF");
        check_error("a 1\n\nb 2\n# EOF\n", 2, 1, "empty lines");
        check_error("# random comment\n# EOF\n", 1, 3, "expected HELP");
        check_error("a  1\n# EOF\n", 1, 3, "expected a value");
        check_error("a 1 x\n# EOF\n", 1, 5, "timestamp");
        check_error("a 1 Inf\n# EOF\n", 1, 5, "finite");
        check_error("# EOF\na 1\n", 2, 1, "after # EOF");
        check_error("a{b=\"c\",b=\"d\"} 1\n# EOF\n", 1, 9, "twice");
        check_error("a 1 # {x=\"y\"}\n# EOF\n", 1, 14, "exemplar value");
        check_error("# TYPE a countr\n# EOF\n", 1, 10, "unknown metric type");
    }
}
