//! Bearer authentication: HS256 JWTs whose subject is the user id. Minting is here too, so the
//! `tokens` command and the canary's load burst hold tokens the service accepts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Signing secret used when `RELAY_JWT_SECRET` is not set. Development only.
pub const DEVELOPMENT_JWT_SECRET: &str = "relay-demo-development-secret-not-for-production";
/// Issuer written into and required of every token.
pub const ISSUER: &str = "relay-demo";
/// Lifetime of tokens minted by `relay-demo tokens` and [`crate::tokens`].
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The claims of a relay token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Subject: the user id.
    pub sub: String,
    /// Issuer, always [`ISSUER`].
    pub iss: String,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
}

/// Why a request is not authenticated. Every variant maps to 401 + `WWW-Authenticate: Bearer`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("missing Authorization header; send `Authorization: Bearer <token>`")]
    Missing,
    /// The header is not `Bearer <token>`.
    #[error("Authorization header is not `Bearer <token>`")]
    NotBearer,
    /// The token is malformed, badly signed, expired, or lacks a subject.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The JWT library refused to sign.
    #[error("could not sign token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user id (the token's subject).
    pub user_id: String,
}

/// Verifies bearer tokens signed with one HS256 secret.
#[derive(Clone)]
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authenticator(HS256, ***)")
    }
}

impl Authenticator {
    /// A verifier for tokens signed with `secret`.
    pub fn new(secret: &str) -> Self {
        ensure_crypto_provider();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        validation.set_issuer(&[ISSUER]);
        validation.leeway = 30;
        Authenticator {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// Authenticates the value of an `Authorization` header.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::NotBearer)?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| AuthError::Invalid(describe(&e)))?;
        if data.claims.sub.is_empty() {
            return Err(AuthError::Invalid("empty subject".to_owned()));
        }
        Ok(Principal {
            user_id: data.claims.sub,
        })
    }
}

/// Selects aws-lc-rs as jsonwebtoken's process-wide crypto provider. jsonwebtoken picks one from
/// its crate features and panics at first use if both backends end up enabled by feature
/// unification in a larger binary; choosing explicitly avoids that. Installing twice is harmless.
fn ensure_crypto_provider() {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

/// A bounded description of a verification failure (never the token itself).
fn describe(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "expired".to_owned(),
        ErrorKind::InvalidSignature => "bad signature".to_owned(),
        ErrorKind::InvalidAlgorithm => "algorithm not allowed (HS256 only)".to_owned(),
        ErrorKind::InvalidIssuer => "wrong issuer".to_owned(),
        ErrorKind::MissingRequiredClaim(c) => format!("missing claim `{c}`"),
        _ => "malformed".to_owned(),
    }
}

/// Mints an HS256 token for `user_id`, valid for `ttl` from now.
pub fn mint_token(secret: &str, user_id: &str, ttl: Duration) -> Result<String, MintError> {
    ensure_crypto_provider();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let claims = Claims {
        sub: user_id.to_owned(),
        iss: ISSUER.to_owned(),
        iat: now,
        exp: now + ttl.as_secs(),
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn accepts_its_own_tokens_and_rejects_others() {
        let auth = Authenticator::new("s1");
        let token = mint_token("s1", "user_1", Duration::from_secs(60)).unwrap();
        let header = format!("Bearer {token}");
        assert_eq!(auth.authenticate(Some(&header)).unwrap().user_id, "user_1");

        let foreign = mint_token("s2", "user_1", Duration::from_secs(60)).unwrap();
        assert_eq!(
            auth.authenticate(Some(&format!("Bearer {foreign}"))),
            Err(AuthError::Invalid("bad signature".to_owned()))
        );
        assert_eq!(auth.authenticate(None), Err(AuthError::Missing));
        assert_eq!(
            auth.authenticate(Some(&format!("Basic {token}"))),
            Err(AuthError::NotBearer)
        );
        assert_eq!(
            auth.authenticate(Some("Bearer not.a.jwt")),
            Err(AuthError::Invalid("malformed".to_owned()))
        );
    }

    #[test]
    fn rejects_expired_tokens() {
        let auth = Authenticator::new("s1");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = Claims {
            sub: "user_1".into(),
            iss: ISSUER.into(),
            iat: now - 7200,
            exp: now - 3600,
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"s1"),
        )
        .unwrap();
        assert_eq!(
            auth.authenticate(Some(&format!("Bearer {token}"))),
            Err(AuthError::Invalid("expired".to_owned()))
        );
    }
}
