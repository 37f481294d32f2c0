//! The in-memory sample store: series keyed by label set, samples appended in time order into
//! compressed chunks, a retention window, and Prometheus' staleness markers.
//!
//! No I/O and no clock: whoever appends says what time it is. Every sample is kept in Gorilla
//! chunks; the newest few minutes of each series are also kept uncompressed (the hot window),
//! so guardrail queries decode nothing. Memory per sample, both included, is reported by
//! [`Store::stats`] (measured in `docs/benchmarks/promql.md`).

pub mod chunk;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use promql_parser::label::{MatchOp, Matcher};

use crate::exposition;
use crate::value::{Labels, Millis, Point, Series};
use chunk::Chunk;

/// The bit pattern Prometheus writes as a staleness marker: a NaN distinct from the NaN that
/// arithmetic produces (`0x7ff8000000000001`).
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// A staleness marker value.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// Whether `v` is a staleness marker (not just any NaN).
pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// Identifies a series while it exists in one store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesId(u32);

/// Why a sample was not appended (Prometheus rejects the same cases).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AppendError {
    #[error(
        "out-of-order sample for {series} at {t} ms: the series already has a sample at {last} ms"
    )]
    OutOfOrder {
        series: String,
        t: Millis,
        last: Millis,
    },
    #[error("duplicate sample for {series} at {t} ms with a different value")]
    Duplicate { series: String, t: Millis },
    #[error("series {0} has no samples")]
    NoSamples(String),
}

/// Why an OpenMetrics history file could not be loaded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HistoryError {
    #[error("{0}")]
    Parse(#[from] exposition::ParseError),
    #[error("sample of {series} has no timestamp: history files need one on every sample")]
    MissingTimestamp { series: String },
    /// Two values of one series at one millisecond. Prometheus' own loader (`promtool tsdb
    /// create-blocks-from openmetrics`, 2.42) silently keeps the first when both fall into the
    /// same 5000-sample append batch and fails the whole file ("duplicate sample for
    /// timestamp", no line) when they do not: there is no one answer to reproduce, so the file
    /// is refused with both lines named.
    #[error(
        "line {line}: {series} at {t} ms has value {value}, but line {first_line} gave it {first_value} \
         at the same time: a series has one value per timestamp, remove one of the two samples"
    )]
    ConflictingSamples {
        series: String,
        t: Millis,
        line: usize,
        value: String,
        first_line: usize,
        first_value: String,
    },
    #[error(transparent)]
    Append(#[from] AppendError),
}

/// Counts and memory of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    pub series: usize,
    pub samples: u64,
    pub chunks: usize,
    /// Compressed sample bytes (chunk buffers).
    pub chunk_bytes: usize,
    /// The uncompressed hot window's buffers.
    pub hot_bytes: usize,
    /// Everything the store owns: chunks, series records, labels and indexes (estimated from
    /// sizes and capacities).
    pub total_bytes: usize,
}

impl StoreStats {
    /// Total bytes per stored sample.
    pub fn bytes_per_sample(&self) -> f64 {
        if self.samples == 0 {
            0.0
        } else {
            self.total_bytes as f64 / self.samples as f64
        }
    }
}

/// How much recent history each series also keeps uncompressed, by default: the runbook's
/// 5-minute windows plus a margin. Queries inside it decode nothing.
pub const DEFAULT_HOT_WINDOW: Millis = 6 * 60_000;

#[derive(Debug)]
struct MemSeries {
    labels: Arc<Labels>,
    sealed: Vec<Chunk>,
    head: Chunk,
    last_t: Millis,
    last_v: u64,
    samples: u64,
    /// The newest samples (at least the hot window's worth), uncompressed.
    hot: VecDeque<Point>,
    /// Whether `hot` still holds every sample the series has.
    hot_complete: bool,
}

impl MemSeries {
    fn chunks(&self) -> impl DoubleEndedIterator<Item = &Chunk> {
        self.sealed
            .iter()
            .chain(std::iter::once(&self.head).filter(|c| !c.is_empty()))
    }

    /// The hot samples in `[mint, maxt]`, if the hot window covers all of them.
    fn hot_range(&self, mint: Millis, maxt: Millis) -> Option<impl Iterator<Item = Point> + '_> {
        let first = self.hot.front()?;
        if !(self.hot_complete || first.t <= mint) {
            return None;
        }
        let (a, b) = self.hot.as_slices();
        let slice = |s: &'_ [Point]| -> std::ops::Range<usize> {
            s.partition_point(|p| p.t < mint)..s.partition_point(|p| p.t <= maxt)
        };
        let (ra, rb) = (slice(a), slice(b));
        Some(
            a[ra.start..ra.end.max(ra.start)]
                .iter()
                .chain(&b[rb.start..rb.end.max(rb.start)])
                .copied(),
        )
    }

    fn points(&self, mint: Millis, maxt: Millis, out: &mut Vec<Point>) {
        if let Some(hot) = self.hot_range(mint, maxt) {
            out.extend(hot);
            return;
        }
        for c in self.chunks() {
            if c.max_t() < mint || c.min_t() > maxt {
                continue;
            }
            out.reserve(usize::from(c.len()));
            for p in c.iter() {
                if p.t > maxt {
                    break;
                }
                if p.t >= mint {
                    out.push(p);
                }
            }
        }
    }

    fn latest(&self, mint: Millis, maxt: Millis) -> Option<Point> {
        if let Some(first) = self.hot.front()
            && (self.hot_complete || first.t <= maxt)
        {
            let n = self.hot.partition_point(|p| p.t <= maxt);
            let p = *self.hot.get(n.checked_sub(1)?)?;
            return (p.t >= mint).then_some(p);
        }
        let chunk = self.chunks().rev().find(|c| c.min_t() <= maxt)?;
        let p = chunk.iter().take_while(|p| p.t <= maxt).last()?;
        (p.t >= mint).then_some(p)
    }
}

/// Series and their samples.
#[derive(Debug)]
pub struct Store {
    series: Vec<Option<MemSeries>>,
    free: Vec<u32>,
    by_labels: HashMap<Arc<Labels>, u32>,
    by_name: HashMap<String, Vec<u32>>,
    samples: u64,
    hot_window: Millis,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            series: Vec::new(),
            free: Vec::new(),
            by_labels: HashMap::new(),
            by_name: HashMap::new(),
            samples: 0,
            hot_window: DEFAULT_HOT_WINDOW,
        }
    }
}

impl Store {
    /// An empty store keeping the last [`DEFAULT_HOT_WINDOW`] of every series uncompressed.
    pub fn new() -> Self {
        Store::default()
    }

    /// An empty store keeping `hot_window` of every series uncompressed besides the
    /// compressed chunks (0: none). Queries whose windows fall inside it decode nothing; it
    /// costs 16 bytes per sample inside the window.
    pub fn with_hot_window(hot_window: Millis) -> Self {
        Store {
            hot_window: hot_window.max(0),
            ..Store::default()
        }
    }

    /// Loads an OpenMetrics history file (every sample timestamped, as
    /// `promtool tsdb create-blocks-from openmetrics` reads it). Samples of a series may appear in
    /// any order in the file. A sample repeated with the same value is kept once; two different
    /// values of a series at one timestamp are [`HistoryError::ConflictingSamples`], naming both
    /// lines.
    pub fn from_openmetrics(text: &str) -> Result<Store, HistoryError> {
        let (exposition, lines) = exposition::openmetrics::parse_numbered(text)?;
        // Per series: (time, line, value).
        let mut by_series: BTreeMap<Labels, Vec<(Millis, usize, f64)>> = BTreeMap::new();
        for (s, line) in exposition.samples.into_iter().zip(lines) {
            let t = s.timestamp.ok_or_else(|| HistoryError::MissingTimestamp {
                series: s.labels.to_string(),
            })?;
            by_series
                .entry(s.labels)
                .or_default()
                .push((t, line, s.value));
        }
        let mut store = Store::new();
        for (labels, mut points) in by_series {
            // Stable: at one timestamp, samples stay in file order.
            points.sort_by_key(|&(t, _, _)| t);
            for pair in points.windows(2) {
                let ((t0, line0, v0), (t1, line1, v1)) = (pair[0], pair[1]);
                if t0 == t1 && v0.to_bits() != v1.to_bits() {
                    return Err(HistoryError::ConflictingSamples {
                        series: labels.to_string(),
                        t: t1,
                        line: line1,
                        value: crate::value::format_value(v1),
                        first_line: line0,
                        first_value: crate::value::format_value(v0),
                    });
                }
            }
            let id = store.series_id(&labels);
            for (t, _, v) in points {
                store.append_to(id, t, v)?;
            }
        }
        Ok(store)
    }

    /// The id of the series with `labels`, creating it (empty) if needed.
    pub fn series_id(&mut self, labels: &Labels) -> SeriesId {
        if let Some(&id) = self.by_labels.get(labels) {
            return SeriesId(id);
        }
        let labels = Arc::new(labels.clone());
        let record = MemSeries {
            labels: labels.clone(),
            sealed: Vec::new(),
            head: Chunk::default(),
            last_t: Millis::MIN,
            last_v: 0,
            samples: 0,
            hot: VecDeque::new(),
            hot_complete: true,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.series[id as usize] = Some(record);
                id
            }
            None => {
                self.series.push(Some(record));
                (self.series.len() - 1) as u32
            }
        };
        if let Some(name) = labels.get("__name__") {
            // Postings stay ordered by labels, so selections need no sorting.
            let series = &self.series;
            let ids = self.by_name.entry(name.to_owned()).or_default();
            let at = ids.partition_point(|&x| {
                series[x as usize]
                    .as_ref()
                    .is_some_and(|s| *s.labels < *labels)
            });
            ids.insert(at, id);
        }
        self.by_labels.insert(labels, id);
        SeriesId(id)
    }

    /// The id of an existing series.
    pub fn find(&self, labels: &Labels) -> Option<SeriesId> {
        self.by_labels.get(labels).map(|&id| SeriesId(id))
    }

    /// The labels of a series.
    pub fn labels(&self, id: SeriesId) -> Option<&Labels> {
        self.get(id).map(|s| &*s.labels)
    }

    fn get(&self, id: SeriesId) -> Option<&MemSeries> {
        self.series.get(id.0 as usize).and_then(Option::as_ref)
    }

    /// Appends a sample to the series with `labels`, creating it if needed.
    pub fn append(&mut self, labels: &Labels, t: Millis, v: f64) -> Result<SeriesId, AppendError> {
        let id = self.series_id(labels);
        self.append_to(id, t, v)?;
        Ok(id)
    }

    /// Appends a sample. A sample identical to the last one (same time, same value bits) is
    /// accepted and ignored; an older sample, or another value at the same time, is rejected.
    pub fn append_to(&mut self, id: SeriesId, t: Millis, v: f64) -> Result<(), AppendError> {
        let Some(s) = self.series.get_mut(id.0 as usize).and_then(Option::as_mut) else {
            return Err(AppendError::NoSamples(format!("#{}", id.0)));
        };
        if s.samples > 0 {
            if t == s.last_t {
                if v.to_bits() == s.last_v {
                    return Ok(());
                }
                return Err(AppendError::Duplicate {
                    series: s.labels.to_string(),
                    t,
                });
            }
            if t < s.last_t {
                return Err(AppendError::OutOfOrder {
                    series: s.labels.to_string(),
                    t,
                    last: s.last_t,
                });
            }
        }
        if s.head.is_full() {
            let mut full = std::mem::take(&mut s.head);
            full.seal();
            s.sealed.push(full);
        }
        s.head.push(t, v);
        if self.hot_window > 0 {
            s.hot.push_back(Point { t, v });
            let oldest = t.saturating_sub(self.hot_window);
            while s.hot.front().is_some_and(|p| p.t < oldest) {
                s.hot.pop_front();
                s.hot_complete = false;
            }
        } else {
            s.hot_complete = false;
        }
        s.last_t = t;
        s.last_v = v.to_bits();
        s.samples += 1;
        self.samples += 1;
        Ok(())
    }

    /// Writes a staleness marker at `t` unless the series is already stale or has no samples:
    /// what Prometheus does when a target stops exposing a series or a scrape fails.
    pub fn mark_stale(&mut self, id: SeriesId, t: Millis) -> Result<(), AppendError> {
        match self.get(id) {
            Some(s) if s.samples > 0 && s.last_v != STALE_NAN_BITS => {
                self.append_to(id, t, stale_nan())
            }
            _ => Ok(()),
        }
    }

    /// The time of a series' newest sample.
    pub fn last_timestamp(&self, id: SeriesId) -> Option<Millis> {
        self.get(id).filter(|s| s.samples > 0).map(|s| s.last_t)
    }

    /// The newest sample time in the whole store.
    pub fn max_time(&self) -> Option<Millis> {
        self.series
            .iter()
            .flatten()
            .filter(|s| s.samples > 0)
            .map(|s| s.last_t)
            .max()
    }

    /// Drops every chunk whose samples are all older than `min_t`, and series left empty. The
    /// retention window: call with `now - retention` after appending.
    pub fn drop_before(&mut self, min_t: Millis) {
        let mut emptied = Vec::new();
        for (i, slot) in self.series.iter_mut().enumerate() {
            let Some(s) = slot else { continue };
            let before: u64 = s.chunks().map(|c| u64::from(c.len())).sum();
            s.sealed.retain(|c| c.max_t() >= min_t);
            while s.hot.front().is_some_and(|p| p.t < min_t) {
                s.hot.pop_front();
                s.hot_complete = false;
            }
            if !s.head.is_empty() && s.head.max_t() < min_t {
                s.head = Chunk::default();
            }
            let after: u64 = s.chunks().map(|c| u64::from(c.len())).sum();
            self.samples -= before - after;
            if after == 0 && s.samples > 0 {
                emptied.push(i as u32);
            }
        }
        for id in emptied {
            if let Some(s) = self.series[id as usize].take() {
                self.by_labels.remove(&s.labels);
                if let Some(name) = s.labels.get("__name__")
                    && let Some(ids) = self.by_name.get_mut(name)
                {
                    ids.retain(|&x| x != id);
                    if ids.is_empty() {
                        self.by_name.remove(name);
                    }
                }
                self.free.push(id);
            }
        }
    }

    /// Ids of the series whose labels satisfy every matcher.
    fn matching(&self, matchers: &[Matcher]) -> Vec<u32> {
        let name_eq = matchers
            .iter()
            .find(|m| m.name == "__name__" && matches!(m.op, MatchOp::Equal));
        let candidates: Box<dyn Iterator<Item = u32> + '_> = match name_eq {
            Some(m) => Box::new(
                self.by_name
                    .get(&m.value)
                    .into_iter()
                    .flat_map(|ids| ids.iter().copied()),
            ),
            None => Box::new(
                self.series
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.is_some())
                    .map(|(i, _)| i as u32),
            ),
        };
        let sorted = name_eq.is_some();
        let mut ids: Vec<u32> = candidates
            .filter(|&id| {
                self.series[id as usize].as_ref().is_some_and(|s| {
                    matchers
                        .iter()
                        .all(|m| m.is_match(s.labels.get(&m.name).unwrap_or("")))
                })
            })
            .collect();
        if sorted {
            return ids;
        }
        ids.sort_by(|a, b| {
            let la = self.series[*a as usize].as_ref().map(|s| &s.labels);
            let lb = self.series[*b as usize].as_ref().map(|s| &s.labels);
            la.cmp(&lb)
        });
        ids
    }

    /// Series matching every matcher, with their samples in `[mint, maxt]` (staleness markers
    /// included), ordered by labels. Series without samples in the range are left out.
    pub fn select(&self, matchers: &[Matcher], mint: Millis, maxt: Millis) -> Vec<Series> {
        let mut out = Vec::new();
        for id in self.matching(matchers) {
            let Some(s) = self.series[id as usize].as_ref() else {
                continue;
            };
            let mut points = Vec::new();
            s.points(mint, maxt, &mut points);
            if !points.is_empty() {
                out.push(Series {
                    metric: (*s.labels).clone(),
                    points,
                });
            }
        }
        out
    }

    /// Series matching every matcher, each with its newest sample in `[mint, maxt]` (which may be
    /// a staleness marker), ordered by labels.
    pub fn select_latest(
        &self,
        matchers: &[Matcher],
        mint: Millis,
        maxt: Millis,
    ) -> Vec<(Labels, Point)> {
        self.matching(matchers)
            .into_iter()
            .filter_map(|id| {
                let s = self.series[id as usize].as_ref()?;
                let p = s.latest(mint, maxt)?;
                Some(((*s.labels).clone(), p))
            })
            .collect()
    }

    /// Counts and memory.
    pub fn stats(&self) -> StoreStats {
        let mut st = StoreStats {
            samples: self.samples,
            ..StoreStats::default()
        };
        let label_bytes = |l: &Labels| -> usize {
            std::mem::size_of::<Labels>()
                + l.len() * std::mem::size_of::<crate::value::Label>()
                + l.iter()
                    .map(|x| x.name.capacity() + x.value.capacity())
                    .sum::<usize>()
        };
        for s in self.series.iter().flatten() {
            st.series += 1;
            for c in s.chunks() {
                st.chunks += 1;
                st.chunk_bytes += c.heap_bytes();
            }
            st.hot_bytes += s.hot.capacity() * std::mem::size_of::<Point>();
            st.total_bytes += std::mem::size_of::<Chunk>() * (s.sealed.capacity() + 1)
                + label_bytes(&s.labels)
                + 2 * std::mem::size_of::<usize>(); // Arc counts
        }
        st.total_bytes += st.chunk_bytes + st.hot_bytes;
        st.total_bytes += self.series.capacity() * std::mem::size_of::<Option<MemSeries>>();
        // hashbrown: one control byte plus the entry per bucket.
        st.total_bytes +=
            self.by_labels.capacity() * (1 + std::mem::size_of::<(Arc<Labels>, u32)>());
        st.total_bytes += self
            .by_name
            .iter()
            .map(|(k, v)| {
                k.capacity() + v.capacity() * 4 + 1 + std::mem::size_of::<(String, Vec<u32>)>()
            })
            .sum::<usize>();
        st
    }

    /// The number of live series.
    pub fn series_count(&self) -> usize {
        self.by_labels.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    fn eq(name: &str, value: &str) -> Matcher {
        Matcher::new(MatchOp::Equal, name, value)
    }

    #[test]
    fn appends_in_order_and_selects_ranges() {
        let mut s = Store::new();
        let a = labels(&[("__name__", "x"), ("arm", "canary")]);
        let b = labels(&[("__name__", "x"), ("arm", "baseline")]);
        for i in 0..300 {
            s.append(&a, i * 1000, i as f64).unwrap();
            s.append(&b, i * 1000 + 7, -(i as f64)).unwrap();
        }
        assert_eq!(s.stats().samples, 600);
        let sel = s.select(&[eq("__name__", "x")], 10_000, 12_000);
        // Ordered by labels: baseline before canary.
        assert_eq!(sel[0].metric.get("arm"), Some("baseline"));
        assert_eq!(sel[0].points.len(), 2);
        assert_eq!(
            sel[1].points.iter().map(|p| p.t).collect::<Vec<_>>(),
            vec![10_000, 11_000, 12_000]
        );
        let latest = s.select_latest(&[eq("arm", "canary")], 0, 150_500);
        assert_eq!(
            latest[0].1,
            Point {
                t: 150_000,
                v: 150.0
            }
        );
        assert!(
            s.select_latest(&[eq("arm", "canary")], 400_000, 500_000)
                .is_empty()
        );
    }

    #[test]
    fn hot_and_compressed_paths_agree() {
        let (mut hot, mut cold) = (Store::with_hot_window(30_000), Store::with_hot_window(0));
        let a = labels(&[("__name__", "x")]);
        for i in 0..500i64 {
            let t = i * 1000 + (i * 7) % 13;
            hot.append(&a, t, (i % 17) as f64).unwrap();
            cold.append(&a, t, (i % 17) as f64).unwrap();
        }
        for (mint, maxt) in [
            (0, 600_000),
            (470_000, 499_000),
            (480_500, 481_500),
            (100_000, 498_000),
            (-5, 3),
        ] {
            let m = [eq("__name__", "x")];
            assert_eq!(
                hot.select(&m, mint, maxt),
                cold.select(&m, mint, maxt),
                "[{mint}, {maxt}]"
            );
            assert_eq!(
                hot.select_latest(&m, mint, maxt),
                cold.select_latest(&m, mint, maxt)
            );
        }
        assert!(hot.stats().hot_bytes > 0 && cold.stats().hot_bytes == 0);
    }

    #[test]
    fn rejects_what_prometheus_rejects() {
        let mut s = Store::new();
        let a = labels(&[("__name__", "x")]);
        s.append(&a, 10, 1.0).unwrap();
        assert!(
            s.append(&a, 10, 1.0).is_ok(),
            "an identical sample is ignored"
        );
        assert!(matches!(
            s.append(&a, 10, 2.0),
            Err(AppendError::Duplicate { .. })
        ));
        assert!(matches!(
            s.append(&a, 5, 2.0),
            Err(AppendError::OutOfOrder { .. })
        ));
        assert_eq!(s.stats().samples, 1);
    }

    #[test]
    fn staleness_markers_are_written_once() {
        let mut s = Store::new();
        let id = s.append(&labels(&[("__name__", "x")]), 10, 1.0).unwrap();
        s.mark_stale(id, 20).unwrap();
        s.mark_stale(id, 30).unwrap();
        let pts = &s.select(&[eq("__name__", "x")], 0, 100)[0].points;
        assert_eq!(pts.len(), 2);
        assert!(is_stale(pts[1].v));
        assert!(!is_stale(f64::NAN));
    }

    #[test]
    fn retention_drops_old_chunks_and_empty_series() {
        let mut s = Store::new();
        let old = labels(&[("__name__", "old")]);
        let live = labels(&[("__name__", "live")]);
        for i in 0..1000 {
            s.append(&live, i * 1000, 1.0).unwrap();
        }
        s.append(&old, 0, 1.0).unwrap();
        s.drop_before(500_000);
        assert!(s.find(&old).is_none());
        assert_eq!(s.series_count(), 1);
        let left = s.stats().samples;
        assert!((500..=620).contains(&left), "{left} samples kept");
        assert!(s.select(&[eq("__name__", "old")], 0, i64::MAX).is_empty());
        // The freed id is reused without confusing the indexes.
        s.append(&old, 2_000_000, 3.0).unwrap();
        assert_eq!(
            s.select(&[eq("__name__", "old")], 0, i64::MAX)[0].points[0].v,
            3.0
        );
    }

    #[test]
    fn history_files_load_with_timestamps() {
        let om = "# TYPE x gauge\nx{a=\"1\"} 1 10\nx{a=\"1\"} 3 30\nx{a=\"1\"} 2 20\n# EOF\n";
        let s = Store::from_openmetrics(om).unwrap();
        let pts = &s.select(&[eq("__name__", "x")], 0, i64::MAX)[0].points;
        assert_eq!(
            pts.iter().map(|p| p.t).collect::<Vec<_>>(),
            vec![10_000, 20_000, 30_000]
        );
        assert!(matches!(
            Store::from_openmetrics("x 1\n# EOF\n"),
            Err(HistoryError::MissingTimestamp { .. })
        ));
        let err = Store::from_openmetrics("x 1 1\nx{ 2\n# EOF\n").unwrap_err();
        assert!(err.to_string().starts_with("line 2, column 3"), "{err}");
    }

    #[test]
    fn history_with_two_values_at_one_millisecond_names_both_lines() {
        // Line 6 is later in the file than 30 s, and 20.0001 s is the millisecond of 20 s.
        let om = "# TYPE x gauge\nx{a=\"1\"} 1 10\nx{a=\"1\"} 2 20\nx{a=\"1\"} 3 30\n\
                  x{a=\"2\"} 5 20\nx{a=\"1\"} 2.5 20.0001\nx{a=\"1\"} 2.5 20\n# EOF\n";
        let err = Store::from_openmetrics(om).unwrap_err();
        assert_eq!(
            err,
            HistoryError::ConflictingSamples {
                series: r#"x{a="1"}"#.into(),
                t: 20_000,
                line: 6,
                value: "2.5".into(),
                first_line: 3,
                first_value: "2".into(),
            }
        );
        assert!(
            err.to_string().starts_with(
                r#"line 6: x{a="1"} at 20000 ms has value 2.5, but line 3 gave it 2 at the same time"#
            ),
            "{err}"
        );
        // The same value twice is one sample, as in Prometheus; so is a repeated NaN.
        let om = "# TYPE x gauge\nx 1 10\nx 1 10\ny NaN 10\ny NaN 10\n# EOF\n";
        let s = Store::from_openmetrics(om).unwrap();
        assert_eq!(s.stats().samples, 2);
    }
}
