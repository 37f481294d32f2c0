//! One scrape into the store, as Prometheus' scrape loop writes it: target labels attached
//! (`honor_labels: false`: a conflicting exposed label is kept as `exported_<name>`), the report
//! series (`up`, `scrape_duration_seconds`, `scrape_samples_scraped`,
//! `scrape_samples_post_metric_relabeling`, `scrape_series_added`), and staleness markers for
//! series that vanished since the previous scrape, for every series when a scrape fails, and for
//! everything when the target goes away.
//!
//! Pure: the caller fetched the body and says when the scrape started.

use std::collections::HashSet;
use std::time::Duration;

use crate::exposition::Exposition;
use crate::store::Store;
use crate::value::{Labels, Millis};

/// The result of fetching and parsing one target's `/metrics`.
#[derive(Debug)]
pub enum ScrapeOutcome {
    Success {
        exposition: Exposition,
        duration: Duration,
    },
    /// Unreachable, timed out, a non-2xx status or an unparsable body.
    Failure { duration: Duration },
}

/// What one ingest did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IngestReport {
    /// Samples the target exposed.
    pub scraped: usize,
    /// Samples written (excluding report series and staleness markers).
    pub appended: usize,
    /// Series the store had not seen from this target in its previous scrape.
    pub series_added: usize,
    /// Samples the store refused (out of order, duplicate timestamp).
    pub rejected: usize,
    /// Staleness markers written.
    pub stale_marked: usize,
}

/// A target's identity (its labels) and the series its previous scrape wrote, so the next one
/// can mark what vanished.
#[derive(Debug, Clone)]
pub struct TargetSeries {
    labels: Labels,
    previous: HashSet<Labels>,
    last_t: Option<Millis>,
}

const REPORT_SERIES: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

impl TargetSeries {
    /// A target with these labels (typically `job`, `instance` and the arm's labels).
    pub fn new(labels: Labels) -> Self {
        TargetSeries {
            labels,
            previous: HashSet::new(),
            last_t: None,
        }
    }

    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    /// Writes one scrape that started at `t`. A scrape never gets a time at or before the
    /// target's previous one (two scrapes within a millisecond, or a clock stepping back): it
    /// is moved 1 ms after it, so its samples and markers are not refused as duplicates.
    pub fn ingest(&mut self, store: &mut Store, outcome: ScrapeOutcome, t: Millis) -> IngestReport {
        let t = match self.last_t {
            Some(last) if t <= last => last + 1,
            _ => t,
        };
        self.last_t = Some(t);
        let mut report = IngestReport::default();
        let mut current = HashSet::new();
        let (up, duration) = match outcome {
            ScrapeOutcome::Success {
                exposition,
                duration,
            } => {
                report.scraped = exposition.samples.len();
                for sample in exposition.samples {
                    let labels = attach_target_labels(&sample.labels, &self.labels);
                    let at = sample.timestamp.unwrap_or(t);
                    match store.append(&labels, at, sample.value) {
                        Ok(_) => report.appended += 1,
                        Err(_) => {
                            report.rejected += 1;
                            continue;
                        }
                    }
                    // Samples with their own timestamp get no staleness handling (Prometheus).
                    if sample.timestamp.is_none() {
                        if !self.previous.contains(&labels) {
                            report.series_added += 1;
                        }
                        current.insert(labels);
                    }
                }
                (1.0, duration)
            }
            ScrapeOutcome::Failure { duration } => (0.0, duration),
        };
        for gone in self.previous.difference(&current) {
            if let Some(id) = store.find(gone)
                && store.mark_stale(id, t).is_ok()
            {
                report.stale_marked += 1;
            }
        }
        self.previous = current;
        let values = [
            up,
            duration.as_secs_f64(),
            report.scraped as f64,
            report.scraped as f64,
            report.series_added as f64,
        ];
        for (name, v) in REPORT_SERIES.iter().zip(values) {
            let mut labels = self.labels.clone();
            labels.set("__name__".into(), (*name).into());
            // A report sample can only be refused if the caller's clock went backwards; the
            // next scrape writes it again.
            let _ = store.append(&labels, t, v);
        }
        report
    }

    /// Marks every series of this target stale at `t`, report series included: the target was
    /// removed or the scraper is shutting down.
    pub fn stop(&mut self, store: &mut Store, t: Millis) -> usize {
        let t = match self.last_t {
            Some(last) if t <= last => last + 1,
            _ => t,
        };
        let mut marked = 0;
        let report = REPORT_SERIES.iter().map(|name| {
            let mut labels = self.labels.clone();
            labels.set("__name__".into(), (*name).into());
            labels
        });
        let all: Vec<Labels> = self.previous.drain().chain(report).collect();
        for labels in all {
            if let Some(id) = store.find(&labels)
                && store.mark_stale(id, t).is_ok()
            {
                marked += 1;
            }
        }
        marked
    }
}

/// The stored label set of an exposed series: the target's labels win; an exposed label they
/// override is kept as `exported_<name>` (prefixed again until the name is free), shorter names
/// first — Prometheus with `honor_labels: false`.
pub fn attach_target_labels(exposed: &Labels, target: &Labels) -> Labels {
    let mut out = exposed.clone();
    let mut conflicts: Vec<(String, String)> = Vec::new();
    for l in target.iter() {
        if let Some(v) = exposed.get(&l.name) {
            conflicts.push((l.name.clone(), v.to_owned()));
        }
        out.set(l.name.clone(), l.value.clone());
    }
    conflicts.sort_by_key(|(name, _)| name.len());
    for (name, value) in conflicts {
        let mut new_name = name;
        loop {
            new_name = format!("exported_{new_name}");
            if out.get(&new_name).is_none() {
                out.set(new_name, value);
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::{Format, parse};
    use crate::store::is_stale;
    use promql_parser::label::{MatchOp, Matcher};

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    fn success(body: &str) -> ScrapeOutcome {
        ScrapeOutcome::Success {
            exposition: parse(body.as_bytes(), Format::Text).unwrap(),
            duration: Duration::from_millis(3),
        }
    }

    fn points(store: &Store, name: &str) -> Vec<(Millis, f64)> {
        store
            .select(
                &[Matcher::new(MatchOp::Equal, "__name__", name)],
                0,
                i64::MAX,
            )
            .into_iter()
            .flat_map(|s| s.points)
            .map(|p| (p.t, p.v))
            .collect()
    }

    #[test]
    fn target_labels_win_and_conflicts_are_exported() {
        let target = labels(&[("job", "relay"), ("version", "r1"), ("instance", "a:1")]);
        let exposed = labels(&[
            ("__name__", "x"),
            ("version", "r0.5"),
            ("exported_version", "old"),
            ("job", "inner"),
        ]);
        let got = attach_target_labels(&exposed, &target);
        assert_eq!(
            got.to_string(),
            r#"x{exported_exported_version="r0.5", exported_job="inner", exported_version="old", instance="a:1", job="relay", version="r1"}"#
        );
    }

    #[test]
    fn vanished_series_and_failed_scrapes_go_stale() {
        let mut store = Store::new();
        let mut target = TargetSeries::new(labels(&[("job", "relay"), ("version", "r1")]));
        let r = target.ingest(&mut store, success("a 1\nb 2\nc 3 500\n"), 1000);
        assert_eq!((r.scraped, r.appended, r.series_added), (3, 3, 2));
        let r = target.ingest(&mut store, success("a 2\n"), 2000);
        assert_eq!((r.series_added, r.stale_marked), (0, 1));
        let b = points(&store, "b");
        assert_eq!(b.len(), 2);
        assert!(is_stale(b[1].1) && b[1].0 == 2000);
        target.ingest(
            &mut store,
            ScrapeOutcome::Failure {
                duration: Duration::from_millis(10),
            },
            3000,
        );
        let a = points(&store, "a");
        assert!(is_stale(a[2].1) && a[2].0 == 3000);
        assert_eq!(
            points(&store, "up"),
            vec![(1000, 1.0), (2000, 1.0), (3000, 0.0)]
        );
        assert_eq!(points(&store, "scrape_samples_scraped")[0], (1000, 3.0));
        assert_eq!(points(&store, "scrape_duration_seconds")[2], (3000, 0.01));
        // Explicitly timestamped samples are never marked stale.
        assert_eq!(points(&store, "c"), vec![(500, 3.0)]);
        let up = store
            .select(
                &[Matcher::new(MatchOp::Equal, "__name__", "up")],
                0,
                i64::MAX,
            )
            .remove(0);
        assert_eq!(up.metric.get("version"), Some("r1"));
        // A second scrape within the same millisecond is moved 1 ms later, not refused.
        let r = target.ingest(&mut store, success("a 4\n"), 3000);
        assert_eq!((r.appended, r.rejected), (1, 0));
        assert_eq!(points(&store, "a").last(), Some(&(3001, 4.0)));
        // A recovered series is new again; stopping marks everything, report series included.
        let r = target.ingest(&mut store, success("a 5\nb 1\n"), 4000);
        assert_eq!(r.series_added, 1);
        assert_eq!(target.stop(&mut store, 5000), 7);
        assert!(is_stale(points(&store, "up").last().unwrap().1));
    }
}
