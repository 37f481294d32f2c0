//! `relay-demo`: the reference Relay memory-query service (DESIGN §10), the target canaries run
//! against — a faithful, small implementation of relay's memory API with row-level security,
//! at-rest encryption, ANN search, a reranker and SSE streaming, instrumented under the runbook's
//! metric names, with fault knobs that make it misbehave the way a bad release would.
//!
//! Entry points: [`serve`] (run until a shutdown future resolves), [`spawn`] (run in-process and
//! get the bound address back), [`tokens`] and [`seed_markers`] (what the canary's load burst
//! and isolation probes need), and [`Cli`]/[`cli_main`] (the command line, embeddable).
//!
//! Code map: `api` (routes, validation, the query pipeline and SSE stream), `store` (the
//! `memory_chunks` table and its RLS), `tenancy` (user hashes, sealing), `ann` (per-tenant
//! HNSW), `embedding`, `rerank`, `pool` (bounded store connections), `profile` (how long each
//! stage waits: `realistic` or `fast`), `metrics`, `fault`, `seed`, `auth`, `body` (request
//! bodies, bounded in size and time), `sse` (framing), `server` (connections, start/stop), `cli`.
#![forbid(unsafe_code)]

pub mod ann;
mod api;
pub mod auth;
mod body;
mod cli;
pub mod embedding;
pub mod fault;
pub mod metrics;
mod pool;
mod profile;
pub mod rerank;
pub mod seed;
mod server;
mod sse;
pub mod store;
pub mod tenancy;

pub use api::{DEFAULT_TIMEOUT_MS, DEFAULT_TOP_K, MAX_BODY_BYTES, MAX_TIMEOUT_MS, MAX_TOP_K};
pub use auth::{DEVELOPMENT_JWT_SECRET, mint_token};
pub use cli::{
    Cli, CliError, Command, DATA_SECRET_ENV, DEFAULT_PROFILE, JWT_SECRET_ENV, ServeArgs,
    TokensArgs, cli_main, run as run_cli, shutdown_signal, stdin_closed, token_variable, tokens,
};
pub use fault::{Fault, FaultKind, FaultParseError, RampGrows};
pub use profile::Profile;
pub use seed::{marker_for, seed_markers, seed_queries, seed_users};
pub use server::{
    DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, RunningServer, ServeError, ServeOptions, serve,
    spawn,
};
