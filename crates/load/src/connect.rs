//! Connections to a target: plain TCP or TLS, HTTP/1.1 with keep-alive. Each connection's I/O
//! runs on a task of its own on the caller's runtime; dropping the [`Link`] ends that task at
//! once (a timed-out or cut request never leaves a connection behind).
//!
//! (Driving the connection inside the requesting task instead, selecting over both, measured
//! about 8 % slower on single-threaded runtimes: see docs/benchmarks/load.md.)

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;
use http_body_util::Full;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use crate::error::LoadError;

/// The body type every request uses: one buffer, shared, never copied.
pub(crate) type RequestBody = Full<Bytes>;

/// Where requests go: scheme, host, port and path prefix of a base URL.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub url: String,
    tls: bool,
    /// Host to connect to (IPv6 without brackets) and to name in TLS.
    host: String,
    port: u16,
    /// The `Host` header.
    pub authority: HeaderValue,
    /// Path prefix without a trailing slash.
    base_path: String,
}

impl Endpoint {
    /// Parses `http://host[:port][/prefix]` or `https://...`.
    pub fn parse(url: &str) -> Result<Self, LoadError> {
        let invalid = |reason: &str| LoadError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| {
            invalid(&format!(
                "{e}; write a URL such as https://relay.example.com"
            ))
        })?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(_) => return Err(invalid("only http:// and https:// are supported")),
            None => return Err(invalid("give a full URL such as https://relay.example.com")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| invalid("the URL has no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid(
                "credentials in the URL are not supported: users' tokens travel in headers",
            ));
        }
        if uri.query().is_some() {
            return Err(invalid(
                "the base URL cannot carry a query string: put it in the path",
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let header = HeaderValue::from_str(authority.as_str())
            .map_err(|_| invalid("the host is not a valid Host header"))?;
        Ok(Endpoint {
            url: url.to_owned(),
            tls,
            host,
            port,
            authority: header,
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The origin-form request target for `path` under this endpoint's prefix.
    pub fn uri(&self, path: &str) -> Result<http::Uri, LoadError> {
        let slash = if path.starts_with('/') { "" } else { "/" };
        let target = format!("{}{slash}{path}", self.base_path);
        target
            .parse()
            .map_err(|e: http::uri::InvalidUri| LoadError::InvalidUrl {
                url: format!("{}{slash}{path}", self.url.trim_end_matches('/')),
                reason: format!("the request path is not valid: {e}"),
            })
    }
}

/// Why a connection could not be opened.
#[derive(Debug)]
pub(crate) enum ConnectFailure {
    /// TCP: refused, unreachable, name not resolved.
    Tcp,
    /// The TLS handshake failed (certificate, protocol).
    Tls,
    /// The HTTP/1.1 connection could not be set up.
    Http,
}

/// Opens connections to one endpoint; cheap to clone.
#[derive(Clone)]
pub(crate) struct Connector {
    endpoint: Arc<Endpoint>,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Connector {
    /// A connector for `endpoint`; for `https://` with the platform's trust store.
    pub fn new(endpoint: Endpoint) -> Result<Self, LoadError> {
        let tls = if endpoint.tls {
            let fail = |e: rustls::Error| LoadError::Tls {
                url: endpoint.url.clone(),
                reason: e.to_string(),
            };
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(fail)?;
            use rustls_platform_verifier::BuilderVerifierExt;
            let mut config = config
                .with_platform_verifier()
                .map_err(fail)?
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
        } else {
            None
        };
        Ok(Connector {
            endpoint: Arc::new(endpoint),
            tls,
        })
    }

    /// Opens one keep-alive connection.
    pub async fn connect(&self) -> Result<Link, ConnectFailure> {
        let ep = &self.endpoint;
        let tcp = TcpStream::connect((ep.host.as_str(), ep.port))
            .await
            .map_err(|error| {
                tracing::debug!(url = %ep.url, %error, "connect failed");
                ConnectFailure::Tcp
            })?;
        // Requests are small and latency is what is measured: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        let builder = http1::Builder::new();
        let (sender, io) = match &self.tls {
            None => {
                let (sender, conn) = builder
                    .handshake(TokioIo::new(tcp))
                    .await
                    .map_err(|_| ConnectFailure::Http)?;
                (sender, tokio::spawn(conn))
            }
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(ep.host.clone())
                    .map_err(|_| ConnectFailure::Tls)?;
                let stream = tls.connect(name, tcp).await.map_err(|error| {
                    tracing::debug!(url = %ep.url, %error, "TLS handshake failed");
                    ConnectFailure::Tls
                })?;
                let (sender, conn) = builder
                    .handshake(TokioIo::new(stream))
                    .await
                    .map_err(|_| ConnectFailure::Http)?;
                (sender, tokio::spawn(conn))
            }
        };
        Ok(Link {
            sender,
            io: io.abort_handle(),
        })
    }
}

/// One open connection: the handle requests are sent on, and its I/O task (ended when the
/// link is dropped).
pub(crate) struct Link {
    pub sender: SendRequest<RequestBody>,
    io: tokio::task::AbortHandle,
}

impl Link {
    /// Whether another request may be sent on this connection.
    pub fn is_open(&self) -> bool {
        !self.sender.is_closed()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.io.abort();
    }
}
