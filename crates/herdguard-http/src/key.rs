//! Primary cache keys: the effective request URI (RFC 9110 §7.1) normalized per RFC 9110 §4.2.3
//! / RFC 3986 §6, with `HEAD` sharing `GET`'s entry (RFC 9111 §2, §4).
//!
//! Normalization: scheme and host lowercased; the default port (80 for `http`, 443 for `https`)
//! dropped; an empty path becomes `/`; the path and query are a [`RequestTarget`], the one
//! normal form of both (dot-segments removed, percent-encodings with uppercase hex and encoded
//! unreserved characters decoded; what a request would be refused for has no URI here). Userinfo
//! is refused (RFC 9110 §4.2.4 deprecates it for `http(s)`), as are schemes other than
//! `http`/`https`.
//!
//! A reverse proxy keys by what the operator chose ([`KeyConfig`]: host, path, query, and how
//! the query is normalised), and a URL that varies adds a digest of its secondary key
//! ([`variant_key`]): header values (a `Cookie`, an `Authorization`) never appear in a key
//! name, where a shared store such as Redis would show them to anyone who can list keys.
//!
//! Every primary key is made by one function, [`KeyConfig::primary`], from a host normalised by
//! [`normalize_host`] and a [`RequestTarget`]: a request's, a purge's
//! ([`KeyConfig::primary_for_url`]) and an invalidation's ([`KeyConfig::primary_for_uri`]).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use http::header::HOST;
use http::uri::Authority;
use http::{HeaderMap, Method, Uri};

use crate::target::RequestTarget;

/// A normalized absolute `http`/`https` URI: scheme, host, optional non-default port, and
/// path-and-query (fragments are dropped).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EffectiveUri {
    scheme: String,
    host: String,
    port: Option<u16>,
    target: RequestTarget,
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" {
        443
    } else {
        80
    }
}

impl EffectiveUri {
    /// The effective request URI of an incoming request (RFC 9110 §7.1): the request target if
    /// it is in absolute form, else `default_scheme` (`"http"` or `"https"`, as the listener
    /// knows) plus the `Host` header field and the origin-form target. `None` when there is no
    /// usable authority (missing or repeated `Host`, userinfo, bad port) or the scheme is not
    /// `http`/`https`.
    pub fn from_request(uri: &Uri, headers: &HeaderMap, default_scheme: &str) -> Option<Self> {
        let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
        if let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) {
            return Self::build(scheme, authority, path);
        }
        let mut hosts = headers.get_all(HOST).iter();
        let host = hosts.next()?;
        if hosts.next().is_some() {
            return None;
        }
        let authority = Authority::from_str(host.to_str().ok()?.trim()).ok()?;
        Self::build(default_scheme, &authority, path)
    }

    /// Parses an absolute `http`/`https` URI such as `https://Example.com:443/a?b`.
    pub fn parse_absolute(s: &str) -> Option<Self> {
        let s = s.split('#').next().unwrap_or("");
        let uri = Uri::from_str(s).ok()?;
        let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
        Self::build(uri.scheme_str()?, uri.authority()?, path)
    }

    fn build(scheme: &str, authority: &Authority, path_and_query: &str) -> Option<Self> {
        let target = if path_and_query.starts_with('/') {
            RequestTarget::parse(path_and_query).ok()?
        } else if path_and_query.is_empty() || path_and_query.starts_with('?') {
            RequestTarget::parse(&format!("/{path_and_query}")).ok()?
        } else {
            // e.g. the asterisk-form "*": not a cacheable target.
            return None;
        };
        Self::from_parts(scheme, authority, target)
    }

    fn from_parts(scheme: &str, authority: &Authority, target: RequestTarget) -> Option<Self> {
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return None;
        }
        if authority.as_str().contains('@') {
            return None;
        }
        let host = authority.host().to_ascii_lowercase();
        if host.is_empty() {
            return None;
        }
        // A port that is present must parse (an empty one means the default, RFC 3986 §3.2.3).
        let rest = authority
            .as_str()
            .get(authority.host().len()..)
            .unwrap_or("");
        let port = match authority.port_u16() {
            Some(p) if p == default_port(&scheme) => None,
            Some(p) => Some(p),
            None if rest.is_empty() || rest == ":" => None,
            None => return None,
        };
        Some(EffectiveUri {
            scheme,
            host,
            port,
            target,
        })
    }

    /// The URI of a request for an already normalised `target` on `host` (a `Host` value).
    pub fn for_target(scheme: &str, host: &str, target: &RequestTarget) -> Option<Self> {
        let authority = Authority::from_str(host).ok()?;
        Self::from_parts(scheme, &authority, target.clone())
    }

    /// Resolves a URI reference (e.g. a `Location` value) against this URI (RFC 3986 §5.2).
    pub fn resolve(&self, reference: &str) -> Option<EffectiveUri> {
        let reference = reference.trim();
        let reference = reference.split('#').next().unwrap_or("");
        if has_scheme(reference) {
            return Self::parse_absolute(reference);
        }
        if let Some(rest) = reference.strip_prefix("//") {
            return Self::parse_absolute(&format!("{}://{}", self.scheme, rest));
        }
        let (base_path, base_query) = (self.target.path(), self.target.query());
        let (ref_path, ref_query) = split_query(reference);
        // Dot-segments are removed when the result is parsed (as a request target).
        let (path, query) = if ref_path.is_empty() {
            (base_path.to_string(), ref_query.or(base_query))
        } else if ref_path.starts_with('/') {
            (ref_path.to_string(), ref_query)
        } else {
            let dir = base_path
                .rfind('/')
                .map_or("/", |i| base_path.get(..=i).unwrap_or("/"));
            (format!("{dir}{ref_path}"), ref_query)
        };
        let mut s = format!("{}://{}{}", self.scheme, self.authority(), path);
        if let Some(q) = query {
            s.push('?');
            s.push_str(q);
        }
        Self::parse_absolute(&s)
    }

    /// Whether both URIs have the same origin (scheme, host, port; RFC 9110 §4.3.1).
    pub fn same_origin(&self, other: &EffectiveUri) -> bool {
        self.scheme == other.scheme && self.host == other.host && self.port == other.port
    }

    /// The scheme (`http` or `https`).
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The host, lowercased (IPv6 literals keep their brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, `None` when it is the scheme's default.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The normalized path and query, always starting with `/`.
    pub fn path_and_query(&self) -> &str {
        self.target.as_str()
    }

    /// The path and query as a request target.
    pub fn target(&self) -> &RequestTarget {
        &self.target
    }

    /// Host and, when not the default, port: `example.com:8080`.
    pub fn authority(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{}", self.host, p),
            None => self.host.clone(),
        }
    }
}

impl fmt::Display for EffectiveUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority(), self.target)
    }
}

fn has_scheme(s: &str) -> bool {
    let Some((scheme, _)) = s.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn split_query(s: &str) -> (&str, Option<&str>) {
    match s.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (s, None),
    }
}

/// The primary cache key of a request: `GET` and `HEAD` share one entry; other methods have
/// none (RFC 9111 §2: the key is the method and target URI; only `GET` responses are stored here).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(String);

impl CacheKey {
    /// The key for `method` on `uri`; `None` unless the method is `GET` or `HEAD`.
    pub fn new(method: &Method, uri: &EffectiveUri) -> Option<CacheKey> {
        if method == Method::GET || method == Method::HEAD {
            Some(Self::for_uri(uri))
        } else {
            None
        }
    }

    /// The (GET) key of a URI, e.g. for invalidation ([`crate::invalidate`]).
    pub fn for_uri(uri: &EffectiveUri) -> CacheKey {
        CacheKey(format!("GET {uri}"))
    }

    /// Convenience: [`EffectiveUri::from_request`] then [`CacheKey::new`].
    pub fn from_request(
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        default_scheme: &str,
    ) -> Option<CacheKey> {
        Self::new(
            method,
            &EffectiveUri::from_request(uri, headers, default_scheme)?,
        )
    }

    /// The key as a string, e.g. `GET https://example.com/a?b`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How the query takes part in a primary key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKey {
    /// The query as sent (after target normalisation): `?b=1&a=2` and `?a=2&b=1` differ.
    AsIs,
    /// Parameters sorted, so their order does not matter; for APIs that read them as a set.
    Sorted,
    /// Left out: every query of a path shares one entry.
    Ignored,
}

/// Which parts of a request make its primary key. Default: path and query, without the host
/// (see [`KeyConfig::resolve`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyConfig {
    /// Whether the (normalised) client's host is part of the key. It must be whenever the origin
    /// can see that host (as its `Host`, or as `X-Forwarded-Host`): its answers may depend on it.
    pub host: bool,
    /// How the query takes part.
    pub query: QueryKey,
}

impl Default for KeyConfig {
    fn default() -> Self {
        KeyConfig {
            host: false,
            query: QueryKey::AsIs,
        }
    }
}

/// Why a key configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyConfigError {
    /// An unknown part or query mode, or no path.
    Parts(String),
    /// The origin sees the client's host, and the parts leave it out.
    HostLeftOut,
}

impl fmt::Display for KeyConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyConfigError::Parts(why) => f.write_str(why),
            KeyConfigError::HostLeftOut => f.write_str(
                "needs host in cache_key (the origin sees the client's host, so its answer may depend on it)",
            ),
        }
    }
}

impl std::error::Error for KeyConfigError {}

impl KeyConfig {
    /// The key of a reverse proxy in front of one origin, from the parts the operator named
    /// (`None`: the default) and whether the origin can see the client's host
    /// (`origin_sees_host`: it gets it as its `Host`, or as `X-Forwarded-Host`).
    ///
    /// The rule: whenever the origin can see the client's host, the host is in the key, so one
    /// host's answer never serves another. By default it is in the key exactly then: a proxy
    /// in front of one origin whose answers cannot depend on the client's host leaves it out,
    /// so clients that name the proxy differently (`127.0.0.1:8080`, `sidecar.internal`) share
    /// one entry, and one origin call. Parts that leave the host out while the origin sees it
    /// are refused; parts that name it while the origin does not see it are kept as asked
    /// (the cache is only split by host).
    pub fn resolve(
        parts: Option<&str>,
        query_mode: &str,
        origin_sees_host: bool,
    ) -> Result<KeyConfig, KeyConfigError> {
        let default = if origin_sees_host {
            "host,path,query"
        } else {
            "path,query"
        };
        let config = Self::from_parts(parts.unwrap_or(default), query_mode)?;
        if origin_sees_host && !config.host {
            return Err(KeyConfigError::HostLeftOut);
        }
        Ok(config)
    }

    /// The parts as [`KeyConfig::from_parts`] reads them, e.g. `host,path,query`.
    pub fn parts(&self) -> &'static str {
        match (self.host, self.query) {
            (true, QueryKey::Ignored) => "host,path",
            (true, _) => "host,path,query",
            (false, QueryKey::Ignored) => "path",
            (false, _) => "path,query",
        }
    }

    /// The query mode as [`KeyConfig::from_parts`] reads it (`as-is` when the query is left out).
    pub fn query_mode(&self) -> &'static str {
        match self.query {
            QueryKey::Sorted => "sorted",
            QueryKey::AsIs | QueryKey::Ignored => "as-is",
        }
    }

    /// From a list of parts (`host`, `path`, `query`; `path` is required) and a query mode
    /// (`as-is` or `sorted`; ignored when `query` is not listed).
    pub fn from_parts(parts: &str, query_mode: &str) -> Result<KeyConfig, KeyConfigError> {
        let mut host = false;
        let mut path = false;
        let mut query = false;
        for part in parts.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.to_ascii_lowercase().as_str() {
                "host" => host = true,
                "path" => path = true,
                "query" => query = true,
                other => {
                    return Err(KeyConfigError::Parts(format!(
                        "unknown part {other:?} (use host, path, query)"
                    )))
                }
            }
        }
        if !path {
            return Err(KeyConfigError::Parts(
                "the path must be part of the key".into(),
            ));
        }
        let query = match (query, query_mode.trim().to_ascii_lowercase().as_str()) {
            (false, _) => QueryKey::Ignored,
            (true, "as-is") => QueryKey::AsIs,
            (true, "sorted") => QueryKey::Sorted,
            (true, other) => {
                return Err(KeyConfigError::Parts(format!(
                    "unknown query mode {other:?} (use as-is or sorted)"
                )))
            }
        };
        Ok(KeyConfig { host, query })
    }

    /// The primary key of a request for `target` with normalised `host` (see [`normalize_host`]):
    /// the one function every key of the cache comes from.
    pub fn primary(&self, host: &str, target: &RequestTarget) -> String {
        let (path, query) = (target.path(), target.query());
        let mut key =
            String::with_capacity(host.len() + path.len() + query.map_or(0, |q| q.len() + 1));
        if self.host {
            key.push_str(host);
        }
        key.push_str(path);
        match (self.query, query) {
            (QueryKey::Ignored, _) | (_, None) => {}
            (QueryKey::AsIs, Some(q)) => {
                key.push('?');
                key.push_str(q);
            }
            (QueryKey::Sorted, Some(q)) => {
                let mut params: Vec<&str> = q.split('&').filter(|p| !p.is_empty()).collect();
                params.sort_unstable();
                key.push('?');
                key.push_str(&params.join("&"));
            }
        }
        key
    }

    /// [`KeyConfig::primary`], borrowed from `target` where the key is the
    /// target's text itself (no host, the query as it is, or none): no copy,
    /// and `host` not even read.
    pub fn primary_ref<'a>(
        &self,
        host: &(impl AsRef<str> + ?Sized),
        target: &'a RequestTarget,
    ) -> Cow<'a, String> {
        let query_as_is = match (self.query, target.query()) {
            (_, None) | (QueryKey::AsIs, Some(_)) => true,
            (QueryKey::Ignored | QueryKey::Sorted, Some(_)) => false,
        };
        if !self.host && query_as_is {
            Cow::Borrowed(target.as_string())
        } else {
            Cow::Owned(self.primary(host.as_ref(), target))
        }
    }

    /// The primary key of an absolute URI (an invalidation target, a `Location`); equal to
    /// [`KeyConfig::primary`] of a request for the same resource.
    pub fn primary_for_uri(&self, uri: &EffectiveUri) -> String {
        let authority = uri.authority();
        let host = normalize_host(&authority).unwrap_or(authority);
        self.primary(&host, uri.target())
    }

    /// The primary key of a URL named by an operator (a purge): an absolute `http(s)://` URL as
    /// clients request it, or a path (`/a?b`) on `default_host` (normalised, see
    /// [`normalize_host`]). `None` when it is neither, or when a request for it would be
    /// refused (nothing can be stored under it).
    pub fn primary_for_url(&self, url: &str, default_host: &str) -> Option<String> {
        if url.starts_with('/') {
            let target = RequestTarget::parse(url).ok()?;
            return Some(self.primary(default_host, &target));
        }
        Some(self.primary_for_uri(&EffectiveUri::parse_absolute(url)?))
    }
}

/// The bytes of a host name in normal form: lowercase letters, digits, `.`, `-`.
static NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-';
        b += 1;
    }
    table
};

/// A `Host` field value as it takes part in a key: lowercased, without the default port 80
/// (the proxy listens for `http`); `None` when it is not a valid authority or has userinfo.
pub fn normalize_host(host: &str) -> Option<String> {
    normal_host(host).map(Cow::into_owned)
}

/// [`normalize_host`] without a copy where none is needed: the value itself
/// (or its name, without `:80`) when it is in normal form already.
pub fn normal_host(host: &str) -> Option<Cow<'_, str>> {
    // The common case, `name` or `name:port` already in normal form: checked by one scan
    // of the name, a table lookup a byte (it stops at the `:`, which is not a name byte).
    let name_len = host
        .bytes()
        .position(|b| !NAME_BYTES[usize::from(b)])
        .unwrap_or(host.len());
    let (name, port) = match host.as_bytes().get(name_len) {
        None => (host, None),
        Some(b':') => (&host[..name_len], Some(&host[name_len + 1..])),
        // Another byte: not in normal form (the whole parse below).
        Some(_) => ("", None),
    };
    if !name.is_empty() {
        match port {
            None => return Some(Cow::Borrowed(host)),
            Some(p)
                if (1..=5).contains(&p.len())
                    && p.bytes().all(|c| c.is_ascii_digit())
                    && !p.starts_with('0') =>
            {
                match p.parse::<u16>() {
                    Ok(80) => return Some(Cow::Borrowed(name)),
                    Ok(_) => return Some(Cow::Borrowed(host)),
                    Err(_) => return None,
                }
            }
            _ => {}
        }
    }
    let authority = Authority::from_str(host.trim()).ok()?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return None;
    }
    let name = authority.host().to_ascii_lowercase();
    let rest = authority
        .as_str()
        .get(authority.host().len()..)
        .unwrap_or("");
    Some(Cow::Owned(match authority.port_u16() {
        Some(80) => name,
        Some(p) => format!("{name}:{p}"),
        None if rest.is_empty() || rest == ":" => name,
        None => return None,
    }))
}

/// The key of one variant of a URL that varies: the primary key, `#`, then the hex of the
/// first 16 bytes of the secondary key's digest ([`crate::vary::SecondaryKey::digest`]).
pub fn variant_key(primary: &str, digest: &[u8; 32]) -> String {
    let mut key = String::with_capacity(primary.len() + 33);
    key.push_str(primary);
    key.push('#');
    for b in digest.iter().take(16) {
        key.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        key.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::hm;

    /// The borrowed key is the made one, whatever the parts and the target.
    #[test]
    fn the_borrowed_primary_key_is_the_made_one() {
        let targets = ["/", "/a/b", "/a?", "/a?b=2&a=1", "/a?&&x", "/%7Euser?q=%41"];
        for host in [false, true] {
            for query in [QueryKey::AsIs, QueryKey::Sorted, QueryKey::Ignored] {
                let config = KeyConfig { host, query };
                for t in targets {
                    let t = crate::target::RequestTarget::parse(t).unwrap();
                    let made = config.primary("h.example:8080", &t);
                    assert_eq!(
                        *config.primary_ref("h.example:8080", &t),
                        made,
                        "{config:?} {t}"
                    );
                }
            }
        }
    }

    #[test]
    fn proxy_keys_follow_the_configured_parts() {
        let t = crate::target::RequestTarget::parse("/items?b=2&a=1").unwrap();
        assert_eq!(
            KeyConfig::default().primary("api.example", &t),
            "/items?b=2&a=1"
        );
        let all = KeyConfig::from_parts("host,path,query", "as-is").unwrap();
        assert_eq!(all.primary("api.example", &t), "api.example/items?b=2&a=1");
        let sorted = KeyConfig::from_parts("host, path, query", "sorted").unwrap();
        assert_eq!(
            sorted.primary("api.example", &t),
            "api.example/items?a=1&b=2"
        );
        let path_only = KeyConfig::from_parts("path", "as-is").unwrap();
        assert_eq!(path_only.primary("api.example", &t), "/items");
        assert!(KeyConfig::from_parts("host,query", "as-is").is_err());
        assert!(KeyConfig::from_parts("host,path,cookie", "as-is").is_err());
        assert!(KeyConfig::from_parts("path,query", "random").is_err());
        let uri = EffectiveUri::parse_absolute("http://API.example:80/items?b=2&a=1").unwrap();
        assert_eq!(all.primary_for_uri(&uri), all.primary("api.example", &t));
        assert_eq!(
            normalize_host("API.Example:80").as_deref(),
            Some("api.example")
        );
        assert_eq!(normalize_host("a:8080").as_deref(), Some("a:8080"));
        assert_eq!(normalize_host("u@a"), None);
        assert_eq!(normalize_host("a:99999"), None);
        assert_eq!(normalize_host("a:"), Some("a".to_string()));
        assert_eq!(normalize_host("a:080").as_deref(), Some("a"));
        assert_eq!(
            normalize_host("127.0.0.1:8080").as_deref(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(normalize_host("[::1]:80").as_deref(), Some("[::1]"));
        let k = variant_key("a/x", &[0xab; 32]);
        assert_eq!(k, format!("a/x#{}", "ab".repeat(16)));
    }

    #[test]
    fn the_host_is_in_the_key_exactly_when_the_origin_sees_it_unless_asked_for() {
        let resolve = |parts: Option<&str>, sees: bool| KeyConfig::resolve(parts, "as-is", sees);
        assert_eq!(resolve(None, false).unwrap().parts(), "path,query");
        assert_eq!(resolve(None, true).unwrap().parts(), "host,path,query");
        // Asked for: kept, though the origin does not see it.
        assert_eq!(
            resolve(Some("host,path"), false).unwrap().parts(),
            "host,path"
        );
        // The origin sees it: never left out.
        assert_eq!(
            resolve(Some("path,query"), true),
            Err(KeyConfigError::HostLeftOut)
        );
        assert_eq!(
            resolve(Some("path"), true),
            Err(KeyConfigError::HostLeftOut)
        );
        assert!(matches!(
            resolve(Some("path,cookie"), true),
            Err(KeyConfigError::Parts(_))
        ));
        let sorted = KeyConfig::resolve(Some("path,query"), "sorted", false).unwrap();
        assert_eq!(
            (sorted.parts(), sorted.query_mode()),
            ("path,query", "sorted")
        );
        for parts in ["path", "path,query", "host,path", "host,path,query"] {
            let c = KeyConfig::from_parts(parts, "sorted").unwrap();
            assert_eq!(KeyConfig::from_parts(c.parts(), c.query_mode()), Ok(c));
        }
    }

    #[test]
    fn one_normal_form_for_requests_purges_and_invalidations() {
        let config = KeyConfig::from_parts("host,path,query", "as-is").unwrap();
        let get = |t: &str| config.primary("h", &RequestTarget::parse(t).unwrap());
        for t in [
            "/q?x=%3d",
            "/q?x=%3D",
            "/%7euser?a=%7E",
            "/~user?a=~",
            "/a%2fb?c=%2f",
            "/a/./b/../c?",
            "/q?a=1?b=2",
        ] {
            assert_eq!(config.primary_for_url(t, "h"), Some(get(t)), "{t}");
            let absolute = format!("http://H:80{t}");
            assert_eq!(config.primary_for_url(&absolute, "x"), Some(get(t)), "{t}");
            let base = EffectiveUri::parse_absolute("http://h/other").unwrap();
            assert_eq!(
                config.primary_for_uri(&base.resolve(t).unwrap()),
                get(t),
                "{t}"
            );
        }
        assert_eq!(get("/q?x=%3d"), get("/q?x=%3D"));
        assert_eq!(get("/%7Euser?a=%7e"), get("/~user?a=~"));
        // Reserved escapes stay apart from what they escape.
        assert_ne!(get("/a%2Fb"), get("/a/b"));
        assert_ne!(get("/q?x=%3D"), get("/q?x=="));
        assert_ne!(get("/q?a=%26b"), get("/q?a=&b"));
        // A URL a request would be refused for has no key.
        assert_eq!(config.primary_for_url("/%2e%2e/x", "h"), None);
        assert_eq!(config.primary_for_url("ftp://h/x", "h"), None);
        assert_eq!(config.primary_for_url("x", "h"), None);
    }

    fn uri(s: &str) -> Uri {
        Uri::from_str(s).unwrap()
    }

    #[test]
    fn rfc9110_7_1_effective_uri_from_origin_form_and_host() {
        let e = EffectiveUri::from_request(
            &uri("/a/b?x=1"),
            &hm(&[("host", "Example.COM:80")]),
            "http",
        )
        .unwrap();
        assert_eq!(e.to_string(), "http://example.com/a/b?x=1");
        assert_eq!(e.port(), None);
        let e =
            EffectiveUri::from_request(&uri("/"), &hm(&[("host", "example.com:8443")]), "https")
                .unwrap();
        assert_eq!(e.to_string(), "https://example.com:8443/");
    }

    #[test]
    fn rfc9110_7_1_absolute_form_wins_over_host() {
        let e = EffectiveUri::from_request(
            &uri("HTTPS://Example.com:443"),
            &hm(&[("host", "other")]),
            "http",
        )
        .unwrap();
        assert_eq!(e.to_string(), "https://example.com/");
    }

    #[test]
    fn rfc9110_7_1_unusable_authority() {
        assert!(EffectiveUri::from_request(&uri("/"), &hm(&[]), "http").is_none());
        assert!(EffectiveUri::from_request(
            &uri("/"),
            &hm(&[("host", "a"), ("host", "b")]),
            "http"
        )
        .is_none());
        assert!(EffectiveUri::from_request(&uri("/"), &hm(&[("host", "u@a")]), "http").is_none());
        assert!(
            EffectiveUri::from_request(&uri("/"), &hm(&[("host", "a:99999")]), "http").is_none()
        );
        assert!(EffectiveUri::from_request(&uri("/"), &hm(&[("host", "a")]), "ftp").is_none());
        assert!(EffectiveUri::from_request(&uri("*"), &hm(&[("host", "a")]), "http").is_none());
        assert!(EffectiveUri::parse_absolute("ftp://a/b").is_none());
    }

    #[test]
    fn rfc3986_6_2_percent_normalization() {
        let e = EffectiveUri::parse_absolute("http://a/%7euser/%2f%41?q=%3d").unwrap();
        assert_eq!(e.path_and_query(), "/~user/%2FA?q=%3D");
        // What a request would be refused for has no URI (nothing is stored under it).
        assert!(EffectiveUri::parse_absolute("http://a/%zz").is_none());
        assert!(EffectiveUri::parse_absolute("http://a/%2e%2e/x").is_none());
        assert_eq!(
            EffectiveUri::parse_absolute("http://a/b/../c/./d")
                .unwrap()
                .path_and_query(),
            "/c/d"
        );
    }

    #[test]
    fn rfc9110_ipv6_host() {
        let e = EffectiveUri::parse_absolute("http://[::1]:8080/x").unwrap();
        assert_eq!(e.host(), "[::1]");
        assert_eq!(e.port(), Some(8080));
        assert_eq!(e.to_string(), "http://[::1]:8080/x");
        let e = EffectiveUri::parse_absolute("http://[::1]/x").unwrap();
        assert_eq!(e.port(), None);
    }

    #[test]
    fn rfc3986_5_2_reference_resolution() {
        let base = EffectiveUri::parse_absolute("http://a/b/c/d;p?q").unwrap();
        let r = |s: &str| base.resolve(s).map(|u| u.to_string());
        // Examples from RFC 3986 §5.4.1 / §5.4.2.
        assert_eq!(r("g").as_deref(), Some("http://a/b/c/g"));
        assert_eq!(r("./g").as_deref(), Some("http://a/b/c/g"));
        assert_eq!(r("g/").as_deref(), Some("http://a/b/c/g/"));
        assert_eq!(r("/g").as_deref(), Some("http://a/g"));
        assert_eq!(r("//g").as_deref(), Some("http://g/"));
        assert_eq!(r("?y").as_deref(), Some("http://a/b/c/d;p?y"));
        assert_eq!(r("g?y").as_deref(), Some("http://a/b/c/g?y"));
        assert_eq!(r("").as_deref(), Some("http://a/b/c/d;p?q"));
        assert_eq!(r("#s").as_deref(), Some("http://a/b/c/d;p?q"));
        assert_eq!(r(".").as_deref(), Some("http://a/b/c/"));
        assert_eq!(r("..").as_deref(), Some("http://a/b/"));
        assert_eq!(r("../g").as_deref(), Some("http://a/b/g"));
        assert_eq!(r("../../../g").as_deref(), Some("http://a/g"));
        assert_eq!(r("/./g").as_deref(), Some("http://a/g"));
        assert_eq!(r("g/../h").as_deref(), Some("http://a/b/c/h"));
        assert_eq!(r("https://B/x").as_deref(), Some("https://b/x"));
        assert_eq!(r("mailto:x@y"), None);
        assert_eq!(r("g h"), None);
    }

    #[test]
    fn rfc9111_2_head_shares_get_key_other_methods_have_none() {
        let h = hm(&[("host", "example.com")]);
        let g = CacheKey::from_request(&Method::GET, &uri("/x"), &h, "https").unwrap();
        let hd = CacheKey::from_request(&Method::HEAD, &uri("/x"), &h, "https").unwrap();
        assert_eq!(g, hd);
        assert_eq!(g.as_str(), "GET https://example.com/x");
        assert!(CacheKey::from_request(&Method::POST, &uri("/x"), &h, "https").is_none());
        let other = CacheKey::from_request(&Method::GET, &uri("/x?"), &h, "https").unwrap();
        assert_ne!(g, other);
    }
}
