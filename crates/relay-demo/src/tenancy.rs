//! Tenancy: who owns a row and how that ownership is enforced.
//!
//! A tenant is identified in the store only by `user_hash = hex(HMAC-SHA256(key, user_id))`; the
//! raw user id never reaches a row. Memory text is sealed at rest with AES-256-GCM and the row's
//! `user_hash` as associated data, so a ciphertext moved under another tenant fails to open
//! (fail closed) instead of yielding text.

use std::fmt;

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const NONCE_LEN: usize = 12;

/// A tenant's identity in the store: lowercase hex of HMAC-SHA256(key, user_id).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserHash(String);

impl UserHash {
    /// The hex string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for UserHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Short form keeps logs readable; the hash is not a secret.
        write!(f, "UserHash({}…)", &self.0[..self.0.len().min(12)])
    }
}

impl fmt::Display for UserHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The tenant context a read runs under (the `SET app.user_hash` of a row-level-security
/// database): reads are filtered to rows whose `user_hash` equals this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantContext {
    user_hash: UserHash,
}

impl TenantContext {
    /// The context of the tenant identified by `user_hash`.
    pub fn new(user_hash: UserHash) -> Self {
        TenantContext { user_hash }
    }

    /// The tenant this context admits.
    pub fn user_hash(&self) -> &UserHash {
        &self.user_hash
    }
}

/// Memory text sealed at rest: a random 96-bit nonce and the AES-256-GCM ciphertext + tag.
#[derive(Clone)]
pub struct SealedText {
    nonce: [u8; NONCE_LEN],
    ciphertext: Box<[u8]>,
}

impl fmt::Debug for SealedText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedText({} bytes)", self.ciphertext.len())
    }
}

/// Why text could not be sealed or opened. Opening fails closed: no partial text is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Encryption failed (plaintext too large for AES-GCM).
    #[error("encryption failed")]
    Seal,
    /// The ciphertext does not authenticate under this tenant: wrong tenant or tampered row.
    #[error("ciphertext does not authenticate under this tenant (wrong tenant or tampered row)")]
    Open,
    /// The text authenticated but is not UTF-8 (cannot happen for rows this service wrote).
    #[error("decrypted text is not UTF-8")]
    Utf8,
    /// The system random source failed.
    #[error("random source unavailable: {0}")]
    Random(String),
}

/// The service's tenancy keys: one for user hashes, one for sealing text, both derived from a
/// single data secret with HMAC-SHA256 under distinct labels.
#[derive(Clone)]
pub struct TenantKeys {
    hash_key: [u8; 32],
    cipher: Aes256Gcm,
}

impl fmt::Debug for TenantKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TenantKeys(***)")
    }
}

impl TenantKeys {
    /// Derives the keys from `secret`.
    pub fn derive(secret: &[u8]) -> Self {
        let hash_key = hmac_sha256(secret, b"relay-demo/user-hash/v1");
        let seal_key = hmac_sha256(secret, b"relay-demo/at-rest/v1");
        TenantKeys {
            hash_key,
            cipher: Aes256Gcm::new(&seal_key.into()),
        }
    }

    /// `hex(HMAC-SHA256(key, user_id))`.
    pub fn user_hash(&self, user_id: &str) -> UserHash {
        UserHash(hex::encode(hmac_sha256(&self.hash_key, user_id.as_bytes())))
    }

    /// Seals `text` for the tenant `owner` (AES-256-GCM, `owner` as associated data).
    pub fn seal(&self, owner: &UserHash, text: &str) -> Result<SealedText, SealError> {
        let nonce: Nonce<U12> =
            Generate::try_generate().map_err(|e| SealError::Random(e.to_string()))?;
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: text.as_bytes(),
                    aad: owner.as_str().as_bytes(),
                },
            )
            .map_err(|_| SealError::Seal)?;
        Ok(SealedText {
            nonce: nonce.into(),
            ciphertext: ciphertext.into_boxed_slice(),
        })
    }

    /// Opens `sealed` as tenant `owner`; fails closed if it was sealed for anyone else.
    pub fn open(&self, owner: &UserHash, sealed: &SealedText) -> Result<String, SealError> {
        let plaintext = self
            .cipher
            .decrypt(
                &Nonce::<U12>::from(sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: owner.as_str().as_bytes(),
                },
            )
            .map_err(|_| SealError::Open)?;
        String::from_utf8(plaintext).map_err(|_| SealError::Utf8)
    }
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn user_hash_is_hex_hmac_and_key_dependent() {
        let keys = TenantKeys::derive(b"k1");
        let a = keys.user_hash("user_1");
        assert_eq!(a.as_str().len(), 64);
        assert!(a.as_str().chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a, keys.user_hash("user_1"));
        assert_ne!(a, keys.user_hash("user_2"));
        assert_ne!(a, TenantKeys::derive(b"k2").user_hash("user_1"));
    }

    #[test]
    fn sealed_text_opens_only_for_its_tenant() {
        let keys = TenantKeys::derive(b"k");
        let alice = keys.user_hash("user_1");
        let bob = keys.user_hash("user_2");
        let sealed = keys.seal(&alice, "MARKER-user_1-secret").unwrap();
        assert_eq!(keys.open(&alice, &sealed).unwrap(), "MARKER-user_1-secret");
        assert_eq!(keys.open(&bob, &sealed), Err(SealError::Open));
        assert!(!sealed.ciphertext.windows(6).any(|w| w == b"MARKER"));
    }

    #[test]
    fn tampered_ciphertext_fails_closed() {
        let keys = TenantKeys::derive(b"k");
        let alice = keys.user_hash("user_1");
        let mut sealed = keys.seal(&alice, "hello").unwrap();
        sealed.ciphertext[0] ^= 1;
        assert_eq!(keys.open(&alice, &sealed), Err(SealError::Open));
    }
}
