//! `verify` on tampered, incomplete, mis-signed and forged bundles: each fails with the right
//! kind, naming the file and what is wrong.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use canary_core::engine::{Input, Reading};
use canary_core::journal;
use canary_evidence::artifact::{JOURNAL, MANIFEST, SIGNATURE};
use canary_evidence::manifest::sha256_hex;
use canary_evidence::{
    Manifest, ProblemKind, Signer, SignerTrust, VerifyError, generate_keypair, verify,
};
use common::*;

/// One sealed healthy bundle, and a scratch area for damaged copies.
struct Fixture {
    _tmp: tempfile::TempDir,
    original: PathBuf,
    scratch: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let (original, _) = run_and_seal(
        &tmp.path().join("evidence"),
        Scenario::healthy(),
        &fixed_signer(),
    );
    let scratch = tmp.path().join("scratch");
    fs::create_dir_all(&scratch).unwrap();
    verify(&original, Some(&fixed_signer().public_hex())).unwrap();
    Fixture {
        _tmp: tmp,
        original,
        scratch,
    }
}

impl Fixture {
    /// A fresh copy of the bundle named `case`.
    fn copy(&self, case: &str) -> PathBuf {
        let dest = self.scratch.join(case);
        copy_bundle(&self.original, &dest)
    }
}

fn failure(dir: &Path, key: Option<&str>) -> VerifyError {
    match verify(dir, key) {
        Ok(report) => panic!("{} verified but should not: {report:?}", dir.display()),
        Err(e) => e,
    }
}

#[test]
fn one_changed_byte_in_any_file_is_caught_and_named() {
    let f = fixture();
    for (i, (name, bytes)) in files(&f.original).into_iter().enumerate() {
        let dir = f.copy(&format!("byte-{i}"));
        let mut changed = bytes.clone();
        // In the manifest, change a hash digit so the JSON still parses and only the signature
        // can tell; elsewhere, flip a bit in the middle.
        let at = if name == MANIFEST {
            let text = String::from_utf8(bytes.clone()).unwrap();
            text.find("\"config_sha256\": \"").unwrap() + "\"config_sha256\": \"".len()
        } else {
            changed.len() / 2
        };
        changed[at] ^= 0x01;
        fs::write(dir.join(&name), &changed).unwrap();
        let err = failure(&dir, None);
        let expected = if name == MANIFEST || name == SIGNATURE {
            ProblemKind::BadSignature
        } else {
            ProblemKind::Tampered
        };
        assert_eq!(err.kind(), Some(expected), "{name}: {err}");
        let first = &err.problems()[0];
        let file = if name == MANIFEST {
            SIGNATURE
        } else {
            name.as_str()
        };
        assert_eq!(first.file, file, "{err}");
        let text = err.to_string();
        assert!(text.contains(file), "{text}");
        if expected == ProblemKind::Tampered {
            assert!(text.contains("changed after signing"), "{text}");
        }
    }
}

#[test]
fn a_removed_artifact_makes_the_bundle_incomplete() {
    let f = fixture();
    for (i, (name, _)) in files(&f.original).into_iter().enumerate() {
        if name == MANIFEST || name == SIGNATURE {
            continue;
        }
        let dir = f.copy(&format!("removed-{i}"));
        fs::remove_file(dir.join(&name)).unwrap();
        let err = failure(&dir, None);
        assert_eq!(err.kind(), Some(ProblemKind::Incomplete), "{name}: {err}");
        assert_eq!(err.problems()[0].file, name);
        assert!(
            err.to_string().contains(&format!("{name}: missing")),
            "{err}"
        );
    }
}

#[test]
fn a_bundle_without_a_manifest_is_incomplete_never_complete() {
    let f = fixture();
    let dir = f.copy("no-manifest");
    fs::remove_file(dir.join(MANIFEST)).unwrap();
    let err = failure(&dir, None);
    assert_eq!(err.kind(), Some(ProblemKind::Incomplete));
    assert!(err.to_string().contains("manifest.json: missing"), "{err}");
    assert!(err.to_string().contains("canary resume"), "{err}");
}

#[test]
fn a_missing_signature_is_a_bad_signature() {
    let f = fixture();
    let dir = f.copy("no-sig");
    fs::remove_file(dir.join(SIGNATURE)).unwrap();
    let err = failure(&dir, None);
    assert_eq!(err.kind(), Some(ProblemKind::BadSignature));
    assert!(err.to_string().contains("manifest.sig: missing"), "{err}");
}

#[test]
fn a_signature_by_another_key_is_a_bad_signature() {
    let f = fixture();
    let dir = f.copy("other-key-sig");
    let other = Signer::from_secret(&generate_keypair().unwrap().secret_hex).unwrap();
    let manifest = fs::read(dir.join(MANIFEST)).unwrap();
    fs::write(dir.join(SIGNATURE), other.sign_hex(&manifest) + "\n").unwrap();
    let err = failure(&dir, None);
    assert_eq!(err.kind(), Some(ProblemKind::BadSignature));
    assert!(
        err.to_string().contains("signature does not match"),
        "{err}"
    );
    // Garbage is reported as such.
    fs::write(dir.join(SIGNATURE), "not a signature\n").unwrap();
    let err = failure(&dir, None);
    assert!(
        err.to_string().contains("not 128 hexadecimal characters"),
        "{err}"
    );
}

#[test]
fn a_different_pinned_key_fails_even_when_the_signature_is_valid() {
    let f = fixture();
    let pinned = generate_keypair().unwrap().public_hex;
    let err = failure(&f.original, Some(&pinned));
    assert_eq!(err.kind(), Some(ProblemKind::BadSignature));
    assert_eq!(err.problems().len(), 1, "{err}");
    let text = err.to_string();
    assert!(text.contains("not by the expected key"), "{text}");
    assert!(text.contains(&pinned), "{text}");
    // A re-signed bundle (new key, new manifest) verifies on its own but not against the pin.
    let dir = f.copy("resigned");
    let other = Signer::from_secret(&generate_keypair().unwrap().secret_hex).unwrap();
    let mut manifest = Manifest::parse(&fs::read(dir.join(MANIFEST)).unwrap()).unwrap();
    manifest.signer.public_key = other.public_hex();
    manifest.signer.fingerprint = other.fingerprint();
    write_signed(&dir, &manifest, &other);
    // Without a pin it still "verifies" — and the report says the signer was not checked.
    let unpinned = verify(&dir, None).unwrap();
    assert_eq!(unpinned.signer_trust, SignerTrust::SelfConsistent);
    let pinned_ok = verify(&f.original, Some(&fixed_signer().public_hex())).unwrap();
    assert_eq!(pinned_ok.signer_trust, SignerTrust::Pinned);
    let err = failure(&dir, Some(&fixed_signer().public_hex()));
    assert_eq!(err.kind(), Some(ProblemKind::BadSignature));
    // A malformed pin says what a key looks like.
    let err = failure(&f.original, Some("abc"));
    assert!(
        err.to_string().contains("64 hexadecimal characters"),
        "{err}"
    );
}

#[test]
fn an_extra_unlisted_file_is_tampering() {
    let f = fixture();
    let dir = f.copy("extra");
    fs::write(dir.join("CANARY_NOTES.txt"), "added later\n").unwrap();
    let err = failure(&dir, None);
    assert_eq!(err.kind(), Some(ProblemKind::Tampered));
    assert_eq!(err.problems()[0].file, "CANARY_NOTES.txt");
    assert!(
        err.to_string().contains("not listed in the manifest"),
        "{err}"
    );
}

#[cfg(unix)]
#[test]
fn a_symbolic_link_in_a_bundle_is_tampering_and_is_not_followed() {
    use std::os::unix::fs::symlink;
    let f = fixture();
    // A listed artifact replaced by a link to an identical copy outside: the bytes would hash
    // the same through the link, but a bundle holds only the files it signed.
    let dir = f.copy("linked-journal");
    let outside = f.scratch.join("journal-elsewhere.jsonl");
    fs::rename(dir.join(JOURNAL), &outside).unwrap();
    symlink(&outside, dir.join(JOURNAL)).unwrap();
    let err = failure(&dir, None);
    assert_eq!(err.kind(), Some(ProblemKind::Tampered));
    assert!(
        err.problems()
            .iter()
            .any(|p| p.file == JOURNAL && p.detail.contains("a symbolic link")),
        "{err}"
    );
    // An extra link (to anything) and a directory are reported too.
    let dir = f.copy("extra-link");
    symlink("/etc/passwd", dir.join("notes.txt")).unwrap();
    fs::create_dir(dir.join("more")).unwrap();
    let err = failure(&dir, None);
    let text = err.to_string();
    assert!(text.contains("notes.txt: is a symbolic link"), "{text}");
    assert!(text.contains("more: is a directory"), "{text}");
    // A linked manifest is not read at all.
    let dir = f.copy("linked-manifest");
    let manifest = f.scratch.join("manifest-elsewhere.json");
    fs::rename(dir.join(MANIFEST), &manifest).unwrap();
    symlink(&manifest, dir.join(MANIFEST)).unwrap();
    let err = failure(&dir, None);
    assert_eq!(err.kind(), Some(ProblemKind::Tampered));
    assert_eq!(err.problems().len(), 1, "{err}");
}

fn write_signed(dir: &Path, manifest: &Manifest, signer: &Signer) {
    let bytes = manifest.to_bytes();
    fs::write(dir.join(MANIFEST), &bytes).unwrap();
    fs::write(dir.join(SIGNATURE), signer.sign_hex(&bytes) + "\n").unwrap();
}

/// Rewrites the journal with `forge` applied to its inputs, re-hashes it in the manifest and
/// re-signs with the same key: only the replay can tell.
fn forge_journal(dir: &Path, forge: impl Fn(&mut Vec<Input>)) {
    let text = fs::read_to_string(dir.join(JOURNAL)).unwrap();
    let mut parsed = journal::parse(&text).unwrap();
    forge(&mut parsed.inputs);
    let mut forged = journal::line(&parsed.header);
    for input in &parsed.inputs {
        forged.push_str(&journal::line(input));
    }
    fs::write(dir.join(JOURNAL), &forged).unwrap();
    let mut manifest = Manifest::parse(&fs::read(dir.join(MANIFEST)).unwrap()).unwrap();
    let entry = manifest
        .files
        .iter_mut()
        .find(|e| e.name == JOURNAL)
        .unwrap();
    entry.sha256 = sha256_hex(forged.as_bytes());
    entry.bytes = forged.len() as u64;
    write_signed(dir, &manifest, &fixed_signer());
}

#[test]
fn a_forged_observation_re_hashed_and_re_signed_is_caught_by_the_replay() {
    let f = fixture();
    let dir = f.copy("forged");
    forge_journal(&dir, |inputs| {
        // At T+20 the canary "had" RLS errors: the engine would have rolled back there.
        let obs = inputs
            .iter_mut()
            .find_map(|i| match i {
                Input::Observations {
                    round, readings, ..
                } if *round == at_min(20.0) => Some(readings),
                _ => None,
            })
            .unwrap();
        let rls = obs
            .iter_mut()
            .find(|r| r.guardrail == "rls_errors")
            .unwrap();
        rls.canary = Reading::value(3.0);
    });
    let err = failure(&dir, Some(&fixed_signer().public_hex()));
    assert_eq!(err.kind(), Some(ProblemKind::DecisionMismatch), "{err}");
    assert!(!err.has(ProblemKind::Tampered) && !err.has(ProblemKind::BadSignature));
    let text = err.to_string();
    assert!(
        text.contains("journal.jsonl: replays to ROLLBACK but the manifest records PROMOTE"),
        "{text}"
    );
}

#[test]
fn a_forged_approver_or_reason_is_caught_too() {
    let f = fixture();
    // A journal that no longer parses as engine inputs.
    let dir = f.copy("garbage-journal");
    let garbage = b"{\"format\":1}\n".to_vec();
    fs::write(dir.join(JOURNAL), &garbage).unwrap();
    let mut manifest = Manifest::parse(&fs::read(dir.join(MANIFEST)).unwrap()).unwrap();
    let entry = manifest
        .files
        .iter_mut()
        .find(|e| e.name == JOURNAL)
        .unwrap();
    entry.sha256 = sha256_hex(&garbage);
    write_signed(&dir, &manifest, &fixed_signer());
    let err = failure(&dir, None);
    assert_eq!(err.kind(), Some(ProblemKind::DecisionMismatch), "{err}");
    assert!(err.to_string().contains("does not parse"), "{err}");

    // The manifest claims an operator authorised the promotion.
    let dir = f.copy("forged-authoriser");
    let mut manifest = Manifest::parse(&fs::read(dir.join(MANIFEST)).unwrap()).unwrap();
    manifest.decision.authorised_by = "mallory".into();
    write_signed(&dir, &manifest, &fixed_signer());
    let err = failure(&dir, None);
    assert_eq!(err.kind(), Some(ProblemKind::DecisionMismatch));
    assert!(err.to_string().contains("\"mallory\""), "{err}");
}

#[test]
fn a_torn_journal_tail_is_incomplete() {
    let f = fixture();
    let dir = f.copy("torn");
    let mut bytes = fs::read(dir.join(JOURNAL)).unwrap();
    bytes.extend_from_slice(b"{\"input\":\"tick\",\"at\":1");
    fs::write(dir.join(JOURNAL), &bytes).unwrap();
    let mut manifest = Manifest::parse(&fs::read(dir.join(MANIFEST)).unwrap()).unwrap();
    let entry = manifest
        .files
        .iter_mut()
        .find(|e| e.name == JOURNAL)
        .unwrap();
    entry.sha256 = sha256_hex(&bytes);
    write_signed(&dir, &manifest, &fixed_signer());
    let err = failure(&dir, None);
    assert_eq!(err.kind(), Some(ProblemKind::Incomplete), "{err}");
    assert!(err.to_string().contains("torn line"), "{err}");
}

#[test]
fn the_wrong_outcome_file_contradicts_the_decision() {
    let f = fixture();
    let dir = f.copy("both-outcomes");
    fs::write(
        dir.join("CANARY_ROLLBACK_FINAL.txt"),
        "CANARY FAILED - AUTO-ROLLBACK EXECUTED\n",
    )
    .unwrap();
    let mut manifest = Manifest::parse(&fs::read(dir.join(MANIFEST)).unwrap()).unwrap();
    manifest
        .files
        .push(canary_evidence::manifest::hash_file(&dir, "CANARY_ROLLBACK_FINAL.txt").unwrap());
    manifest.files.sort();
    write_signed(&dir, &manifest, &fixed_signer());
    let err = failure(&dir, None);
    assert_eq!(err.kind(), Some(ProblemKind::DecisionMismatch), "{err}");
    assert!(
        err.to_string()
            .contains("CANARY_ROLLBACK_FINAL.txt: present, but the verdict is PROMOTE")
    );
}

#[test]
fn an_unreadable_directory_is_its_own_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err = verify(&tmp.path().join("nope"), None).unwrap_err();
    assert!(matches!(err, VerifyError::Unreadable { .. }));
    assert_eq!(err.kind(), None);
    assert!(err.to_string().contains("check the path"));
}

/// A bundle whose run rolled back at T+8, before any checkpoint: every snapshot is a
/// placeholder.
fn early_rollback(tmp: &Path) -> PathBuf {
    let scenario = Scenario::healthy().event(
        8.0,
        canary_core::Event::Abort {
            by: "alice".into(),
            reason: "wrong build".into(),
        },
    );
    let (dir, _) = run_and_seal(&tmp.join("evidence"), scenario, &fixed_signer());
    verify(&dir, None).unwrap();
    dir
}

/// Replaces `name`'s bytes, re-hashes it in the manifest (adding it when unlisted) and re-signs
/// with the same key: only a check of the contents against the journal can tell.
fn rewrite_signed(dir: &Path, name: &str, bytes: &[u8]) {
    fs::write(dir.join(name), bytes).unwrap();
    let mut manifest = Manifest::parse(&fs::read(dir.join(MANIFEST)).unwrap()).unwrap();
    manifest.files.retain(|e| e.name != name);
    manifest
        .files
        .push(canary_evidence::manifest::hash_file(dir, name).unwrap());
    manifest.files.sort();
    write_signed(dir, &manifest, &fixed_signer());
}

#[test]
fn a_placeholder_that_disagrees_with_the_journal_is_caught_even_when_re_signed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = early_rollback(tmp.path());
    let t30 = "CANARY_SNAPSHOT_T30_20251019T140000Z.json";
    let text = fs::read_to_string(dir.join(t30)).unwrap();
    assert!(text.contains("not reached: rolled back at T+8m"), "{text}");
    rewrite_signed(&dir, t30, text.replace("T+8m", "T+31m").as_bytes());
    let err = failure(&dir, Some(&fixed_signer().public_hex()));
    assert_eq!(err.kind(), Some(ProblemKind::DecisionMismatch), "{err}");
    assert_eq!(err.problems().len(), 1, "{err}");
    assert_eq!(err.problems()[0].file, t30);
    assert!(
        err.to_string()
            .contains("differs from what its journal determines")
    );
}

#[test]
fn a_missing_placeholder_is_incomplete_even_when_the_manifest_was_re_signed_without_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = early_rollback(tmp.path());
    for name in [
        "CANARY_SNAPSHOT_T60_20251019T140000Z.json",
        "CANARY_ISOLATION_PROBES_20251019T140000Z.json",
    ] {
        fs::remove_file(dir.join(name)).unwrap();
        let mut manifest = Manifest::parse(&fs::read(dir.join(MANIFEST)).unwrap()).unwrap();
        manifest.files.retain(|e| e.name != name);
        write_signed(&dir, &manifest, &fixed_signer());
        let err = failure(&dir, None);
        assert_eq!(err.kind(), Some(ProblemKind::Incomplete), "{err}");
        assert!(
            err.to_string().contains(&format!(
                "{name}: missing: every ROLLBACK bundle must have it"
            )),
            "{err}"
        );
    }
}

#[test]
fn a_reached_checkpoint_cannot_be_passed_off_as_not_reached() {
    let f = fixture();
    let dir = f.copy("fake-not-reached");
    let t15 = "CANARY_SNAPSHOT_T15_20251019T140000Z.json";
    let fake = serde_json::json!({"artifact": "CANARY_SNAPSHOT", "label": "T15", "reached": false});
    rewrite_signed(&dir, t15, fake.to_string().as_bytes());
    let err = failure(&dir, None);
    assert_eq!(err.kind(), Some(ProblemKind::DecisionMismatch), "{err}");
    assert!(
        err.to_string()
            .contains("says T15 was not reached, but the journal reached it"),
        "{err}"
    );
}
