//! The proxy's resolved configuration: addresses, upstreams, split, headers, admin token,
//! timeouts and health checks — typed and validated before anything starts.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderName;
use http::uri::{Authority, PathAndQuery, Scheme, Uri};

use crate::distribute::{CanaryWeight, SplitMode};
use crate::error::ProxyError;
use crate::pin::{PinToken, constant_time_eq, random_hex};

/// Everything [`crate::start`] needs. Build it with [`ProxyConfig::new`] and adjust the public
/// fields; [`crate::start`] validates it.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Where clients connect (the data port). Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where the admin API listens; must be a loopback address. Port 0 picks a free port.
    pub admin_listen: SocketAddr,
    /// The baseline arm's upstream.
    pub baseline: Upstream,
    /// The canary arm's upstream.
    pub canary: Upstream,
    /// The canary weight at start.
    pub initial_weight: CanaryWeight,
    /// How weighted requests are spread.
    pub split: SplitMode,
    /// Request header that pins a request to an arm (`canary` | `baseline`). Default `X-Canary`.
    /// Honoured only with proof (`proof_header` carrying `pin_token`); ignored otherwise.
    pub pin_header: HeaderName,
    /// Request header that carries the pin token. Default `X-Canary-Token`.
    pub proof_header: HeaderName,
    /// The secret a caller must present to pin a request or to learn which arm answered.
    pub pin_token: PinToken,
    /// Response header naming the arm that answered, sent only to callers that presented the
    /// pin token. Default `X-Canary-Arm`.
    pub arm_header: HeaderName,
    /// Bearer token the admin API requires on every request.
    pub admin_token: AdminToken,
    /// Upstream timeouts.
    pub timeouts: Timeouts,
    /// Active health checks of both arms.
    pub health: HealthCheck,
    /// How long shutdown waits for in-flight requests and streams before cutting them.
    pub drain_timeout: Duration,
    /// Data-path threads, each with its own single-threaded runtime and its own socket on the
    /// data port (like HAProxy's `nbthread`). 0 serves the data port on the caller's runtime.
    /// Default: one per CPU.
    pub workers: usize,
    /// Pin data-path thread *i* to the *i*-th CPU the process may use (Linux; like nginx's
    /// `worker_cpu_affinity auto`). Default off: the scheduler places the threads.
    pub pin_threads: bool,
}

impl ProxyConfig {
    /// A configuration with defaults: data port `127.0.0.1:0`, admin port `127.0.0.1:0`, weight
    /// 0, `random` split, `X-Canary` / `X-Canary-Token` / `X-Canary-Arm`, a generated pin token,
    /// the default timeouts and health checks.
    pub fn new(baseline: Upstream, canary: Upstream, admin_token: AdminToken) -> Self {
        ProxyConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            baseline,
            canary,
            initial_weight: CanaryWeight::ZERO,
            split: SplitMode::Random,
            pin_header: HeaderName::from_static("x-canary"),
            proof_header: HeaderName::from_static("x-canary-token"),
            pin_token: PinToken::generate(),
            arm_header: HeaderName::from_static("x-canary-arm"),
            admin_token,
            timeouts: Timeouts::default(),
            health: HealthCheck::default(),
            drain_timeout: Duration::from_secs(5),
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            pin_threads: false,
        }
    }

    /// Checks what types cannot: a loopback admin address, distinct ports, non-zero timeouts.
    pub fn validate(&self) -> Result<(), ProxyError> {
        if !self.admin_listen.ip().is_loopback() {
            return Err(ProxyError::Config(format!(
                "the admin API must listen on a loopback address, not {}: use 127.0.0.1 or [::1]",
                self.admin_listen
            )));
        }
        if self.listen.port() != 0 && self.listen == self.admin_listen {
            return Err(ProxyError::Config(format!(
                "the data port and the admin port are both {}: give the admin API its own port",
                self.listen
            )));
        }
        if self.pin_token.expose().is_empty() {
            return Err(ProxyError::Config(
                "the pin token is empty: set one (or generate one with PinToken::generate)".into(),
            ));
        }
        if self.pin_header == self.proof_header || self.pin_header == self.arm_header {
            return Err(ProxyError::Config(format!(
                "the pin header `{}` must differ from the proof and arm headers",
                self.pin_header
            )));
        }
        if self.admin_token.0.is_empty() {
            return Err(ProxyError::Config(
                "the admin token is empty: set one (or generate one with AdminToken::generate)"
                    .into(),
            ));
        }
        let t = &self.timeouts;
        for (name, value) in [
            ("connect timeout", t.connect),
            ("response head timeout", t.response_head),
            ("idle timeout", t.idle),
            ("client body timeout", t.client_body),
            ("health-check interval", self.health.interval),
            ("health-check timeout", self.health.timeout),
        ] {
            if value.is_zero() {
                return Err(ProxyError::Config(format!(
                    "the {name} must be longer than zero"
                )));
            }
        }
        if self.pin_threads && self.workers == 0 {
            return Err(ProxyError::Config(
                "pinning threads needs data-path threads: set at least one (--threads 1 or more)"
                    .into(),
            ));
        }
        if self.health.fall == 0 || self.health.rise == 0 {
            return Err(ProxyError::Config(
                "health-check `fall` and `rise` must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Upstream and client timeouts. None of them bounds a whole response: a stream may run for as
/// long as it keeps sending within `idle`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Connecting to an upstream (TCP). Exceeded → 504.
    pub connect: Duration,
    /// From sending the request (its body included) to receiving the response head; also the
    /// longest an upstream may take none of the request. Exceeded → 504. Time spent waiting
    /// for the client's body does not count.
    pub response_head: Duration,
    /// Longest silence allowed between two body chunks of a response (a stream's heartbeat
    /// budget). Exceeded → the stream is cut and counted as `timeout`. Default 15 minutes, so a
    /// stream that is quiet for 10 minutes survives.
    pub idle: Duration,
    /// Longest silence allowed between two pieces of a client's request body. Exceeded → 408,
    /// blamed on the client. Default 60 seconds, as nginx's `client_body_timeout`.
    pub client_body: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(2),
            response_head: Duration::from_secs(30),
            idle: Duration::from_secs(15 * 60),
            client_body: Duration::from_secs(60),
        }
    }
}

/// Active health checks: `GET <upstream><path>` every `interval`; 2xx is a pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// Path probed on each upstream (appended to the upstream's path prefix).
    pub path: String,
    /// Time between two probes of one arm.
    pub interval: Duration,
    /// Time a probe may take.
    pub timeout: Duration,
    /// Consecutive failures that make a healthy arm unhealthy.
    pub fall: u32,
    /// Consecutive passes that make an unhealthy arm healthy again.
    pub rise: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            path: "/healthz".into(),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            fall: 2,
            rise: 1,
        }
    }
}

/// An arm's upstream: a plain-HTTP origin with an optional path prefix, such as
/// `http://127.0.0.1:8081` or `http://10.0.0.7:8080/relay`.
#[derive(Clone, PartialEq, Eq)]
pub struct Upstream {
    authority: Authority,
    prefix: String,
}

impl Upstream {
    /// Parses an upstream URL. Only `http://` is supported: the proxy speaks plain HTTP to its
    /// arms (put TLS in front of the proxy, not behind it). Query strings and fragments are
    /// refused.
    pub fn parse(url: &str) -> Result<Self, ProxyError> {
        let invalid = |why: &str| ProxyError::InvalidUpstream {
            url: url.to_owned(),
            reason: why.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
        match uri.scheme() {
            Some(s) if *s == Scheme::HTTP => {}
            Some(_) => return Err(invalid("only http:// upstreams are supported")),
            None => return Err(invalid("give a full URL such as http://127.0.0.1:8080")),
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| invalid("the URL has no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("credentials in the upstream URL are not supported"));
        }
        if uri.query().is_some() {
            return Err(invalid("an upstream URL cannot carry a query string"));
        }
        let prefix = uri.path().trim_end_matches('/').to_owned();
        Ok(Upstream { authority, prefix })
    }

    /// `host:port` of the upstream.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// `host:port` to connect to (port 80 when the URL names none).
    pub(crate) fn dial_target(&self) -> String {
        let host = self.authority.host();
        let port = self.authority.port_u16().unwrap_or(80);
        if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    }

    /// The origin-form request target (`/prefix/path?query`) for `path_and_query`.
    pub(crate) fn origin_form(
        &self,
        path_and_query: Option<&PathAndQuery>,
    ) -> Result<Uri, http::Error> {
        let pq = match (self.prefix.is_empty(), path_and_query) {
            (true, Some(pq)) => pq.clone(),
            (true, None) => PathAndQuery::from_static("/"),
            (false, pq) => PathAndQuery::try_from(format!(
                "{}{}",
                self.prefix,
                pq.map_or("/", PathAndQuery::as_str)
            ))?,
        };
        Ok(Uri::from(pq))
    }

    /// The URI a request for `path_and_query` is sent to on this upstream.
    pub(crate) fn uri_for(
        &self,
        path_and_query: Option<&PathAndQuery>,
    ) -> Result<Uri, http::Error> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(self.authority.clone());
        let original = path_and_query.map_or("/", PathAndQuery::as_str);
        parts.path_and_query = Some(if self.prefix.is_empty() {
            match path_and_query {
                Some(pq) => pq.clone(),
                None => PathAndQuery::from_static("/"),
            }
        } else {
            let joined = format!("{}{}", self.prefix, original);
            PathAndQuery::try_from(joined)?
        });
        Ok(Uri::from_parts(parts)?)
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority, self.prefix)
    }
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Upstream({self})")
    }
}

/// The admin API's bearer token. Never printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// Wraps a token given by the operator.
    pub fn new(token: impl Into<String>) -> Self {
        AdminToken(token.into())
    }

    /// A fresh random token (256 bits, hex) for a proxy whose operator gave none.
    pub fn generate() -> Self {
        AdminToken(random_hex())
    }

    /// The token itself, for handing to the controller. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether an `Authorization` header value carries this token, compared in constant time.
    pub(crate) fn authorizes(&self, header: Option<&[u8]>) -> bool {
        header
            .and_then(|h| h.strip_prefix(b"Bearer "))
            .is_some_and(|presented| constant_time_eq(presented, self.0.as_bytes()))
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

impl fmt::Display for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_resolve_request_paths() {
        let plain = Upstream::parse("http://127.0.0.1:8081").unwrap();
        let pq = PathAndQuery::from_static("/api/v1/memory/query?x=1");
        assert_eq!(
            plain.uri_for(Some(&pq)).unwrap().to_string(),
            "http://127.0.0.1:8081/api/v1/memory/query?x=1"
        );
        let prefixed = Upstream::parse("http://relay:8080/r1/").unwrap();
        assert_eq!(
            prefixed.uri_for(Some(&pq)).unwrap().to_string(),
            "http://relay:8080/r1/api/v1/memory/query?x=1"
        );
        assert_eq!(prefixed.to_string(), "http://relay:8080/r1");
        assert_eq!(
            prefixed.origin_form(Some(&pq)).unwrap().to_string(),
            "/r1/api/v1/memory/query?x=1"
        );
        assert_eq!(plain.origin_form(None).unwrap().to_string(), "/");
        assert_eq!(prefixed.dial_target(), "relay:8080");
        assert_eq!(
            Upstream::parse("http://[::1]/").unwrap().dial_target(),
            "[::1]:80"
        );
    }

    #[test]
    fn unsupported_upstreams_say_why() {
        for (url, why) in [
            ("https://a:1", "only http://"),
            ("127.0.0.1:80", "full URL"),
            ("http://u:p@a:1", "credentials"),
            ("http://a:1/?q", "query string"),
        ] {
            let err = Upstream::parse(url).unwrap_err().to_string();
            assert!(err.contains(why), "{url}: {err}");
        }
    }

    #[test]
    fn admin_token_is_never_printed_and_compares_exactly() {
        let token = AdminToken::new("s3cret-value");
        assert_eq!(format!("{token:?} {token}"), "AdminToken(***) ***");
        assert!(token.authorizes(Some(b"Bearer s3cret-value")));
        assert!(!token.authorizes(Some(b"Bearer s3cret-valuf")));
        assert!(!token.authorizes(Some(b"s3cret-value")));
        assert!(!token.authorizes(None));
        let generated = AdminToken::generate();
        assert_eq!(generated.expose().len(), 64);
        assert_ne!(generated, AdminToken::generate());
    }

    fn loopback_config() -> ProxyConfig {
        ProxyConfig::new(
            Upstream::parse("http://127.0.0.1:1").unwrap(),
            Upstream::parse("http://127.0.0.1:2").unwrap(),
            AdminToken::new("t"),
        )
    }

    #[test]
    fn validation_refuses_a_public_admin_port() {
        let mut cfg = loopback_config();
        assert!(cfg.validate().is_ok());
        cfg.admin_listen = "0.0.0.0:9000".parse().unwrap();
        assert!(cfg.validate().unwrap_err().to_string().contains("loopback"));
    }

    #[test]
    fn pinning_without_data_path_threads_is_refused() {
        let mut cfg = loopback_config();
        cfg.pin_threads = true;
        cfg.workers = 1;
        assert!(cfg.validate().is_ok());
        cfg.workers = 0;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("--threads 1 or more"), "{err}");
    }
}
