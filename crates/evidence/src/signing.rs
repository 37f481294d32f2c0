//! Ed25519 keys for signing the manifest.
//!
//! `canary keygen` prints a key pair made by [`generate_keypair`]: the secret is the hex of the
//! 32-byte Ed25519 seed (64 hex characters) and goes into a configured variable; the public key
//! (64 hex characters) is what `canary verify --key` pins. The secret only ever travels as a
//! [`Secret`], which prints `***`; nothing in this module writes or logs it.
//!
//! A signature is the 64-byte Ed25519 signature of the exact bytes of `manifest.json`, stored in
//! `manifest.sig` as 128 lowercase hex characters and a newline.

use canary_core::Secret;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use rand::TryRng;
use sha2::{Digest, Sha256};

/// A key that could not be made or read. Messages never contain key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "the signing key must be 64 hexadecimal characters (the secret `canary keygen` printed), but it has {got}; copy it again without quotes or spaces"
    )]
    SecretLength { got: usize },
    #[error(
        "the signing key contains characters that are not hexadecimal (0-9, a-f); copy the secret exactly as `canary keygen` printed it"
    )]
    SecretNotHex,
    #[error(
        "{what} must be 64 hexadecimal characters (an Ed25519 public key as `canary keygen` prints it), but it has {got}"
    )]
    PublicLength { what: &'static str, got: usize },
    #[error("{what} is not hexadecimal: use the public key exactly as `canary keygen` printed it")]
    PublicNotHex { what: &'static str },
    #[error("{what} is not a valid Ed25519 public key: use the key `canary keygen` printed")]
    PublicInvalid { what: &'static str },
    #[error(
        "the operating system's random number generator failed ({0}); key generation needs it, retry on a healthy machine"
    )]
    Entropy(String),
}

/// A freshly generated key pair.
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// Hex of the 32-byte seed: put it in the variable the config names as the signing key.
    pub secret_hex: Secret,
    /// Hex of the 32-byte public key: share it with whoever verifies bundles.
    pub public_hex: String,
}

/// Generates a key pair from the operating system's random number generator.
pub fn generate_keypair() -> Result<KeyPair, KeyError> {
    let mut seed = [0u8; 32];
    rand::rngs::SysRng
        .try_fill_bytes(&mut seed)
        .map_err(|e| KeyError::Entropy(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    Ok(KeyPair {
        secret_hex: Secret::new(hex::encode(key.to_bytes())),
        public_hex: hex::encode(key.verifying_key().to_bytes()),
    })
}

/// Signs manifests. `Debug` shows the public key only; the key material is wiped on drop.
pub struct Signer {
    key: SigningKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("public_key", &self.public_hex())
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Reads the secret key: 64 hex characters (either case), surrounding whitespace ignored.
    pub fn from_secret(secret: &Secret) -> Result<Signer, KeyError> {
        let text = secret.expose().trim();
        if text.len() != 64 {
            return Err(KeyError::SecretLength {
                got: text.chars().count(),
            });
        }
        let mut seed = [0u8; 32];
        hex::decode_to_slice(text, &mut seed).map_err(|_| KeyError::SecretNotHex)?;
        let key = SigningKey::from_bytes(&seed);
        seed.fill(0);
        Ok(Signer { key })
    }

    /// The public key as 64 lowercase hex characters.
    pub fn public_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    /// The public key's fingerprint (see [`fingerprint`]).
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.key.verifying_key())
    }

    /// The signature of `message` as 128 lowercase hex characters.
    pub fn sign_hex(&self, message: &[u8]) -> String {
        hex::encode(self.key.sign(message).to_bytes())
    }
}

/// Parses a public key given as 64 hex characters; `what` names it in errors ("the pinned
/// key", "the manifest's signer key").
pub fn parse_public_key(text: &str, what: &'static str) -> Result<VerifyingKey, KeyError> {
    let text = text.trim();
    if text.len() != 64 {
        return Err(KeyError::PublicLength {
            what,
            got: text.chars().count(),
        });
    }
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text, &mut bytes).map_err(|_| KeyError::PublicNotHex { what })?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::PublicInvalid { what })
}

/// A short, stable name for a public key: `SHA256:` and the first 16 bytes of the SHA-256 of the
/// key's 32 bytes, in hex. Printed in the decision file and by `canary verify`.
pub fn fingerprint(public_hex: &str) -> Result<String, KeyError> {
    Ok(fingerprint_of(&parse_public_key(
        public_hex,
        "the public key",
    )?))
}

fn fingerprint_of(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.to_bytes());
    format!("SHA256:{}", hex::encode(&digest[..16]))
}

/// Why a signature did not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error(
        "the signature is not 128 hexadecimal characters: manifest.sig was damaged or replaced"
    )]
    Malformed,
    #[error(
        "the signature does not match manifest.json and the signer's key: the manifest or its signature was changed after signing"
    )]
    Invalid,
}

/// Checks a hex signature (surrounding whitespace ignored) of `message` by `key`, strictly
/// (no malleable signatures, no weak keys).
pub fn verify_hex(
    key: &VerifyingKey,
    message: &[u8],
    signature_hex: &str,
) -> Result<(), SignatureError> {
    let text = signature_hex.trim();
    let mut bytes = [0u8; 64];
    if text.len() != 128 {
        return Err(SignatureError::Malformed);
    }
    hex::decode_to_slice(text, &mut bytes).map_err(|_| SignatureError::Malformed)?;
    key.verify_strict(message, &Signature::from_bytes(&bytes))
        .map_err(|_| SignatureError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_sign_and_verify() {
        let pair = generate_keypair().unwrap();
        assert_eq!(
            format!("{pair:?}")
                .matches(pair.secret_hex.expose())
                .count(),
            0
        );
        let signer = Signer::from_secret(&pair.secret_hex).unwrap();
        assert_eq!(signer.public_hex(), pair.public_hex);
        assert!(!format!("{signer:?}").contains(pair.secret_hex.expose()));
        let sig = signer.sign_hex(b"manifest");
        let key = parse_public_key(&pair.public_hex, "the key").unwrap();
        assert_eq!(verify_hex(&key, b"manifest", &sig), Ok(()));
        assert_eq!(
            verify_hex(&key, b"manifesT", &sig),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            verify_hex(&key, b"manifest", "abc"),
            Err(SignatureError::Malformed)
        );
        let fp = fingerprint(&pair.public_hex).unwrap();
        assert_eq!(fp, signer.fingerprint());
        assert_eq!(fp.len(), "SHA256:".len() + 32);
    }

    #[test]
    fn bad_secrets_say_what_to_do_without_showing_the_value() {
        let short = Secret::new("deadbeef");
        let err = Signer::from_secret(&short).unwrap_err();
        assert_eq!(err, KeyError::SecretLength { got: 8 });
        assert!(!err.to_string().contains("deadbeef"));
        let not_hex = Secret::new("z".repeat(64));
        let err = Signer::from_secret(&not_hex).unwrap_err();
        assert_eq!(err, KeyError::SecretNotHex);
        assert!(err.to_string().contains("canary keygen"));
        // Surrounding whitespace (a trailing newline from a file) is fine; case does not matter.
        let pair = generate_keypair().unwrap();
        let padded = Secret::new(format!(" {}\n", pair.secret_hex.expose().to_uppercase()));
        assert_eq!(
            Signer::from_secret(&padded).unwrap().public_hex(),
            pair.public_hex
        );
    }
}
