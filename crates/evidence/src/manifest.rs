//! `manifest.json`: what the bundle is (run, service, arms, config hash, times, decision,
//! signer) and the SHA-256 of every other file in it. `manifest.sig` signs its exact bytes.
//!
//! The manifest is the last file written: a bundle without one is incomplete by definition.

use std::fs;
use std::io;
use std::path::Path;

use canary_core::plan::Arms;
use canary_core::{Millis, Reason};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::artifact::{MANIFEST, SIGNATURE};
use crate::durable;

/// Version of the manifest format, bumped on incompatible changes.
pub const MANIFEST_FORMAT: u32 = 1;

/// The manifest of a sealed bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub run_id: String,
    pub service: String,
    pub arms: Arms,
    /// SHA-256 (hex) of the configuration file the run used.
    pub config_sha256: String,
    /// T+0, RFC 3339 UTC, and in milliseconds since the epoch.
    pub started: String,
    pub started_ms: Millis,
    /// When the bundle was sealed (after the final traffic change was verified).
    pub finished: String,
    pub finished_ms: Millis,
    pub decision: ManifestDecision,
    /// Why the run went ahead despite an active cooldown, when it did.
    pub cooldown_override: Option<String>,
    /// When the bundle was rebuilt from the state store's journal after a takeover: how.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuilt: Option<String>,
    pub signer: ManifestSigner,
    /// Every file of the bundle except `manifest.json` and `manifest.sig`, sorted by name.
    pub files: Vec<FileEntry>,
}

/// The decision as the run recorded it; `canary verify` re-derives it from the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestDecision {
    /// `PROMOTE`, `ROLLBACK` or `INCONCLUSIVE`.
    pub verdict: String,
    pub reasons: Vec<Reason>,
    /// The reasons as people read them, in the same order.
    pub reasons_text: Vec<String>,
    /// `engine`, or the operator who approved or aborted.
    pub authorised_by: String,
    pub at: String,
    pub at_ms: Millis,
}

/// Who signed, and how to check it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestSigner {
    /// Always `ed25519`.
    pub algorithm: String,
    /// The public key, 64 lowercase hex characters.
    pub public_key: String,
    /// See [`crate::signing::fingerprint`].
    pub fingerprint: String,
    /// Where the signature is and how it is encoded: `manifest.sig`, hex of the 64-byte
    /// Ed25519 signature over the exact bytes of `manifest.json`.
    pub signature: String,
}

/// One file of the bundle.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub sha256: String,
    pub bytes: u64,
}

impl Manifest {
    /// The exact bytes written to `manifest.json`: pretty JSON and a newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        // A manifest holds strings, integers and reasons whose floats go through
        // `json_float`, so serialisation cannot fail.
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Parses `manifest.json` bytes.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The entry for `name`, if listed.
    pub fn file(&self, name: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.name == name)
    }
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Hashes `dir/name`.
pub fn hash_file(dir: &Path, name: &str) -> io::Result<FileEntry> {
    let bytes = fs::read(dir.join(name))?;
    Ok(FileEntry {
        name: name.to_owned(),
        sha256: sha256_hex(&bytes),
        bytes: bytes.len() as u64,
    })
}

/// Hashes every regular file in `dir` except the manifest, its signature, temporary files and
/// the names in `except`; sorted by name.
pub fn hash_bundle(dir: &Path, except: &[&str]) -> io::Result<Vec<FileEntry>> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name == MANIFEST
            || name == SIGNATURE
            || durable::is_temp(&name)
            || except.contains(&name.as_str())
        {
            continue;
        }
        entries.push(hash_file(dir, &name)?);
    }
    entries.sort();
    Ok(entries)
}
