//! `canary-providers`: everything `canary` talks to — metric sources, traffic routers,
//! Prometheus rules, Alertmanager, Grafana and notifiers.
#![forbid(unsafe_code)]
