//! Header rules of a forwarding proxy: RFC 9110 §7.6.1 hop-by-hop removal, `X-Forwarded-*`,
//! `Via`, RFC 9112 §3.2 `Host` rules, and recognising event streams.

use std::net::IpAddr;

use http::Version;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Uri};

/// Headers that describe one connection, never the message (RFC 9110 §7.6.1, plus the
/// non-standard `Proxy-Connection` and `Keep-Alive` that HTTP/1.0 clients still send).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(crate) const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");
const VIA_VALUE: &str = "1.1 canary";

/// The comma-separated items of every `name` field, trimmed, in order (RFC 9110 §5.6.1 lists;
/// values that are not visible ASCII are skipped).
pub(crate) fn tokens<'a>(
    headers: &'a HeaderMap,
    name: &'a HeaderName,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// Removes the hop-by-hop headers, including every header the `Connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = tokens(headers, &header::CONNECTION)
            .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Why a request's `Host` makes it unfit to forward (RFC 9112 §3.2: answered with 400), or
/// `None`: more than one `Host` line, a value that is not `host[:port]`, or none at all on
/// HTTP/1.1. HTTP/1.0 may leave it out, and HTTP/2 names its authority in `:authority`.
pub(crate) fn host_problem(version: Version, headers: &HeaderMap) -> Option<&'static str> {
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Some("more than one Host header"),
        (Some(host), None) if !is_host(host.as_bytes()) => {
            Some("the Host header is not host[:port]")
        }
        (None, _) if version == Version::HTTP_11 => Some("an HTTP/1.1 request without Host"),
        _ => None,
    }
}

/// `uri-host [":" port]` (RFC 9110 §7.2; no user info), or empty, which RFC 9112 §3.2 allows
/// for a target without an authority.
fn is_host(value: &[u8]) -> bool {
    if value.is_empty() {
        return true;
    }
    let Ok(authority) = Authority::try_from(value) else {
        return false;
    };
    // `Authority` takes user info and leaves the port unchecked.
    let after_host = &authority.as_str()[authority.host().len()..];
    !value.contains(&b'@')
        && after_host
            .strip_prefix(':')
            .map_or(after_host.is_empty(), |port| {
                port.bytes().all(|b| b.is_ascii_digit())
            })
}

/// The host the client asked for, kept in `X-Forwarded-Host`: the request target's own
/// authority when it has one (absolute-form, where RFC 9112 §3.2.2 says `Host` is ignored, or
/// HTTP/2's `:authority`), else `Host`.
pub(crate) fn original_host(uri: &Uri, headers: &HeaderMap) -> Option<HeaderValue> {
    uri.authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        .or_else(|| headers.get(header::HOST).cloned())
}

/// Prepares the headers of a request about to go upstream: hop-by-hop removed, the client's
/// address appended to `X-Forwarded-For`, `X-Forwarded-Proto: http`, the original host kept in
/// `X-Forwarded-Host` (the `Host` header itself becomes the upstream's), and `Via` extended.
pub(crate) fn prepare_request(
    headers: &mut HeaderMap,
    client: IpAddr,
    original_host: Option<HeaderValue>,
) {
    strip_hop_by_hop(headers);
    let client = client.to_string();
    let forwarded_for = match headers.get(&X_FORWARDED_FOR).map(HeaderValue::to_str) {
        Some(Ok(existing)) if !existing.trim().is_empty() => format!("{existing}, {client}"),
        _ => client,
    };
    if let Ok(value) = HeaderValue::try_from(forwarded_for) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    if let Some(host) = original_host
        && !headers.contains_key(&X_FORWARDED_HOST)
    {
        headers.insert(X_FORWARDED_HOST, host);
    }
    headers.remove(header::HOST);
    append_via(headers);
}

/// Prepares the headers of a response about to go to the client: hop-by-hop removed, `Via`
/// extended, and `X-Accel-Buffering: no` on event streams so buffering proxies in front pass
/// each event through. Returns whether the response is an event stream.
pub(crate) fn prepare_response(headers: &mut HeaderMap) -> bool {
    strip_hop_by_hop(headers);
    append_via(headers);
    let event_stream = is_event_stream(headers);
    if event_stream {
        headers.insert(X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
    }
    event_stream
}

fn append_via(headers: &mut HeaderMap) {
    headers.append(header::VIA, HeaderValue::from_static(VIA_VALUE));
}

/// Whether `Content-Type` is `text/event-stream` (parameters ignored).
pub(crate) fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("text/event-stream"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn hop_by_hop_headers_and_connection_named_ones_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Session-Hop"),
            ("x-session-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-connection", "keep-alive"),
            ("authorization", "Bearer u1"),
            ("content-length", "10"),
        ]);
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["authorization", "content-length"]);
    }

    #[test]
    fn forwarding_headers_are_appended() {
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("host", "relay.example"),
        ]);
        let host = h.get(header::HOST).cloned();
        prepare_request(&mut h, "127.0.0.1".parse().unwrap(), host);
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "relay.example");
        assert_eq!(h["via"], "1.1 canary");
        assert!(!h.contains_key(header::HOST));
    }

    #[test]
    fn host_follows_rfc_9112() {
        const HTTP_10: Version = Version::HTTP_10;
        const HTTP_11: Version = Version::HTTP_11;
        const HTTP_2: Version = Version::HTTP_2;
        // (version, Host lines, refused)
        #[rustfmt::skip]
        let cases: [(Version, &[&str], bool); 17] = [
            (HTTP_11, &["relay.example"], false),
            (HTTP_11, &["relay.example:8080"], false),
            (HTTP_11, &["127.0.0.1:80"], false),
            (HTTP_11, &["[::1]:8080"], false),
            (HTTP_11, &[""], false),
            (HTTP_10, &[], false),
            (HTTP_2, &[], false),
            (HTTP_11, &[], true),
            (HTTP_11, &["a", "b"], true),
            (HTTP_11, &["a", "a"], true),
            (HTTP_10, &["a", "b"], true),
            (HTTP_11, &["a b"], true),
            (HTTP_11, &["user@relay.example"], true),
            (HTTP_11, &["relay.example/path"], true),
            (HTTP_11, &["relay.example:80x"], true),
            (HTTP_11, &["[::1"], true),
            (HTTP_2, &["a", "b"], true),
        ];
        for (version, hosts, refused) in cases {
            let mut headers = HeaderMap::new();
            for host in hosts {
                headers.append(header::HOST, HeaderValue::from_str(host).unwrap());
            }
            assert_eq!(
                host_problem(version, &headers).is_some(),
                refused,
                "{version:?} {hosts:?}"
            );
        }
    }

    #[test]
    fn the_original_host_is_the_targets_authority_first() {
        let headers = map(&[("host", "from-host")]);
        let absolute: Uri = "http://from-target:8080/q".parse().unwrap();
        let origin: Uri = "/q".parse().unwrap();
        assert_eq!(
            original_host(&absolute, &headers).unwrap(),
            "from-target:8080"
        );
        assert_eq!(original_host(&origin, &headers).unwrap(), "from-host");
        assert_eq!(original_host(&origin, &HeaderMap::new()), None);
    }

    #[test]
    fn event_streams_get_no_buffering() {
        let mut sse = map(&[("content-type", "text/event-stream; charset=utf-8")]);
        assert!(prepare_response(&mut sse));
        assert_eq!(sse["x-accel-buffering"], "no");
        let mut json = map(&[("content-type", "application/json")]);
        assert!(!prepare_response(&mut json));
        assert!(!json.contains_key("x-accel-buffering"));
    }
}
