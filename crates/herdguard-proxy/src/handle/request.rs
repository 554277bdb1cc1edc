//! A client request made into the request the origin will receive, before
//! anything else reads it.
//!
//! Order matters, and is the point of this module: hop-by-hop fields and the
//! fields `Connection` names are removed **first**, the framing is checked, the
//! target is normalised, and the forwarding fields are set; only then do the
//! cache key and the `Vary` secondary key get computed — from exactly what is
//! forwarded, so no client can key one request and send the origin another.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use herdguard_http::hop::is_hop_by_hop;
use herdguard_http::key::{normal_host, normalize_host};
use herdguard_http::{RequestTarget, TargetError, Vary};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request};
use ipnet::IpNet;

use crate::origin::InterimHook;

/// Why a request is refused before it reaches the origin (each is a 4xx).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The head is larger than the limit (431).
    HeadTooLarge,
    /// A body on `GET`, `HEAD` (400; `forbids_body` says why): forwarding it,
    /// or dropping it but not its framing, desynchronises the origin connection.
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
    /// Whether the origin gets the client's host as `X-Forwarded-Host` (`forward_host`,
    /// which puts the host in the cache key). Otherwise no `X-Forwarded-Host` reaches
    /// it, not even a trusted peer's: the origin never sees a host the key leaves out.
    pub host: bool,
}

/// The client end of a connection, as the forwarding fields show it: worked
/// out once per connection, not per request.
#[derive(Clone, Debug)]
pub struct Peer {
    /// Whether its own forwarding fields are kept.
    trusted: bool,
    /// Whether the origin gets the client's host as `X-Forwarded-Host`.
    forward_host: bool,
    /// Its address as an `X-Forwarded-For` member.
    address: HeaderValue,
    /// Whether it came over TLS (the `X-Forwarded-Proto` this proxy sets).
    https: bool,
}

impl Peer {
    pub(crate) fn new(addr: SocketAddr, forwarding: &Forwarding) -> Peer {
        let ip = match addr.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        Peer {
            trusted: forwarding.trusted.iter().any(|net| net.contains(&ip)),
            forward_host: forwarding.host,
            address: HeaderValue::from_str(&ip.to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            https: false,
        }
    }

    /// The same peer on the TLS listener.
    pub(crate) fn over_tls(self) -> Peer {
        Peer {
            https: true,
            ..self
        }
    }

    fn proto(&self) -> HeaderValue {
        HeaderValue::from_static(if self.https { "https" } else { "http" })
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const VIA_VALUE: HeaderValue = HeaderValue::from_static("1.1 herdguard");

/// What one pass over the field names found (most requests have none of these,
/// and then nothing is removed).
#[derive(Default)]
struct Found {
    head_bytes: usize,
    hop_by_hop: bool,
    forwarding: bool,
    framing: bool,
    chunked: bool,
    present: Present,
}

/// Fields the cache path asks about, noted in the one pass over the fields
/// rather than looked up by name one by one.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Present {
    /// `Authorization`.
    pub authorization: bool,
    /// `Range`.
    pub range: bool,
    /// `If-None-Match` or `If-Modified-Since`.
    pub conditional: bool,
    /// `Cache-Control` or `Pragma`: without either, the request has no cache
    /// directives, and they are not parsed.
    pub directives: bool,
}

impl Present {
    fn of(headers: &HeaderMap) -> Present {
        Present {
            authorization: headers.contains_key(header::AUTHORIZATION),
            range: headers.contains_key(header::RANGE),
            conditional: headers.contains_key(header::IF_NONE_MATCH)
                || headers.contains_key(header::IF_MODIFIED_SINCE),
            directives: headers.contains_key(header::CACHE_CONTROL)
                || headers.contains_key(header::PRAGMA),
        }
    }
}

fn scan(headers: &HeaderMap) -> Found {
    let mut found = Found::default();
    for (name, value) in headers {
        found.head_bytes += name.as_str().len() + value.len() + 4;
        match name.as_str() {
            "forwarded" | "x-forwarded-for" | "x-forwarded-host" | "x-forwarded-proto"
            | "x-forwarded-port" | "x-real-ip" => found.forwarding = true,
            "content-length" | "expect" => found.framing = true,
            "authorization" => found.present.authorization = true,
            "range" => found.present.range = true,
            "if-none-match" | "if-modified-since" => found.present.conditional = true,
            "cache-control" | "pragma" => found.present.directives = true,
            other => {
                found.chunked |= other == "transfer-encoding";
                found.hop_by_hop |= is_hop_by_hop(other);
            }
        }
    }
    found
}

/// The forwarding fields this proxy adds (`X-Forwarded-For`, `-Host`, `-Proto`,
/// `Via`): made only when a request is sent, so a hit never builds them.
#[derive(Clone, Debug)]
struct Added {
    forwarded_for: HeaderValue,
    /// The `X-Forwarded-Host` set: the key's host (`None` unless `forward_host`).
    host: Option<HeaderValue>,
    /// The `X-Forwarded-Proto` set (`None` when a trusted peer sent one).
    proto: Option<HeaderValue>,
    /// The `Host` the origin gets when the client's is kept (`keep_client_host`):
    /// the normalised host of the cache key; `None`: the origin's own.
    origin_host: Option<HeaderValue>,
}

impl Added {
    fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(X_FORWARDED_FOR.clone(), self.forwarded_for.clone());
        if let Some(host) = &self.host {
            headers.insert(X_FORWARDED_HOST.clone(), host.clone());
        }
        if let Some(proto) = &self.proto {
            headers.insert(X_FORWARDED_PROTO.clone(), proto.clone());
        }
        headers.append(header::VIA, VIA_VALUE);
        if let Some(host) = &self.origin_host {
            headers.insert(header::HOST, host.clone());
        }
    }

    fn names(name: &HeaderName) -> bool {
        *name == X_FORWARDED_FOR
            || *name == X_FORWARDED_HOST
            || *name == X_FORWARDED_PROTO
            || *name == header::VIA
    }
}

/// The client's host, normalised: the `Host` (or, from a trusted peer with
/// `forward_host`, its `X-Forwarded-Host`), as the cache key takes it and as
/// the origin sees it when it sees one.
#[derive(Clone, Debug)]
pub(crate) enum KeyHost {
    /// The request's own `Host` value, in normal form already: kept, not copied.
    Field(HeaderValue),
    /// Normalised from another form, or from elsewhere.
    Made(String),
}

impl KeyHost {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            // Visible ASCII: checked when it was taken.
            KeyHost::Field(value) => std::str::from_utf8(value.as_bytes()).unwrap_or(""),
            KeyHost::Made(host) => host,
        }
    }

    fn to_value(&self) -> Option<HeaderValue> {
        match self {
            KeyHost::Field(value) => Some(value.clone()),
            KeyHost::Made(host) => HeaderValue::from_str(host).ok(),
        }
    }
}

impl AsRef<str> for KeyHost {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<&str> for KeyHost {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A request as it is forwarded: normalised target, and the client's fields
/// (hop-by-hop and untrusted forwarding fields removed) plus the proxy's own.
pub(crate) struct Forward {
    pub target: RequestTarget,
    /// The client's fields as forwarded (without the proxy's additions).
    pub headers: HeaderMap,
    /// Which of the fields the cache path asks about `headers` holds.
    pub present: Present,
    /// The key's host.
    pub host: KeyHost,
    /// The client end, whose forwarding fields are added when the request is sent.
    peer: Arc<Peer>,
    /// The origin gets `host` as its `Host` (`keep_client_host`).
    keep_client_host: bool,
    /// Where the origin's interim (1xx) answers go: to this client's
    /// connection, when it takes them.
    pub interim: Option<InterimHook>,
}

impl Forward {
    /// The fields exactly as the origin receives them (`Host` aside, which the
    /// origin client sets).
    pub(crate) fn to_send(&self) -> HeaderMap {
        let mut headers = self.headers.clone();
        // The client's own `Host` never passes as it was sent: the origin gets
        // its own (the origin client's), or the normalised one of the key.
        headers.remove(header::HOST);
        let mut added = forwarding_fields(&self.headers, &self.peer, &self.host);
        if self.keep_client_host {
            added.origin_host = self.host.to_value();
        }
        added.apply(&mut headers);
        headers
    }

    /// The forwarded fields, for a secondary key under `vary`: borrowed, unless
    /// `vary` names a field the proxy adds.
    pub(crate) fn vary_view(&self, vary: &Vary) -> Cow<'_, HeaderMap> {
        match vary {
            Vary::Fields(names) if names.iter().any(Added::names) => Cow::Owned(self.to_send()),
            _ => Cow::Borrowed(&self.headers),
        }
    }
}

/// A request ready to forward, with its key host and, for methods that may have
/// one, its body.
pub(crate) struct Inbound<B> {
    pub method: Method,
    pub forward: Forward,
    pub body: B,
}

/// Methods a body is refused on rather than forwarded or half-dropped. `GET`
/// and `HEAD`: the cache answers them by a key that has no room for a body (RFC
/// 9110 §9.3.1: it "cannot alter the meaning or target of the request"), so one
/// would be answered from, or stored for, what another body asked; and a body
/// there is the classic request-smuggling vehicle through intermediaries that
/// ignore it. `TRACE` is refused whole. `DELETE` and `OPTIONS` bodies, which APIs
/// use (Elasticsearch, bulk deletes), pass uncached like any other method's.
fn forbids_body(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::TRACE)
}

/// Makes `request` from `peer` into the request to forward (its interim
/// answers going to `interim`), or refuses it.
pub(crate) fn prepare<B>(
    request: Request<B>,
    peer: &Arc<Peer>,
    interim: Option<InterimHook>,
    max_header_bytes: usize,
    max_body_bytes: usize,
    default_host: &str,
    keep_client_host: bool,
) -> Result<Inbound<B>, Refusal>
where
    B: hyper::body::Body,
{
    let (parts, body) = request.into_parts();
    let mut headers = parts.headers;
    let found = scan(&headers);
    // hyper bounds its read buffer, not the head itself: count the fields too.
    if found.head_bytes > max_header_bytes {
        return Err(Refusal::HeadTooLarge);
    }
    if parts.method == Method::CONNECT || parts.method == Method::TRACE {
        return Err(Refusal::Method);
    }
    // Framing first, from the fields as received (hyper has already checked they agree).
    let announced = if found.framing {
        content_length(&headers)
    } else {
        None
    };
    let chunked = found.chunked;
    if forbids_body(&parts.method) && (chunked || announced.is_some_and(|n| n > 0)) {
        return Err(Refusal::UnexpectedBody);
    }
    if announced.is_some_and(|n| n > max_body_bytes as u64) {
        return Err(Refusal::BodyTooLarge);
    }
    // Then hop-by-hop fields, before anything reads the request.
    let mut present = found.present;
    if found.hop_by_hop {
        herdguard_http::hop::remove_hop_by_hop(&mut headers);
        // `Connection` may have named any of them.
        present = Present::of(&headers);
    }
    // Framing is remade by the origin client from the body; `Expect` is this hop's.
    if found.framing {
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::EXPECT);
    }
    let forwarded = if peer.forward_host && peer.trusted && found.forwarding {
        forwarded_host(&headers)?
    } else {
        None
    };
    let host = match forwarded {
        Some(host) => KeyHost::Made(host),
        None => request_host(&parts.uri, &headers, default_host)?,
    };
    let raw_target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let target = RequestTarget::parse(raw_target).map_err(Refusal::Target)?;
    if found.forwarding {
        remove_forwarding(&mut headers, peer.trusted);
    }
    Ok(Inbound {
        method: parts.method,
        forward: Forward {
            target,
            headers,
            present,
            host,
            peer: Arc::clone(peer),
            keep_client_host,
            interim,
        },
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
/// the origin's (an HTTP/1.0 client may send none); normalised: the field value
/// itself when it is in normal form already.
fn request_host(
    uri: &http::Uri,
    headers: &HeaderMap,
    default_host: &str,
) -> Result<KeyHost, Refusal> {
    if let Some(authority) = uri.authority() {
        let host = normalize_host(authority.as_str()).ok_or(Refusal::Host)?;
        return Ok(KeyHost::Made(host));
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) => Ok(KeyHost::Made(default_host.to_string())),
        (Some(h), None) => {
            let raw = h.to_str().map_err(|_| Refusal::Host)?;
            Ok(match normal_host(raw).ok_or(Refusal::Host)? {
                Cow::Borrowed(same) if same.len() == raw.len() => KeyHost::Field(h.clone()),
                host => KeyHost::Made(host.into_owned()),
            })
        }
        (Some(_), Some(_)) => Err(Refusal::Host),
    }
}

/// A trusted peer's `X-Forwarded-Host`, normalised: the client's host as that
/// peer saw it (the first of a list); `None` without one, a refusal when it is
/// not a host.
fn forwarded_host(headers: &HeaderMap) -> Result<Option<String>, Refusal> {
    let Some(value) = headers.get(&X_FORWARDED_HOST) else {
        return Ok(None);
    };
    let first = value
        .to_str()
        .map_err(|_| Refusal::Host)?
        .split(',')
        .next()
        .unwrap_or("")
        .trim();
    normalize_host(first).map(Some).ok_or(Refusal::Host)
}

/// Removes, from a request that has forwarding fields of its own, those no
/// one may send the origin: everyone's `X-Forwarded-Host` (the proxy sets its
/// own, or none), and, from a peer not `trusted`, `Forwarded`,
/// `X-Forwarded-For`, `-Proto`, `-Port` and `X-Real-IP`. Before the key is made.
fn remove_forwarding(headers: &mut HeaderMap, trusted: bool) {
    headers.remove(&X_FORWARDED_HOST);
    if !trusted {
        headers.remove(header::FORWARDED);
        headers.remove(&X_FORWARDED_FOR);
        headers.remove(&X_FORWARDED_PROTO);
        headers.remove(&X_FORWARDED_PORT);
        headers.remove(&X_REAL_IP);
    }
}

/// The forwarding fields to add to `headers` (as `remove_forwarding` left
/// them): `X-Forwarded-For` (the peer appended), `-Proto`, `Via` and, with
/// `forward_host`, `-Host` (the key's host, `host`), from this proxy's view. A
/// trusted peer's own `Forwarded`, `X-Forwarded-For` and `-Proto` are kept and
/// extended.
fn forwarding_fields(headers: &HeaderMap, peer: &Peer, host: &KeyHost) -> Added {
    let host = if peer.forward_host {
        host.to_value()
    } else {
        None
    };
    if !peer.trusted {
        return Added {
            forwarded_for: peer.address.clone(),
            host,
            proto: Some(peer.proto()),
            origin_host: None,
        };
    }
    let prior: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    let forwarded_for = if prior.is_empty() {
        peer.address.clone()
    } else {
        let own = peer.address.to_str().unwrap_or("unknown");
        HeaderValue::from_str(&format!("{}, {own}", prior.join(", ")))
            .unwrap_or_else(|_| peer.address.clone())
    };
    Added {
        forwarded_for,
        host,
        proto: (!headers.contains_key(&X_FORWARDED_PROTO)).then(|| peer.proto()),
        origin_host: None,
    }
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

    #[test]
    fn the_fields_noted_are_those_forwarded() {
        let plain = [
            ("host", "a"),
            ("authorization", "Basic x"),
            ("range", "bytes=0-1"),
        ];
        let p = run(req("GET", "/", &plain), &[]).unwrap().forward.present;
        assert!(p.authorization && p.range && !p.conditional);
        let conditional = [
            ("host", "a"),
            ("if-modified-since", "Mon, 07 Dec 2026 05:00:00 GMT"),
        ];
        assert!(
            run(req("GET", "/", &conditional), &[])
                .unwrap()
                .forward
                .present
                .conditional
        );
        // Fields `Connection` names are this hop's: removed, and not noted.
        let named = [
            ("host", "a"),
            ("connection", "authorization, range, if-none-match"),
            ("authorization", "Basic x"),
            ("range", "bytes=0-1"),
            ("if-none-match", "\"v\""),
        ];
        let i = run(req("GET", "/", &named), &[]).unwrap();
        let p = i.forward.present;
        assert!(!i.forward.headers.contains_key(header::AUTHORIZATION));
        assert!(!p.authorization && !p.range && !p.conditional, "{p:?}");
    }

    /// A request the scan notes without cache directives parses to none, also
    /// when `Connection` named the fields that carried them.
    #[test]
    fn directives_are_noted_where_the_forwarded_fields_have_some() {
        use herdguard_http::RequestDirectives;
        let cases: &[&[(&str, &str)]] = &[
            &[("host", "a")],
            &[("host", "a"), ("cache-control", "no-cache")],
            &[("host", "a"), ("pragma", "no-cache")],
            &[
                ("host", "a"),
                ("Cache-Control", "max-age=0, only-if-cached"),
            ],
            &[
                ("host", "a"),
                ("connection", "pragma"),
                ("pragma", "no-cache"),
            ],
            &[
                ("host", "a"),
                ("connection", "cache-control"),
                ("cache-control", "no-store"),
            ],
            &[
                ("host", "a"),
                ("connection", "close"),
                ("cache-control", "max-stale"),
            ],
        ];
        for fields in cases {
            let f = run(req("GET", "/", fields), &[]).unwrap().forward;
            let parsed = RequestDirectives::from_headers(&f.headers);
            assert_eq!(
                f.present.directives,
                parsed != RequestDirectives::default(),
                "{fields:?}"
            );
        }
    }

    fn run(
        r: Request<http_body_util::Empty<bytes::Bytes>>,
        trusted: &[&str],
    ) -> Result<Inbound<http_body_util::Empty<bytes::Bytes>>, Refusal> {
        run_with(r, trusted, false)
    }

    fn run_with(
        r: Request<http_body_util::Empty<bytes::Bytes>>,
        trusted: &[&str],
        forward_host: bool,
    ) -> Result<Inbound<http_body_util::Empty<bytes::Bytes>>, Refusal> {
        let forwarding = Forwarding {
            trusted: trusted.iter().map(|t| t.parse().unwrap()).collect(),
            host: forward_host,
        };
        let peer = Arc::new(Peer::new("10.1.2.3:5555".parse().unwrap(), &forwarding));
        prepare(r, &peer, None, 65536, 1 << 20, "origin", false)
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
        assert_eq!(i.forward.target.as_str(), "/b");
        assert_eq!(i.forward.host, "api.example");
        assert!(!i.forward.to_send().contains_key("accept"));
        assert!(!i.forward.to_send().contains_key("connection"));
    }

    #[test]
    fn every_hop_by_hop_field_alone_is_removed_before_forwarding() {
        // The scan decides whether the removal runs: a field it missed would
        // reach the origin.
        for name in &herdguard_http::hop::HOP_BY_HOP {
            let i = run(
                req("POST", "/", &[("host", "a"), (name.as_str(), "chunked")]),
                &[],
            )
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert!(!i.forward.to_send().contains_key(name), "{name} forwarded");
        }
    }

    #[test]
    fn bodies_on_get_and_head_are_refused_on_delete_and_options_kept() {
        for m in ["DELETE", "OPTIONS"] {
            for framing in [("content-length", "3"), ("transfer-encoding", "chunked")] {
                assert!(
                    run(req(m, "/", &[("host", "a"), framing]), &[]).is_ok(),
                    "{m} {framing:?}"
                );
            }
        }
        for m in ["GET", "HEAD"] {
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

    /// A `Host` in normal form is the key's host as it came (no copy); any
    /// other form is normalised.
    #[test]
    fn a_host_in_normal_form_is_kept_as_it_came() {
        let host = |h: &str| {
            run(req("GET", "/", &[("host", h)]), &[])
                .unwrap()
                .forward
                .host
        };
        assert!(matches!(host("shop.example:8080"), KeyHost::Field(_)));
        for (sent, key) in [("Shop.Example", "shop.example"), ("a:80", "a"), ("a:", "a")] {
            let made = host(sent);
            assert!(matches!(made, KeyHost::Made(_)), "{sent}");
            assert_eq!(made, key);
        }
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
        assert_eq!(
            run(req("GET", "/", &[]), &[]).unwrap().forward.host,
            "origin"
        );
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
        let h = run(req("GET", "/", &spoof), &[]).unwrap().forward.to_send();
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.1.2.3");
        // Without forward_host the origin sees no client host, not even a trusted peer's.
        assert_eq!(h.get("x-forwarded-host"), None);
        assert!(!h.contains_key("forwarded"));
        assert_eq!(h.get("via").unwrap(), "1.1 herdguard");
        let trusted = ["10.0.0.0/8"];
        let h = run(req("GET", "/", &spoof), &trusted)
            .unwrap()
            .forward
            .to_send();
        assert_eq!(h.get("x-forwarded-for").unwrap(), "6.6.6.6, 10.1.2.3");
        assert_eq!(h.get("x-forwarded-host"), None);
        assert!(h.contains_key("forwarded"));
        // With it: the key's host, which is a trusted peer's X-Forwarded-Host when it sent one.
        let i = run_with(req("GET", "/", &spoof), &[], true).unwrap();
        assert_eq!(i.forward.host, "a");
        assert_eq!(i.forward.to_send().get("x-forwarded-host").unwrap(), "a");
        let i = run_with(req("GET", "/", &spoof), &trusted, true).unwrap();
        assert_eq!(i.forward.host, "evil");
        assert_eq!(i.forward.to_send().get("x-forwarded-host").unwrap(), "evil");
        let listed = [("host", "a"), ("x-forwarded-host", "Shop.Example:80, b")];
        let i = run_with(req("GET", "/", &listed), &trusted, true).unwrap();
        assert_eq!(i.forward.host, "shop.example");
        assert_eq!(
            i.forward
                .to_send()
                .get_all("x-forwarded-host")
                .iter()
                .collect::<Vec<_>>(),
            ["shop.example"]
        );
        let bad = [("host", "a"), ("x-forwarded-host", "u@evil")];
        assert_eq!(
            run_with(req("GET", "/", &bad), &trusted, true).err(),
            Some(Refusal::Host)
        );
        let other = ["192.168.0.0/16"];
        let h = run(req("GET", "/", &spoof), &other)
            .unwrap()
            .forward
            .to_send();
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.1.2.3");
        // A Vary on a field the proxy adds sees the forwarded value.
        let i = run(req("GET", "/", &spoof), &[]).unwrap();
        let vary = Vary::Fields(vec![HeaderName::from_static("x-forwarded-for")]);
        let view = i.forward.vary_view(&vary);
        assert_eq!(view.get("x-forwarded-for").unwrap(), "10.1.2.3");
    }
}
