//! HTTP caching semantics for a **shared** cache — the rules `herdguard serve` (a caching reverse
//! proxy) and the tower layer (`herdguard-tower`) follow, as a pure library: no networking, no
//! async, no clock of its own.
//!
//! It implements RFC 9111 (HTTP Caching) for a shared cache, RFC 5861 (`stale-while-revalidate`,
//! `stale-if-error`), RFC 9213 (targeted cache control: `CDN-Cache-Control` and a configurable
//! field such as `Herdguard-Cache-Control`), and RFC 9211 (`Cache-Status`). Every time-dependent
//! function takes the current time as a [`std::time::SystemTime`] argument, so tests need no
//! sleeping; no input, however malformed, can make it panic.
//!
//! # How a proxy uses it
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
//! use herdguard_http::{
//!     check_storable, decide, CacheConfig, CacheKey, Decision, RequestDirectives, StoredResponse,
//!     Vary,
//! };
//!
//! let config = CacheConfig::default();
//! let mut req = HeaderMap::new();
//! req.insert("host", HeaderValue::from_static("api.example"));
//! req.insert("accept-encoding", HeaderValue::from_static("gzip"));
//!
//! // 1. Key the request (HEAD shares GET's entry).
//! let key = CacheKey::from_request(&Method::GET, &Uri::from_static("/items?page=2"), &req, "https")
//!     .expect("GET has a key");
//! assert_eq!(key.as_str(), "GET https://api.example/items?page=2");
//!
//! // 2. Miss: forward; then decide whether the origin's answer may be stored.
//! let sent = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
//! let received = sent + Duration::from_millis(200);
//! let mut resp = HeaderMap::new();
//! resp.insert("cache-control", HeaderValue::from_static("max-age=60, stale-while-revalidate=30"));
//! resp.insert("vary", HeaderValue::from_static("Accept-Encoding"));
//! let plan = check_storable(&Method::GET, &req, StatusCode::OK, &resp, &config).expect("storable");
//! herdguard_http::storable::prepare_for_storage(&mut resp, &plan);
//! let stored = StoredResponse::new(StatusCode::OK, &resp, sent, received, &config);
//! let variant = Vary::from_response(&resp).secondary_key(&req).expect("not Vary: *");
//!
//! // 3. A later request: same variant? Then ask what to do.
//! assert_eq!(Vary::from_response(&resp).secondary_key(&req), Some(variant));
//! let now = received + Duration::from_secs(75);
//! let decision = decide(&stored, &RequestDirectives::from_headers(&req), now);
//! assert_eq!(decision, Decision::StaleWhileRevalidate); // serve now, refresh in background
//! assert_eq!(stored.age_header(now), HeaderValue::from_static("75"));
//! ```
//!
//! # Layout
//!
//! * [`directives`] — parsing `Cache-Control` (request and response) and RFC 9213 targeted
//!   fields; choosing the [`ResponsePolicy`] that governs this cache.
//! * [`storable`] — may a response be stored (RFC 9111 §3), with a typed [`NotStorable`] reason;
//!   what to strip before storing (§3.1).
//! * [`freshness`] — freshness lifetime (§4.2.1, heuristics §4.2.2), age (§4.2.3), `Age` and
//!   `Date` headers; [`StoredResponse`], the per-entry facts.
//! * [`decision`] — may a stored response serve a request: fresh, stale-while-revalidate,
//!   stale by `max-stale`, revalidate (with the `stale-if-error` deadline), or 504.
//! * [`vary`] — secondary keys and matching (§4.1).
//! * [`negotiate`] — choosing another stored variant by q-value when none matches exactly
//!   (`Accept-Encoding`, `Accept-Language`; §4.1's MAY).
//! * [`revalidate`] — conditional requests (§4.3.1), whether a client's own conditions make a
//!   stored response a 304 ([`revalidate::not_modified`], §4.3.2), whether a 304 validates the
//!   stored response (§4.3.4, read as every major cache reads it), whether a `HEAD` answer
//!   confirms it ([`revalidate::head_verdict`], §4.3.5), and the header update (§3.2).
//! * [`range`] — the one `bytes` range a request asks of a whole stored response, and whether
//!   its `If-Range` holds (RFC 9110 §14, §13.1.5: strong validators only).
//! * [`partial`] — incomplete responses (§3.3): which broken-off `200` may be kept, and
//!   when the origin's `206` may be combined with it (§3.4).
//! * [`invalidate`] — URIs to invalidate after unsafe methods (§4.4).
//! * [`cache_status`] — the RFC 9211 `Cache-Status` member of this cache.
//! * [`key`] — effective request URI normalization, the primary [`CacheKey`], and a reverse
//!   proxy's configurable key ([`KeyConfig`]) and variant keys.
//! * [`target`] — request-target normalisation: dot-segments removed, hidden ones refused.
//! * [`hop`] — hop-by-hop fields, removed before a message is read or forwarded.
//! * [`rules`] — the storage policy of a cache built on the herdguard core: storable or not
//!   (and why), the TTL and stale windows it gets.
//! * [`response`] — [`response::CachedResponse`], the stored value (compact, serde for a fleet),
//!   and the fields it is answered with (`Age`, `Cache-Status`).
//! * [`variants`] — the `Vary` registry: which URLs vary, the key of each variant, all keys of a
//!   URL for invalidation.
//! * `engine` (feature `engine`) — the core's `Served` as a `Cache-Status` member, a
//!   [`rules::Freshness`] as the core's `Loaded`.
//!
//! # Deliberate limits
//!
//! Only `GET` responses are stored (`HEAD` is served from them); `206` responses are not stored
//! as such (only combined with a kept prefix, [`partial`]), and of a range request only one
//! `bytes` range is answered (from the whole stored response, or within a kept prefix);
//! a `304` without validators validates the stored response it was asked for
//! ([`revalidate::validates`]). Each module's docs state its conservative choices.

#![warn(missing_docs)]

use std::time::Duration;

use http::header::HeaderName;

pub mod cache_status;
pub mod decision;
pub mod directives;
#[cfg(feature = "engine")]
pub mod engine;
pub mod freshness;
pub mod hop;
pub mod invalidate;
pub mod key;
pub mod negotiate;
pub mod partial;
pub mod range;
pub mod response;
pub mod revalidate;
pub mod rules;
mod sf;
pub mod storable;
pub mod target;
pub mod variants;
pub mod vary;

pub use cache_status::{CacheStatus, ForwardReason};
pub use decision::{decide, Decision, RevalidateReason};
pub use directives::{RequestDirectives, ResponseDirectives, ResponsePolicy};
pub use freshness::StoredResponse;
pub use invalidate::invalidation_targets;
pub use key::{CacheKey, EffectiveUri, KeyConfig, QueryKey};
pub use storable::{check_storable, NotStorable, StorePlan};
pub use target::{RequestTarget, TargetError};
pub use vary::{SecondaryKey, Vary};

/// The `CDN-Cache-Control` targeted field (RFC 9213 §3).
pub const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

/// herdguard's own targeted field, first in the default target list.
pub const HERDGUARD_CACHE_CONTROL: HeaderName = HeaderName::from_static("herdguard-cache-control");

/// Settings of the cache that change how responses are interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// The RFC 9213 target list, most specific first. The first field in this list with a valid,
    /// non-empty value replaces `Cache-Control` and `Expires` for this cache. Default:
    /// `[Herdguard-Cache-Control, CDN-Cache-Control]`.
    pub target_fields: Vec<HeaderName>,
    /// Heuristic freshness as a percentage of `Date - Last-Modified` (RFC 9111 §4.2.2; the RFC
    /// suggests 10). Values above 100 count as 100.
    pub heuristic_percent: u32,
    /// Upper bound of a heuristic freshness lifetime. Default: one day.
    pub max_heuristic_freshness: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            target_fields: vec![HERDGUARD_CACHE_CONTROL, CDN_CACHE_CONTROL],
            heuristic_percent: 10,
            max_heuristic_freshness: Duration::from_secs(24 * 60 * 60),
        }
    }
}

impl CacheConfig {
    /// Puts `name` first in the target list (removing it from any later position), e.g. to use a
    /// deployment-specific `Acme-Cache-Control` over `CDN-Cache-Control`.
    pub fn with_target_field(mut self, name: HeaderName) -> Self {
        self.target_fields.retain(|n| *n != name);
        self.target_fields.insert(0, name);
        self
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use std::time::{Duration, SystemTime};

    use http::header::{HeaderName, HeaderValue};
    use http::HeaderMap;

    /// A header map from (name, value) pairs; repeated names become repeated lines.
    pub fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    /// Seconds since the Unix epoch as a `SystemTime`.
    pub fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue, Method, StatusCode};
    use std::time::SystemTime;

    /// Garbage of every shape through every entry point: nothing may panic (deterministic
    /// xorshift, so a failure is reproducible).
    #[test]
    fn garbage_input_never_panics() {
        const ALPHABET: &[u8] = b"  \t,,;==\"\"\\/:*?()01239max-gestl,W/\"#%@[]afpnruGMT";
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let names = [
            "cache-control",
            "cdn-cache-control",
            "herdguard-cache-control",
            "expires",
            "date",
            "age",
            "last-modified",
            "etag",
            "vary",
            "pragma",
            "location",
            "content-location",
            "connection",
            "authorization",
            "host",
        ];
        let config = CacheConfig::default();
        let base = EffectiveUri::parse_absolute("https://example.com/a/b").unwrap();
        for round in 0..3000 {
            let mut h = HeaderMap::new();
            for _ in 0..(next() % 6) {
                let len = (next() % 24) as usize;
                let s: Vec<u8> = (0..len)
                    .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize])
                    .collect();
                let name = names[(next() % names.len() as u64) as usize];
                if let Ok(v) = HeaderValue::from_bytes(&s) {
                    h.append(name, v);
                }
            }
            let status = StatusCode::from_u16(100 + (next() % 500) as u16).unwrap();
            let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(next() % (1 << 40));
            let _ = check_storable(&Method::GET, &h, status, &h, &config);
            let stored = StoredResponse::new(status, &h, t, t, &config);
            let req = RequestDirectives::from_headers(&h);
            let _ = decide(&stored, &req, t);
            let _ = decide(&stored, &req, SystemTime::UNIX_EPOCH);
            let _ = stored.ttl_seconds(t);
            let _ = stored.stale_usable_until();
            let _ = Vary::from_response(&h).secondary_key(&h);
            let _ = revalidate::conditional_headers(&h);
            let _ = revalidate::validates(&h, &h);
            let _ = revalidate::not_modified(&h, &h);
            for v in h.values() {
                let _ = range::if_range_holds(v, &h);
                if let Ok(text) = v.to_str() {
                    let _ = range::parse_range(text, next() % 4);
                }
            }
            let mut copy = h.clone();
            revalidate::update_stored_headers(&mut copy, &h);
            storable::prepare_for_storage(&mut copy, &StorePlan::default());
            let _ = invalidation_targets(&Method::POST, StatusCode::OK, &base, &h);
            let _ = key::EffectiveUri::from_request(&http::Uri::from_static("/"), &h, "http");
            if let Some(v) = h.get("location").and_then(|v| v.to_str().ok()) {
                let _ = base.resolve(v);
                let _ = EffectiveUri::parse_absolute(v);
            }
            let _ = CacheStatus::new(format!("c{round}"))
                .detail(String::from_utf8_lossy(
                    h.get("etag").map_or(&b""[..], |v| v.as_bytes()),
                ))
                .to_header_value();
        }
    }

    #[test]
    fn rfc9213_2_2_config_target_list() {
        let c = CacheConfig::default();
        assert_eq!(
            c.target_fields,
            vec![HERDGUARD_CACHE_CONTROL, CDN_CACHE_CONTROL]
        );
        let acme = HeaderName::from_static("acme-cache-control");
        let c = c.with_target_field(acme.clone());
        assert_eq!(
            c.target_fields,
            vec![acme, HERDGUARD_CACHE_CONTROL, CDN_CACHE_CONTROL]
        );
        let c = c.with_target_field(CDN_CACHE_CONTROL);
        assert_eq!(c.target_fields.first(), Some(&CDN_CACHE_CONTROL));
        assert_eq!(c.target_fields.len(), 3);
    }
}
