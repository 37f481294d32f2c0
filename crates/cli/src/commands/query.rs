//! `canary query`: evaluate PromQL with the embedded engine (over a history file or a short
//! scrape) or against a Prometheus, and print exactly the Prometheus HTTP API's JSON.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, bail};
use canary_core::Secret;
use canary_promql::eval::{Engine, EvalOptions};
use canary_promql::value::api_response_json;
use canary_promql::{Millis, Store, Value};
use canary_providers::metrics::MetricsError;
use canary_providers::metrics::prometheus::{PrometheusConfig, PrometheusSource};
use canary_providers::scrape::{ScrapeConfig, ScrapeTarget, Scraper};

use crate::commands::backtest::parse_time;

/// Evaluate a PromQL expression and print the answer as Prometheus' `/api/v1/query` (or, with
/// --range, `/api/v1/query_range`) JSON. The data comes from an OpenMetrics history file
/// (--data), from scraping targets for a while (--scrape), or from a Prometheus (--prometheus).
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  canary query --data history.om 'histogram_quantile(0.95, sum by (le) (rate(ttfv_ms_bucket[5m])))'
  canary query --data history.om --at 1700003600 --range 1700000000,1700003600,60s 'max(db_connection_pool_utilization)'
  canary query --scrape http://127.0.0.1:9101/metrics,version=r1 --for 20s 'rate(sse_total[10s])'
  canary query --prometheus http://prometheus:9090 --at 2026-11-17T14:00:00Z 'up'

Exit codes: 0 success, 1 error (the error JSON is printed as Prometheus prints it).")]
pub struct QueryArgs {
    /// The PromQL expression.
    expr: String,
    /// OpenMetrics history with a timestamp on every sample (what `promtool tsdb
    /// create-blocks-from openmetrics` reads).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["scrape", "prometheus"])]
    data: Option<PathBuf>,
    /// Scrape this target (repeatable): its metrics URL, then optional `label=value` pairs
    /// attached to its series.
    #[arg(
        long,
        value_name = "URL[,label=value...]",
        conflicts_with = "prometheus"
    )]
    scrape: Vec<String>,
    /// How long to scrape before evaluating (with --scrape).
    #[arg(long = "for", value_name = "DUR", default_value = "10s")]
    scrape_for: String,
    /// Scrape interval (with --scrape).
    #[arg(long, value_name = "DUR", default_value = "1s")]
    interval: String,
    /// Query this Prometheus-compatible API instead of the embedded engine.
    #[arg(long, value_name = "URL")]
    prometheus: Option<String>,
    /// Environment variable holding a bearer token for --prometheus.
    #[arg(long, value_name = "VAR", requires = "prometheus")]
    token_env: Option<String>,
    /// Evaluation time: unix seconds or RFC 3339. Default: the newest sample (--data, --scrape)
    /// or now (--prometheus).
    #[arg(long, value_name = "UNIX_TS")]
    at: Option<String>,
    /// A range query instead: start and end (unix seconds or RFC 3339) and a step (`15s`, or
    /// seconds).
    #[arg(long, value_name = "START,END,STEP", conflicts_with = "at")]
    range: Option<String>,
    /// How far back an instant selector looks for a sample (Prometheus' --query.lookback-delta).
    #[arg(long, value_name = "DUR", default_value = "5m")]
    lookback_delta: String,
}

/// Runs the command: the JSON on stdout, exit code 0, or Prometheus' error JSON and 1.
pub async fn run(args: QueryArgs) -> anyhow::Result<i32> {
    match answer(&args).await? {
        Ok(value) => {
            outln!("{}", api_response_json(&value));
            Ok(0)
        }
        Err(e) => {
            let error_type = match &e {
                MetricsError::BadQuery { .. } => "bad_data",
                MetricsError::Timeout { .. } => "timeout",
                _ => "execution",
            };
            let message = match &e {
                MetricsError::BadQuery { message } | MetricsError::Execution { message } => {
                    message.clone()
                }
                other => other.to_string(),
            };
            outln!(
                "{}",
                serde_json::json!({"status": "error", "errorType": error_type, "error": message})
            );
            eprintln!("error: {e}");
            Ok(1)
        }
    }
}

/// A range query's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Range {
    start: Millis,
    end: Millis,
    step: Millis,
}

fn parse_range(s: &str) -> anyhow::Result<Range> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let [start, end, step] = parts.as_slice() else {
        bail!("--range takes START,END,STEP, e.g. 1700000000,1700003600,60s");
    };
    let step = match step.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 => (secs * 1000.0).round() as Millis,
        _ => duration_millis(step).context("the step of --range")?,
    };
    let range = Range {
        start: parse_time(start)?,
        end: parse_time(end)?,
        step,
    };
    if range.step <= 0 {
        bail!("the step of --range must be positive");
    }
    if range.end < range.start {
        bail!("--range: the end must not be before the start");
    }
    Ok(range)
}

fn duration_millis(s: &str) -> anyhow::Result<Millis> {
    let d = canary_core::duration::parse(s)?;
    Ok(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `URL[,label=value...]`.
fn parse_target(s: &str) -> anyhow::Result<ScrapeTarget> {
    let mut parts = s.split(',');
    let url = parts.next().unwrap_or_default().trim().to_owned();
    let mut labels = Vec::new();
    for pair in parts {
        let (k, v) = pair.split_once('=').with_context(|| {
            format!("--scrape {s:?}: {pair:?} is not label=value (e.g. version=r1)")
        })?;
        labels.push((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()));
    }
    Ok(ScrapeTarget { url, labels })
}

/// The answer, or the query's own error (a usage or I/O problem is the outer error).
async fn answer(args: &QueryArgs) -> anyhow::Result<Result<Value, MetricsError>> {
    let range = args.range.as_deref().map(parse_range).transpose()?;
    let at = args.at.as_deref().map(parse_time).transpose()?;
    if let Some(url) = &args.prometheus {
        let token = match &args.token_env {
            Some(var) => {
                Some(Secret::new(std::env::var(var).with_context(|| {
                    format!("--token-env {var}: the variable is not set")
                })?))
            }
            None => None,
        };
        let source = PrometheusSource::new(PrometheusConfig {
            url: url.clone(),
            token,
            timeout: Duration::from_secs(60),
        })?;
        return Ok(match range {
            Some(r) => {
                let step = Duration::from_millis(u64::try_from(r.step).unwrap_or(1));
                source.query_range(&args.expr, r.start, r.end, step).await
            }
            None => {
                let now = canary_providers::scrape::now_millis();
                source.query(&args.expr, at.unwrap_or(now)).await
            }
        });
    }
    let store = if let Some(path) = &args.data {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Store::from_openmetrics(&text).with_context(|| format!("{}", path.display()))?
    } else if !args.scrape.is_empty() {
        scrape(args).await?
    } else {
        bail!("say where the data comes from: --data FILE, --scrape URL or --prometheus URL");
    };
    let engine = Engine::new(EvalOptions {
        lookback_delta: duration_millis(&args.lookback_delta).context("--lookback-delta")?,
        ..EvalOptions::default()
    });
    let result = match range {
        Some(r) => engine.range(&store, &args.expr, r.start, r.end, r.step),
        None => {
            let Some(at) = at.or_else(|| store.max_time()) else {
                bail!("there is no sample to evaluate at: the data is empty (or pass --at)");
            };
            engine.instant(&store, &args.expr, at)
        }
    };
    Ok(result.map_err(|e| match e {
        canary_promql::EvalError::Execution(message) => MetricsError::Execution { message },
        other => MetricsError::BadQuery {
            message: other.to_string(),
        },
    }))
}

/// Scrapes the --scrape targets every --interval for --for, and returns the store. No
/// staleness markers are written at the end: the last scrape stays the newest sample.
async fn scrape(args: &QueryArgs) -> anyhow::Result<Store> {
    let targets = args
        .scrape
        .iter()
        .map(|s| parse_target(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let interval = canary_core::duration::parse(&args.interval).context("--interval")?;
    let scrape_for = canary_core::duration::parse(&args.scrape_for).context("--for")?;
    let store = Arc::new(RwLock::new(Store::new()));
    let mut scraper = Scraper::new(
        ScrapeConfig {
            targets,
            interval,
            timeout: interval.max(Duration::from_millis(100)),
            retention: None,
        },
        store.clone(),
    )?;
    let deadline = tokio::time::Instant::now() + scrape_for;
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        for report in scraper.scrape_once().await {
            if let Some(error) = report.error {
                tracing::warn!(url = %report.url, %error, "scrape failed");
            }
        }
        if tokio::time::Instant::now() + interval > deadline {
            break;
        }
    }
    drop(scraper);
    let lock = Arc::try_unwrap(store).map_err(|_| anyhow::anyhow!("the store is still shared"))?;
    Ok(lock.into_inner().unwrap_or_else(|p| p.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: QueryArgs,
    }

    const HISTORY: &str = "# TYPE x gauge\nx{version=\"r1\"} 1 1700000000\nx{version=\"r1\"} 3 1700000030.5\nx{version=\"r0.5\"} 7 1700000010\n# EOF\n";

    fn args(extra: &[&str]) -> QueryArgs {
        Cli::parse_from(std::iter::once("query").chain(extra.iter().copied())).args
    }

    fn history_file() -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), HISTORY).unwrap();
        f
    }

    fn json(args: &QueryArgs) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        api_response_json(&rt.block_on(answer(args)).unwrap().unwrap())
    }

    #[test]
    fn data_files_answer_as_prometheus_would() {
        let f = history_file();
        let path = f.path().to_str().unwrap();
        // Default time: the newest sample.
        assert_eq!(
            json(&args(&["--data", path, "sum(x)"])),
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000030.500,"10"]}]}}"#
        );
        assert_eq!(
            json(&args(&["--data", path, "--at", "1700000005", "x"])),
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"x","version":"r1"},"value":[1700000005,"1"]}]}}"#
        );
        assert_eq!(
            json(&args(&[
                "--data",
                path,
                "--range",
                "1700000000,1700000030,15s",
                r#"x{version="r1"}"#
            ])),
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"x","version":"r1"},"values":[[1700000000,"1"],[1700000015,"1"],[1700000030,"1"]]}]}}"#
        );
    }

    #[test]
    fn the_same_file_through_prometheus_gives_the_same_bytes() {
        let f = history_file();
        let path = f.path().to_str().unwrap();
        let prom = canary_testkit::Prometheus::with_history(HISTORY);
        for query in ["sum(x)", "x", "rate(x[1m])", "vector(time())"] {
            for at in ["1700000020", "1700000031.25"] {
                let ours = json(&args(&["--data", path, "--at", at, query]));
                let theirs = json(&args(&["--prometheus", &prom.url(), "--at", at, query]));
                assert_eq!(ours, theirs, "{query} at {at}");
            }
        }
    }

    #[test]
    fn bad_input_is_explained() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let f = history_file();
        let path = f.path().to_str().unwrap();
        let err = rt
            .block_on(answer(&args(&["--data", path, "x("])))
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind(), "bad_query");
        let bad = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(bad.path(), "x 1 1\nx{ 2\n# EOF\n").unwrap();
        let err = rt
            .block_on(answer(&args(&[
                "--data",
                bad.path().to_str().unwrap(),
                "x",
            ])))
            .unwrap_err();
        assert!(format!("{err:#}").contains("line 2, column 3"), "{err:#}");
        assert!(parse_range("1,2").is_err());
        assert!(parse_target("http://x/metrics,version").is_err());
        assert_eq!(
            parse_target("http://x/metrics,version=r1,arm=canary")
                .unwrap()
                .labels,
            vec![
                ("version".into(), "r1".into()),
                ("arm".into(), "canary".into())
            ]
        );
        assert_eq!(
            parse_range("1700000000,1700000060,1.5").unwrap(),
            Range {
                start: 1_700_000_000_000,
                end: 1_700_000_060_000,
                step: 1500
            }
        );
    }
}
