//! The `Cache-Status` response header field (RFC 9211).
//!
//! `Cache-Status` is an RFC 8941 List; each cache that handled the response appends one member:
//! its name (token or string) with parameters. Build this cache's member with [`CacheStatus`] and
//! add it with [`CacheStatus::append_to`], which keeps upstream caches' members first (§2).
//!
//! ```
//! use herdguard_http::cache_status::{CacheStatus, ForwardReason};
//! let v = CacheStatus::new("herdguard")
//!     .forwarded(ForwardReason::UriMiss)
//!     .fwd_status(200)
//!     .stored(true)
//!     .collapsed(true)
//!     .detail("coalesced");
//! assert_eq!(v.to_string(), "herdguard; fwd=uri-miss; fwd-status=200; stored; collapsed; detail=coalesced");
//! ```

use std::borrow::Cow;
use std::fmt;

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

use crate::sf;

/// The `Cache-Status` header field name.
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// The identifier herdguard writes its `Cache-Status` member under (the sidecar
/// and the tower layer alike).
pub const CACHE_NAME: &str = "herdguard";

/// `herdguard; hit; ttl=N`, rendered once per value of N on each thread: hits
/// of one entry share N for a second at a time, so a clone (a reference count)
/// replaces a rendering.
pub fn hit_member(ttl: i64) -> HeaderValue {
    thread_local! {
        static RENDERED: std::cell::RefCell<[(i64, Option<HeaderValue>); 8]> =
            std::cell::RefCell::new(Default::default());
    }
    let render = || {
        CacheStatus::new(CACHE_NAME)
            .hit()
            .ttl(ttl)
            .to_header_value()
    };
    RENDERED.with(|slots| {
        let Ok(mut slots) = slots.try_borrow_mut() else {
            return render();
        };
        let slot = &mut slots[usize::try_from(ttl.rem_euclid(8)).unwrap_or(0)];
        match &slot.1 {
            Some(v) if slot.0 == ttl => v.clone(),
            _ => {
                let v = render();
                *slot = (ttl, Some(v.clone()));
                v
            }
        }
    })
}

/// Why the request went forward to the next hop (RFC 9211 §2.2, `fwd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForwardReason {
    /// The cache was configured not to handle this request.
    Bypass,
    /// The request method's semantics require it to be forwarded.
    Method,
    /// The cache had no stored response for the target URI.
    UriMiss,
    /// The cache had responses for the URI, but the `Vary` headers did not match.
    VaryMiss,
    /// A miss, the cache not being able to say which kind.
    Miss,
    /// The request's semantics (e.g. `no-cache`, `max-age`) required forwarding.
    Request,
    /// The stored response was stale and needed validation.
    Stale,
    /// Only part of the response was stored.
    Partial,
}

impl ForwardReason {
    /// The token used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardReason::Bypass => "bypass",
            ForwardReason::Method => "method",
            ForwardReason::UriMiss => "uri-miss",
            ForwardReason::VaryMiss => "vary-miss",
            ForwardReason::Miss => "miss",
            ForwardReason::Request => "request",
            ForwardReason::Stale => "stale",
            ForwardReason::Partial => "partial",
        }
    }
}

/// This cache's member of the `Cache-Status` list (RFC 9211 §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheStatus {
    name: Cow<'static, str>,
    hit: bool,
    fwd: Option<ForwardReason>,
    fwd_status: Option<u16>,
    ttl: Option<i64>,
    stored: bool,
    collapsed: bool,
    key: Option<String>,
    detail: Option<String>,
}

/// RFC 8941 integers have at most 15 digits.
const SF_INT_MAX: i64 = 999_999_999_999_999;

impl CacheStatus {
    /// A member for the cache called `name` (serialized as a token when possible, else as a
    /// string), with no parameters yet.
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        CacheStatus {
            name: name.into(),
            hit: false,
            fwd: None,
            fwd_status: None,
            ttl: None,
            stored: false,
            collapsed: false,
            key: None,
            detail: None,
        }
    }

    /// `hit`: the response came from the cache without going forward (§2.1). Clears `fwd`.
    pub fn hit(mut self) -> Self {
        self.hit = true;
        self.fwd = None;
        self
    }

    /// `fwd`: the request went forward, and why (§2.2). Clears `hit`.
    pub fn forwarded(mut self, reason: ForwardReason) -> Self {
        self.fwd = Some(reason);
        self.hit = false;
        self
    }

    /// `fwd-status`: the status code the next hop answered with (§2.3).
    pub fn fwd_status(mut self, status: u16) -> Self {
        self.fwd_status = Some(status);
        self
    }

    /// `ttl`: remaining freshness in seconds, negative when stale (§2.4); see
    /// [`crate::freshness::StoredResponse::ttl_seconds`].
    pub fn ttl(mut self, seconds: i64) -> Self {
        self.ttl = Some(seconds.clamp(-SF_INT_MAX, SF_INT_MAX));
        self
    }

    /// `stored`: the forwarded response was stored (§2.5).
    pub fn stored(mut self, stored: bool) -> Self {
        self.stored = stored;
        self
    }

    /// `collapsed`: the forwarded request was collapsed with others (§2.6).
    pub fn collapsed(mut self, collapsed: bool) -> Self {
        self.collapsed = collapsed;
        self
    }

    /// `key`: a representation of the cache key (§2.7).
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// `detail`: implementation-specific information (§2.8), e.g. `stale-while-revalidate`,
    /// `stale-if-error`, `coalesced`, or a [`crate::storable::NotStorable`] name.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The member as a header value.
    pub fn to_header_value(&self) -> HeaderValue {
        // Serialization emits printable ASCII only, so this cannot fail; the fallback keeps the
        // no-panic promise anyway.
        // One buffer, handed over without a copy (`TryFrom<String>`): the proxy's hit
        // path renders one of these per response.
        HeaderValue::try_from(self.render()).unwrap_or_else(|_| HeaderValue::from_static("?"))
    }

    /// Appends this member after any `Cache-Status` members from upstream caches (§2: each
    /// cache appends its own member to the list).
    pub fn append_to(&self, headers: &mut HeaderMap) {
        headers.append(CACHE_STATUS, self.to_header_value());
    }
}

impl fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

impl CacheStatus {
    /// The member serialized as an RFC 8941 list member.
    fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(64);
        sf::write_token_or_string(&mut out, &self.name);
        if self.hit {
            out.push_str("; hit");
        }
        if let Some(fwd) = self.fwd {
            out.push_str("; fwd=");
            out.push_str(fwd.as_str());
        }
        if let Some(s) = self.fwd_status {
            let _ = write!(out, "; fwd-status={s}");
        }
        if let Some(t) = self.ttl {
            let _ = write!(out, "; ttl={t}");
        }
        if self.stored {
            out.push_str("; stored");
        }
        if self.collapsed {
            out.push_str("; collapsed");
        }
        if let Some(k) = &self.key {
            out.push_str("; key=");
            sf::write_sf_string(&mut out, k);
        }
        if let Some(d) = &self.detail {
            out.push_str("; detail=");
            sf::write_token_or_string(&mut out, d);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_hit_members_equal_a_fresh_rendering() {
        for ttl in [0, 1, 8, 9, 16, 59, 59, 86_400, 0] {
            let fresh = CacheStatus::new(CACHE_NAME)
                .hit()
                .ttl(ttl)
                .to_header_value();
            assert_eq!(hit_member(ttl), fresh, "{ttl}");
        }
    }

    #[test]
    fn rfc9211_hit_with_ttl() {
        let s = CacheStatus::new("ExampleCache").hit().ttl(376);
        assert_eq!(s.to_string(), "ExampleCache; hit; ttl=376");
    }

    #[test]
    fn rfc9211_stale_hit_negative_ttl_and_detail() {
        let s = CacheStatus::new("herdguard")
            .hit()
            .ttl(-12)
            .detail("stale-while-revalidate");
        assert_eq!(
            s.to_string(),
            "herdguard; hit; ttl=-12; detail=stale-while-revalidate"
        );
    }

    #[test]
    fn rfc9211_fwd_and_hit_are_exclusive() {
        let s = CacheStatus::new("c").hit().forwarded(ForwardReason::Stale);
        assert_eq!(s.to_string(), "c; fwd=stale");
        let s = CacheStatus::new("c").forwarded(ForwardReason::Stale).hit();
        assert_eq!(s.to_string(), "c; hit");
    }

    #[test]
    fn rfc9211_all_forward_tokens() {
        let all = [
            (ForwardReason::Bypass, "bypass"),
            (ForwardReason::Method, "method"),
            (ForwardReason::UriMiss, "uri-miss"),
            (ForwardReason::VaryMiss, "vary-miss"),
            (ForwardReason::Miss, "miss"),
            (ForwardReason::Request, "request"),
            (ForwardReason::Stale, "stale"),
            (ForwardReason::Partial, "partial"),
        ];
        for (r, s) in all {
            assert_eq!(r.as_str(), s);
            assert_eq!(
                CacheStatus::new("c").forwarded(r).to_string(),
                format!("c; fwd={s}")
            );
        }
    }

    #[test]
    fn rfc8941_names_keys_details_escaped() {
        let s = CacheStatus::new("my cache \"1\"")
            .forwarded(ForwardReason::Miss)
            .key("GET https://a/\\x")
            .detail("not storable: private");
        assert_eq!(
            s.to_string(),
            r#""my cache \"1\""; fwd=miss; key="GET https://a/\\x"; detail="not storable: private""#
        );
        let s = CacheStatus::new("1cache").detail("é");
        assert_eq!(s.to_string(), r#""1cache"; detail="?""#);
        assert!(s.to_header_value().to_str().is_ok());
    }

    #[test]
    fn rfc8941_ttl_clamped_to_integer_range() {
        let s = CacheStatus::new("c").hit().ttl(i64::MIN);
        assert_eq!(s.to_string(), "c; hit; ttl=-999999999999999");
    }

    #[test]
    fn rfc9211_2_append_after_upstream_members() {
        let mut h = HeaderMap::new();
        h.insert(CACHE_STATUS, HeaderValue::from_static("OriginCache; hit"));
        CacheStatus::new("herdguard")
            .forwarded(ForwardReason::UriMiss)
            .fwd_status(200)
            .append_to(&mut h);
        let v: Vec<_> = h.get_all(CACHE_STATUS).iter().collect();
        assert_eq!(
            v,
            vec![
                "OriginCache; hit",
                "herdguard; fwd=uri-miss; fwd-status=200"
            ]
        );
    }
}
