//! No secret value reaches any file of the bundle: the signing key is passed in as a `Secret`
//! and only its public half is written.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use canary_core::Secret;
use canary_evidence::{Signer, generate_keypair, verify};
use common::*;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_signing_key_appears_in_no_file_of_the_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let pair = generate_keypair().unwrap();
    // Uppercase, with a trailing newline, as it might come from an environment file.
    let configured = Secret::new(format!("{}\n", pair.secret_hex.expose().to_uppercase()));
    let signer = Signer::from_secret(&configured).unwrap();
    assert!(!format!("{signer:?}").contains(pair.secret_hex.expose()));

    let (dir, _) = run_and_seal(tmp.path(), Scenario::healthy(), &signer);
    verify(&dir, Some(&pair.public_hex)).unwrap();

    let secret_hex = pair.secret_hex.expose().to_owned();
    let seed = hex::decode(&secret_hex).unwrap();
    let needles: Vec<(&str, Vec<u8>)> = vec![
        ("secret hex", secret_hex.as_bytes().to_vec()),
        (
            "secret hex, upper case",
            secret_hex.to_uppercase().into_bytes(),
        ),
        (
            "half of the secret hex",
            secret_hex.as_bytes()[..32].to_vec(),
        ),
        ("raw seed bytes", seed),
    ];
    let files = files(&dir);
    // 14 signed files (the isolation-probe report among them), the manifest and its signature.
    assert_eq!(files.len(), 16);
    for (name, bytes) in &files {
        for (what, needle) in &needles {
            assert!(!contains(bytes, needle), "{what} found in {name}");
        }
    }
    // The public key is there, as it should be.
    assert!(
        files
            .iter()
            .any(|(n, b)| n == "manifest.json" && contains(b, pair.public_hex.as_bytes()))
    );
}
