//! `canary-promql`: exposition parsing, the sample store and PromQL evaluation.
//!
//! Pure: no I/O, no wall clock. Callers pass samples in and an evaluation time.
//!
//! - [`exposition`]: Prometheus text 0.0.4 and OpenMetrics 1.0 parsers.
//! - [`store`]: the compressed in-memory sample store with retention and staleness markers.
//! - [`ingest`]: one scrape into the store as Prometheus' scrape loop writes it.
//! - [`eval`]: the PromQL evaluator (Prometheus 2.42 semantics).
//! - [`rewrite`]: scoping a query to an arm, compressing its time windows.
//! - [`analyze`]: what a query reads — selectors, metric names, how far back it reaches.
//! - [`value`]: results in the Prometheus HTTP API's data model.
#![forbid(unsafe_code)]

pub mod analyze;
pub mod eval;
pub mod exposition;
pub mod ingest;
pub mod rewrite;
pub mod store;
pub mod value;
mod walk;

pub use eval::{Engine, EvalError, EvalOptions, SeriesSource};
pub use exposition::{ExposedSample, Exposition, Format, ParseError};
pub use ingest::{IngestReport, ScrapeOutcome, TargetSeries};
pub use rewrite::{ArmSelector, RewriteError};
pub use store::{Store, StoreStats};
pub use value::{Labels, Millis, Point, Sample, Series, Value};
