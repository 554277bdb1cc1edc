//! A client request made into the request the origin will receive, before
//! anything else reads it.
//!
//! Order matters, and is the point of this module: hop-by-hop fields and the
//! fields `Connection` names are removed **first**, the framing is checked, the
//! target is normalised, and the forwarding fields are set; only then do the
//! cache key and the `Vary` secondary key get computed — from exactly what is
//! forwarded, so no client can key one request and send the origin another.

use std::net::{IpAddr, SocketAddr};

use herdguard_http::key::normalize_host;
use herdguard_http::{RequestTarget, TargetError};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request};
use ipnet::IpNet;

/// Why a request is refused before it reaches the origin (each is a 4xx).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The head is larger than the limit (431).
    HeadTooLarge,
    /// A body on a method without body semantics (400): forwarding it, or
    /// dropping it but not its framing, desynchronises the origin connection.
    UnexpectedBody,
    /// A bad request target (400).
    Target(TargetError),
    /// A missing, repeated or invalid `Host` (400).
    Host,
    /// A method a reverse proxy does not forward (405).
    Method,
    /// The announced body is larger than the limit (413).
    BodyTooLarge,
}

/// How forwarding fields are made (RFC 7239 `Forwarded`, the de-facto `X-Forwarded-*`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Forwarding {
    /// Peers whose `Forwarded` / `X-Forwarded-*` fields are kept and extended; from
    /// anyone else they are dropped, since the origin trusts what the proxy sends.
    pub trusted: Vec<IpNet>,
}

/// Client-sent fields that claim where a request came from.
const FORWARDING_FIELDS: [&str; 6] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-real-ip",
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const VIA_VALUE: HeaderValue = HeaderValue::from_static("1.1 herdguard");

/// A request ready to forward: normalised target, key host, and the exact
/// header fields the origin will get (before `Host`, which the origin client sets).
pub(crate) struct Inbound<B> {
    pub method: Method,
    pub target: RequestTarget,
    /// The normalised `Host` (for the cache key).
    pub host: String,
    pub headers: HeaderMap,
    /// The body, for methods that may have one.
    pub body: B,
}

/// Methods whose request body has no defined meaning (RFC 9110 §9.3): a body on
/// them is refused rather than forwarded or half-dropped.
fn forbids_body(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE | Method::TRACE
    )
}

/// Makes `request` from `peer` into the request to forward, or refuses it.
pub(crate) fn prepare<B>(
    request: Request<B>,
    peer: SocketAddr,
    forwarding: &Forwarding,
    max_header_bytes: usize,
    max_body_bytes: usize,
    default_host: &str,
) -> Result<Inbound<B>, Refusal>
where
    B: hyper::body::Body,
{
    let (parts, body) = request.into_parts();
    let mut headers = parts.headers;
    // hyper bounds its read buffer, not the head itself: count the fields too.
    let head_bytes: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if head_bytes > max_header_bytes {
        return Err(Refusal::HeadTooLarge);
    }
    if parts.method == Method::CONNECT || parts.method == Method::TRACE {
        return Err(Refusal::Method);
    }
    // Framing first, from the fields as received (hyper has already checked they agree).
    let announced = content_length(&headers);
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    if forbids_body(&parts.method) && (chunked || announced.is_some_and(|n| n > 0)) {
        return Err(Refusal::UnexpectedBody);
    }
    if announced.is_some_and(|n| n > max_body_bytes as u64) {
        return Err(Refusal::BodyTooLarge);
    }
    // Then hop-by-hop fields, before anything reads the request.
    herdguard_http::hop::remove_hop_by_hop(&mut headers);
    // Framing is remade by the origin client from the body; `Expect` is this hop's.
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::EXPECT);
    let host = request_host(&parts.uri, &headers, default_host)?;
    let raw_target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let target = RequestTarget::parse(raw_target).map_err(Refusal::Target)?;
    set_forwarding_fields(&mut headers, peer.ip(), &host, forwarding);
    Ok(Inbound {
        method: parts.method,
        target,
        host,
        headers,
        body,
    })
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The authority of the absolute-form target, else the single `Host` field, else
/// the origin's (an HTTP/1.0 client may send none).
fn request_host(
    uri: &http::Uri,
    headers: &HeaderMap,
    default_host: &str,
) -> Result<String, Refusal> {
    if let Some(authority) = uri.authority() {
        return normalize_host(authority.as_str()).ok_or(Refusal::Host);
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) => Ok(default_host.to_string()),
        (Some(h), None) => h
            .to_str()
            .ok()
            .and_then(normalize_host)
            .ok_or(Refusal::Host),
        (Some(_), Some(_)) => Err(Refusal::Host),
    }
}

fn is_trusted(peer: IpAddr, forwarding: &Forwarding) -> bool {
    let peer = match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
        v4 => v4,
    };
    forwarding.trusted.iter().any(|net| net.contains(&peer))
}

/// `X-Forwarded-For` (the peer appended), `-Host`, `-Proto` and `Via`, from this
/// proxy's view; a trusted peer's own fields are kept and extended.
fn set_forwarding_fields(
    headers: &mut HeaderMap,
    peer: IpAddr,
    host: &str,
    forwarding: &Forwarding,
) {
    let trusted = !forwarding.trusted.is_empty() && is_trusted(peer, forwarding);
    let peer_text = peer.to_string();
    if trusted {
        let prior: Vec<String> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        let chain = if prior.is_empty() {
            peer_text
        } else {
            format!("{}, {peer_text}", prior.join(", "))
        };
        if let Ok(v) = HeaderValue::from_str(&chain) {
            headers.insert(X_FORWARDED_FOR.clone(), v);
        }
    } else {
        for name in FORWARDING_FIELDS {
            headers.remove(name);
        }
        if let Ok(v) = HeaderValue::from_str(&peer_text) {
            headers.insert(X_FORWARDED_FOR.clone(), v);
        }
    }
    if !headers.contains_key(&X_FORWARDED_HOST) {
        if let Ok(v) = HeaderValue::from_str(host) {
            headers.insert(X_FORWARDED_HOST.clone(), v);
        }
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    }
    headers.append(header::VIA, VIA_VALUE);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(
        method: &str,
        target: &str,
        fields: &[(&str, &str)],
    ) -> Request<http_body_util::Empty<bytes::Bytes>> {
        let mut r = Request::builder().method(method).uri(target);
        for (k, v) in fields {
            r = r.header(*k, *v);
        }
        r.body(http_body_util::Empty::new()).unwrap()
    }

    fn run(
        r: Request<http_body_util::Empty<bytes::Bytes>>,
        trusted: &[&str],
    ) -> Result<Inbound<http_body_util::Empty<bytes::Bytes>>, Refusal> {
        let forwarding = Forwarding {
            trusted: trusted.iter().map(|t| t.parse().unwrap()).collect(),
        };
        prepare(
            r,
            "10.1.2.3:5555".parse().unwrap(),
            &forwarding,
            65536,
            1 << 20,
            "origin",
        )
    }

    #[test]
    fn connection_named_fields_are_gone_before_the_key_is_made() {
        let i = run(
            req(
                "GET",
                "/a/../b",
                &[
                    ("host", "API.example"),
                    ("accept", "json"),
                    ("connection", "accept, close"),
                ],
            ),
            &[],
        )
        .unwrap();
        assert_eq!(i.target.as_str(), "/b");
        assert_eq!(i.host, "api.example");
        assert!(!i.headers.contains_key("accept"));
        assert!(!i.headers.contains_key("connection"));
    }

    #[test]
    fn bodies_on_get_head_options_delete_are_refused() {
        for m in ["GET", "HEAD", "OPTIONS", "DELETE"] {
            assert_eq!(
                run(req(m, "/", &[("host", "a"), ("content-length", "3")]), &[]).err(),
                Some(Refusal::UnexpectedBody),
                "{m}"
            );
            assert_eq!(
                run(
                    req(m, "/", &[("host", "a"), ("transfer-encoding", "chunked")]),
                    &[]
                )
                .err(),
                Some(Refusal::UnexpectedBody)
            );
            assert!(run(req(m, "/", &[("host", "a"), ("content-length", "0")]), &[]).is_ok());
        }
        assert!(run(
            req("POST", "/", &[("host", "a"), ("content-length", "3")]),
            &[]
        )
        .is_ok());
        assert_eq!(
            run(
                req("POST", "/", &[("host", "a"), ("content-length", "9999999")]),
                &[]
            )
            .err(),
            Some(Refusal::BodyTooLarge)
        );
    }

    #[test]
    fn hosts_and_methods() {
        assert_eq!(
            run(req("GET", "/", &[("host", "a"), ("host", "b")]), &[]).err(),
            Some(Refusal::Host)
        );
        assert_eq!(
            run(req("GET", "/", &[("host", "u@a")]), &[]).err(),
            Some(Refusal::Host)
        );
        assert_eq!(run(req("GET", "/", &[]), &[]).unwrap().host, "origin");
        assert_eq!(
            run(req("TRACE", "/", &[("host", "a")]), &[]).err(),
            Some(Refusal::Method)
        );
    }

    #[test]
    fn forwarding_fields_trusted_or_not() {
        let spoof = [
            ("host", "a"),
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-host", "evil"),
        ];
        let i = run(req("GET", "/", &spoof), &[]).unwrap();
        assert_eq!(i.headers.get("x-forwarded-for").unwrap(), "10.1.2.3");
        assert_eq!(i.headers.get("x-forwarded-host").unwrap(), "a");
        assert!(!i.headers.contains_key("forwarded"));
        assert_eq!(i.headers.get("via").unwrap(), "1.1 herdguard");
        let i = run(req("GET", "/", &spoof), &["10.0.0.0/8"]).unwrap();
        assert_eq!(
            i.headers.get("x-forwarded-for").unwrap(),
            "6.6.6.6, 10.1.2.3"
        );
        assert_eq!(i.headers.get("x-forwarded-host").unwrap(), "evil");
        assert!(i.headers.contains_key("forwarded"));
        let i = run(req("GET", "/", &spoof), &["192.168.0.0/16"]).unwrap();
        assert_eq!(i.headers.get("x-forwarded-for").unwrap(), "10.1.2.3");
    }
}
