//! `canary-evidence`: the evidence bundle — artifacts, manifest, signature, verification, report.
#![forbid(unsafe_code)]
