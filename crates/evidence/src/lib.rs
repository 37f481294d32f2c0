//! `canary-evidence`: the evidence bundle a canary run leaves behind.
//!
//! A bundle is `<evidence dir>/<run id>/` holding the runbook's artifacts under the runbook's
//! names (DESIGN §9), the engine's input journal, a self-contained HTML report, a manifest with
//! the SHA-256 of every file, and the manifest's Ed25519 signature. [`bundle::Bundle`] writes it
//! as the run goes and seals it after the decision; [`verify::verify`] checks one: complete for
//! its outcome, unchanged, signed, and its decision re-derived by replaying the journal.
//!
//! Invariants: every time is passed in (no clock is read here); whole files are replaced
//! atomically and logs are fsynced per line; the manifest is written last, so a crashed run can
//! never look complete; no secret reaches a file — the signing key arrives as a
//! [`canary_core::Secret`] and only its public half is ever written.
#![forbid(unsafe_code)]

pub mod artifact;
pub mod bundle;
pub mod durable;
pub mod facts;
pub mod journal_file;
pub mod manifest;
pub mod render;
pub mod report;
pub mod signing;
pub mod stamp;
pub mod verify;

pub use artifact::Artifact;
pub use bundle::{Bundle, BundleError, Seal, Sealed, rebuild_journal};
pub use journal_file::{JournalFileError, JournalWriter};
pub use manifest::Manifest;
pub use render::RunContext;
pub use render::snapshot::RawQuery;
pub use render::traffic::{FinalTraffic, TrafficChange, Verification};
pub use signing::{KeyError, KeyPair, Signer, generate_keypair};
pub use verify::{Problem, ProblemKind, SignerTrust, VerifyError, VerifyReport, verify};
