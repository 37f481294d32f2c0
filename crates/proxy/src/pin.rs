//! Who may pin a request to an arm, and see which arm answered: only a caller that proves it
//! holds the proxy's pin token (canary's own probes and operators). Pure — headers in, a
//! verdict out.
//!
//! Any client can send `X-Canary: canary`; without proof that header must not steer traffic,
//! or a tenant could reach a canary that has 0 % of traffic or was rolled back for a tenant
//! leak. So a pin counts only when the request also carries the token in the proof header
//! (`X-Canary-Token`), compared in constant time; otherwise the pin header is ignored and the
//! request is split like any other. The proof and pin headers never reach an arm.

use std::fmt;

use http::HeaderMap;
use http::header::HeaderName;

use crate::arm::Arm;

/// The secret that lets a caller pin requests. Never printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct PinToken(String);

impl PinToken {
    /// Wraps a token given by the operator.
    pub fn new(token: impl Into<String>) -> Self {
        PinToken(token.into())
    }

    /// A fresh random token (256 bits, hex).
    pub fn generate() -> Self {
        PinToken(random_hex())
    }

    /// The token itself, for handing to canary's probes. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, compared in constant time.
    fn matches(&self, presented: &[u8]) -> bool {
        constant_time_eq(presented, self.0.as_bytes())
    }
}

impl fmt::Debug for PinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PinToken(***)")
    }
}

impl fmt::Display for PinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// 256 random bits as hex: the generated admin and pin tokens.
pub(crate) fn random_hex() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether two byte strings are equal, in time that depends only on their lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a request's headers say about pinning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The request proved it holds the pin token: it may pin, and it is told which arm
    /// answered.
    pub trusted: bool,
    /// The arm the request is pinned to (only ever `Some` when `trusted`).
    pub pin: Option<Arm>,
    /// A pin header came without valid proof and was ignored.
    pub ignored_pin: bool,
}

/// A trusted request whose pin header cannot be honoured as sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadPin {
    /// The value names no arm.
    #[error("header {header}: `{value}` is not an arm: expected `canary` or `baseline`")]
    UnknownArm { header: HeaderName, value: String },
    /// More than one pin header line.
    #[error("header {header} appears more than once: send it once")]
    Repeated { header: HeaderName },
}

/// The pin and proof headers and the token that makes a pin count.
#[derive(Clone, Debug)]
pub(crate) struct PinPolicy {
    pub pin_header: HeaderName,
    pub proof_header: HeaderName,
    token: PinToken,
}

impl PinPolicy {
    pub fn new(pin_header: HeaderName, proof_header: HeaderName, token: PinToken) -> Self {
        PinPolicy {
            pin_header,
            proof_header,
            token,
        }
    }

    /// Reads the pin and the proof. The proof must be one header line holding exactly the
    /// token; anything else is no proof, and then the pin header is ignored whatever it says.
    pub fn read(&self, headers: &HeaderMap) -> Result<Credentials, BadPin> {
        let mut proofs = headers.get_all(&self.proof_header).iter();
        let trusted = match (proofs.next(), proofs.next()) {
            (Some(proof), None) => self.token.matches(proof.as_bytes()),
            _ => false,
        };
        let mut pins = headers.get_all(&self.pin_header).iter();
        let (first, second) = (pins.next(), pins.next());
        if !trusted {
            return Ok(Credentials {
                trusted,
                pin: None,
                ignored_pin: first.is_some(),
            });
        }
        let pin = match (first, second) {
            (None, _) => None,
            (Some(_), Some(_)) => {
                return Err(BadPin::Repeated {
                    header: self.pin_header.clone(),
                });
            }
            (Some(value), None) => {
                let text = String::from_utf8_lossy(value.as_bytes());
                Some(text.parse::<Arm>().map_err(|_| BadPin::UnknownArm {
                    header: self.pin_header.clone(),
                    value: text.into_owned(),
                })?)
            }
        };
        Ok(Credentials {
            trusted,
            pin,
            ignored_pin: false,
        })
    }

    /// Removes the pin and proof headers: they are for the proxy, never for an arm.
    pub fn strip(&self, headers: &mut HeaderMap) {
        headers.remove(&self.pin_header);
        headers.remove(&self.proof_header);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn policy() -> PinPolicy {
        PinPolicy::new(
            HeaderName::from_static("x-canary"),
            HeaderName::from_static("x-canary-token"),
            PinToken::new("s3cret"),
        )
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn a_pin_counts_only_with_the_token() {
        // (headers) → (trusted, pin, ignored_pin)
        type Case<'a> = (&'a [(&'a str, &'a str)], bool, Option<Arm>, bool);
        let table: [Case; 9] = [
            (&[], false, None, false),
            (&[("x-canary", "canary")], false, None, true),
            (&[("x-canary", "nonsense")], false, None, true),
            (
                &[("x-canary", "canary"), ("x-canary-token", "wrong")],
                false,
                None,
                true,
            ),
            (
                &[("x-canary", "canary"), ("x-canary-token", "s3cret ")],
                false,
                None,
                true,
            ),
            (
                &[
                    ("x-canary", "canary"),
                    ("x-canary-token", "s3cret"),
                    ("x-canary-token", "s3cret"),
                ],
                false,
                None,
                true,
            ),
            (&[("x-canary-token", "s3cret")], true, None, false),
            (
                &[("x-canary", "canary"), ("x-canary-token", "s3cret")],
                true,
                Some(Arm::Canary),
                false,
            ),
            (
                &[("X-Canary", "Baseline"), ("X-Canary-Token", "s3cret")],
                true,
                Some(Arm::Baseline),
                false,
            ),
        ];
        for (pairs, trusted, pin, ignored_pin) in table {
            assert_eq!(
                policy().read(&headers(pairs)).unwrap(),
                Credentials {
                    trusted,
                    pin,
                    ignored_pin
                },
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn a_trusted_caller_with_a_bad_pin_is_told_why() {
        let err = policy()
            .read(&headers(&[
                ("x-canary", "both"),
                ("x-canary-token", "s3cret"),
            ]))
            .unwrap_err();
        assert!(err.to_string().contains("`both` is not an arm"), "{err}");
        let err = policy()
            .read(&headers(&[
                ("x-canary", "canary"),
                ("x-canary", "baseline"),
                ("x-canary-token", "s3cret"),
            ]))
            .unwrap_err();
        assert!(err.to_string().contains("more than once"), "{err}");
    }

    #[test]
    fn stripping_removes_pin_and_proof_only() {
        let mut h = headers(&[
            ("x-canary", "canary"),
            ("x-canary-token", "s3cret"),
            ("authorization", "Bearer u1"),
        ]);
        policy().strip(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("authorization"));
    }

    #[test]
    fn the_token_is_never_printed() {
        let token = PinToken::new("s3cret");
        assert_eq!(format!("{token:?} {token}"), "PinToken(***) ***");
        assert_eq!(PinToken::generate().expose().len(), 64);
    }
}
