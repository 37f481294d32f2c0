//! `canary-providers`: everything `canary` talks to — metric sources, traffic routers,
//! Prometheus rules, Alertmanager, Grafana and notifiers.
#![forbid(unsafe_code)]

pub mod alertmanager;
mod error_text;
pub mod grafana;
pub mod health;
pub mod metrics;
pub mod notify;
pub mod rules;
pub mod scrape;
pub mod traffic;

/// A boxed, sendable future: what the provider traits return so they can be used as trait
/// objects (`Box<dyn MetricSource>`, `Box<dyn TrafficRouter>`).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
