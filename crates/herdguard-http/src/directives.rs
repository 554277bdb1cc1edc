//! Parsing of cache directives (RFC 9111 §5.2, RFC 5861, RFC 9213).
//!
//! * [`RequestDirectives`] — what a client asks (`Cache-Control` on a request, with the
//!   `Pragma: no-cache` fallback of RFC 9111 §5.4).
//! * [`ResponseDirectives`] — what the origin allows (`Cache-Control` on a response, or an
//!   RFC 9213 targeted field such as `CDN-Cache-Control`).
//! * [`ResponsePolicy`] — the directives that govern *this* cache for one response, after the
//!   RFC 9213 §2.2 choice between the target list and `Cache-Control`/`Expires`.
//!
//! # Robustness rules (all conservative)
//!
//! * Names are case-insensitive; whitespace around members and around `=` is tolerated; empty list
//!   members are skipped; unknown directives are ignored (RFC 9111 §5.2.3).
//! * Arguments are accepted in token or quoted-string form (RFC 9111 §5.2).
//! * `delta-seconds` larger than 2^31 saturates to 2^31 (RFC 9111 §1.2.2).
//! * Response `max-age` / `s-maxage`: an invalid argument, or duplicates with different values,
//!   make the response stale (lifetime 0) — RFC 9111 §4.2.1 ("either the first occurrence should
//!   be used or the response should be considered stale") and §5.2.2 ("encouraged to consider
//!   responses that have invalid freshness information to be stale").
//! * Request `max-age`: an invalid argument means 0; duplicates keep the smallest.
//! * `stale-while-revalidate`, `stale-if-error`, `max-stale`: invalid arguments grant nothing;
//!   duplicates keep the smallest. `min-fresh`: invalid is ignored, duplicates keep the largest.
//! * Qualified `no-cache="..."` and `private="..."` let a shared cache store, and reuse without
//!   validation, the response minus the listed fields (RFC 9111 §5.2.2.4, §5.2.2.7); an
//!   unparsable field list is treated as the unqualified directive.
//! * Restrictive boolean directives (`no-store`, `no-cache`, `private`, `must-revalidate`,
//!   `proxy-revalidate`, `must-understand`, `only-if-cached`) count even when given a stray
//!   argument; the permissive `public` is ignored if it carries one.

use std::time::Duration;

use http::header::{HeaderName, CACHE_CONTROL, EXPIRES, PRAGMA};
use http::HeaderMap;

use crate::sf::{self, BareItem, MemberValue};
use crate::CacheConfig;

/// The largest delta-seconds value this crate represents: 2^31 seconds (RFC 9111 §1.2.2).
pub const MAX_DELTA_SECONDS: u64 = 2_147_483_648;

/// How much staleness a request's `max-stale` accepts (RFC 9111 §5.2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxStale {
    /// `max-stale` without an argument: a stale response of any staleness is acceptable.
    Any,
    /// `max-stale=N`: a response stale by at most N seconds is acceptable.
    Limit(Duration),
}

impl MaxStale {
    /// Whether a response stale by `staleness` is acceptable.
    pub fn allows(self, staleness: Duration) -> bool {
        match self {
            MaxStale::Any => true,
            MaxStale::Limit(limit) => staleness <= limit,
        }
    }
}

/// The reach of `private` or `no-cache` in a response (RFC 9111 §5.2.2.4, §5.2.2.7).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FieldScope {
    /// The directive is not present.
    #[default]
    Absent,
    /// The directive is present without field names: it applies to the whole response.
    All,
    /// The directive lists field names: it applies to those header fields only.
    Fields(Vec<HeaderName>),
}

impl FieldScope {
    /// The field names a qualified directive lists; none when absent or unqualified.
    pub fn listed(&self) -> &[HeaderName] {
        match self {
            FieldScope::Fields(names) => names,
            FieldScope::Absent | FieldScope::All => &[],
        }
    }
}

/// Cache directives of a request (RFC 9111 §5.2.1, RFC 5861 §4).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestDirectives {
    /// `max-age`: the client wants a response no older than this (§5.2.1.1).
    pub max_age: Option<Duration>,
    /// `max-stale`: the client accepts stale responses (§5.2.1.2).
    pub max_stale: Option<MaxStale>,
    /// `min-fresh`: the client wants at least this much freshness left (§5.2.1.3).
    pub min_fresh: Option<Duration>,
    /// `no-cache` (or `Pragma: no-cache` when there is no `Cache-Control`): validate first
    /// (§5.2.1.4, §5.4).
    pub no_cache: bool,
    /// `no-store`: store neither the request nor its response (§5.2.1.5).
    pub no_store: bool,
    /// `no-transform` (§5.2.1.6); informational for a caching proxy.
    pub no_transform: bool,
    /// `only-if-cached`: answer from the cache or with 504 (§5.2.1.7).
    pub only_if_cached: bool,
    /// `stale-if-error` on a request: the client accepts a stale response of at most this
    /// staleness if the origin fails (RFC 5861 §4).
    pub stale_if_error: Option<Duration>,
}

/// Cache directives of a response (RFC 9111 §5.2.2, RFC 5861 §3–4).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResponseDirectives {
    /// `max-age` (§5.2.2.1). `Some(0)` also stands for an invalid or conflicting value.
    pub max_age: Option<Duration>,
    /// `s-maxage` (§5.2.2.10); for a shared cache it overrides `max-age` and implies
    /// `proxy-revalidate`. `Some(0)` also stands for an invalid or conflicting value.
    pub s_maxage: Option<Duration>,
    /// `no-cache` (§5.2.2.4): unqualified (`All`), or the fields a reuse without
    /// validation leaves out (`Fields`).
    pub no_cache: FieldScope,
    /// `private` (§5.2.2.7).
    pub private: FieldScope,
    /// `no-store` (§5.2.2.5).
    pub no_store: bool,
    /// `must-revalidate` (§5.2.2.2).
    pub must_revalidate: bool,
    /// `proxy-revalidate` (§5.2.2.8).
    pub proxy_revalidate: bool,
    /// `public` (§5.2.2.9).
    pub public: bool,
    /// `no-transform` (§5.2.2.6).
    pub no_transform: bool,
    /// `must-understand` (§5.2.2.3).
    pub must_understand: bool,
    /// `stale-while-revalidate` (RFC 5861 §3).
    pub stale_while_revalidate: Option<Duration>,
    /// `stale-if-error` (RFC 5861 §4).
    pub stale_if_error: Option<Duration>,
}

impl ResponseDirectives {
    /// Whether any explicit freshness directive (`max-age` or `s-maxage`) is present.
    pub fn has_explicit_freshness(&self) -> bool {
        self.max_age.is_some() || self.s_maxage.is_some()
    }

    /// Whether a shared cache must not serve this response stale without revalidation:
    /// `must-revalidate`, `proxy-revalidate`, or `s-maxage` (RFC 9111 §5.2.2.2, §5.2.2.8,
    /// §5.2.2.10, §4.2.4).
    pub fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some()
    }

    /// Whether the response may never be reused without validation: an
    /// unqualified `no-cache` (§5.2.2.4). A qualified one only keeps the listed
    /// fields from reuse, which is done by not storing them ([`crate::storable`]).
    pub fn always_validate(&self) -> bool {
        self.no_cache == FieldScope::All
    }

    /// The header fields a shared cache stores and reuses this response without: those
    /// listed by a qualified `private` (§5.2.2.7) or `no-cache` (§5.2.2.4), each once.
    pub fn fields_not_shared(&self) -> Vec<HeaderName> {
        let mut names: Vec<HeaderName> = Vec::new();
        for name in self.private.listed().iter().chain(self.no_cache.listed()) {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }

    /// Whether a shared cache may store this response to a request with
    /// `Authorization`, and reuse it for any request (RFC 9111 §3.5): `public`,
    /// `s-maxage` or `must-revalidate` (not `proxy-revalidate`).
    pub fn shares_authorized(&self) -> bool {
        self.public || self.s_maxage.is_some() || self.must_revalidate
    }
}

/// Where the [`ResponsePolicy`] of a response came from (RFC 9213 §2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// `Cache-Control` (and `Expires`): no field of the target list had a valid, non-empty value.
    CacheControl,
    /// The named targeted field; `Cache-Control` and `Expires` are ignored.
    Targeted(HeaderName),
}

/// The directives that govern this (shared) cache for one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponsePolicy {
    /// The effective directives.
    pub directives: ResponseDirectives,
    /// Which header field they came from.
    pub source: PolicySource,
}

impl ResponsePolicy {
    /// Chooses and parses the governing directives of a response: the first field of
    /// `config.target_fields` with a valid, non-empty Dictionary value, else `Cache-Control`
    /// (RFC 9213 §2.2).
    pub fn from_headers(headers: &HeaderMap, config: &CacheConfig) -> Self {
        for name in &config.target_fields {
            if let Some(directives) = ResponseDirectives::from_targeted_field(headers, name) {
                return ResponsePolicy {
                    directives,
                    source: PolicySource::Targeted(name.clone()),
                };
            }
        }
        ResponsePolicy {
            directives: ResponseDirectives::from_cache_control(headers),
            source: PolicySource::CacheControl,
        }
    }

    /// Whether the `Expires` header field may be consulted (only when the policy comes from
    /// `Cache-Control`, RFC 9213 §2.2).
    pub fn uses_expires(&self) -> bool {
        self.source == PolicySource::CacheControl
    }

    /// Whether the response carries explicit expiration for this cache: `s-maxage`, `max-age`,
    /// or (when applicable) an `Expires` field (RFC 9111 §4.2.1).
    pub fn has_explicit_expiration(&self, headers: &HeaderMap) -> bool {
        self.directives.has_explicit_freshness()
            || (self.uses_expires() && headers.contains_key(EXPIRES))
    }
}

/// An argument as found in the header.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RawValue {
    None,
    Token(String),
    Quoted(String),
    Invalid,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct RawDirective {
    name: String,
    value: RawValue,
}

/// Splits `Cache-Control` field lines into directives (RFC 9110 §5.6.1 list, RFC 9111 §5.2).
fn split_cache_control<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Vec<RawDirective> {
    let mut out = Vec::new();
    for line in lines {
        let mut pos = 0;
        while pos <= line.len() {
            // Find the end of this member: a comma outside a quoted string.
            let start = pos;
            let mut in_quotes = false;
            let mut escaped = false;
            let mut end = line.len();
            let mut i = start;
            while let Some(&c) = line.get(i) {
                if in_quotes {
                    if escaped {
                        escaped = false;
                    } else if c == b'\\' {
                        escaped = true;
                    } else if c == b'"' {
                        in_quotes = false;
                    }
                } else if c == b'"' {
                    in_quotes = true;
                } else if c == b',' {
                    end = i;
                    break;
                }
                i += 1;
            }
            if let Some(member) = line.get(start..end) {
                if let Some(d) = parse_member(member) {
                    out.push(d);
                }
            }
            pos = end + 1;
        }
    }
    out
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn parse_member(member: &[u8]) -> Option<RawDirective> {
    let member = trim_ows(member);
    if member.is_empty() {
        return None;
    }
    let (name, arg) = match member.iter().position(|&c| c == b'=') {
        Some(eq) => (
            trim_ows(member.get(..eq)?),
            Some(trim_ows(member.get(eq + 1..)?)),
        ),
        None => (member, None),
    };
    if name.is_empty() || !name.iter().all(|&c| sf::is_tchar(c)) {
        return None;
    }
    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
    let value = match arg {
        None => RawValue::None,
        Some(arg) => parse_argument(arg),
    };
    Some(RawDirective { name, value })
}

fn parse_argument(arg: &[u8]) -> RawValue {
    if arg.first() == Some(&b'"') {
        let mut out = Vec::new();
        let mut i = 1;
        loop {
            match arg.get(i) {
                None => return RawValue::Invalid,
                Some(b'\\') => match arg.get(i + 1) {
                    Some(&c) => {
                        out.push(c);
                        i += 2;
                    }
                    None => return RawValue::Invalid,
                },
                Some(b'"') => {
                    if i + 1 != arg.len() {
                        return RawValue::Invalid;
                    }
                    return RawValue::Quoted(String::from_utf8_lossy(&out).into_owned());
                }
                Some(&c) => {
                    out.push(c);
                    i += 1;
                }
            }
        }
    }
    if !arg.is_empty() && arg.iter().all(|&c| sf::is_tchar(c)) {
        RawValue::Token(String::from_utf8_lossy(arg).into_owned())
    } else {
        RawValue::Invalid
    }
}

/// Parses `delta-seconds` (RFC 9111 §1.2.2), saturating at 2^31.
fn parse_delta(s: &str) -> Option<Duration> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut v: u64 = 0;
    for c in s.bytes() {
        v = v
            .saturating_mul(10)
            .saturating_add(u64::from(c - b'0'))
            .min(MAX_DELTA_SECONDS);
    }
    Some(Duration::from_secs(v))
}

/// A delta argument; `strict` (targeted fields) refuses the quoted form (RFC 9213 §2.1).
fn delta_arg(value: &RawValue, strict: bool) -> Option<Duration> {
    match value {
        RawValue::Token(t) => parse_delta(t),
        RawValue::Quoted(q) if !strict => parse_delta(q.trim()),
        _ => None,
    }
}

fn min_opt(slot: &mut Option<Duration>, v: Duration) {
    *slot = Some(slot.map_or(v, |old| old.min(v)));
}

/// Duplicates with different values collapse to 0 (stale), RFC 9111 §4.2.1.
fn strict_opt(slot: &mut Option<Duration>, v: Duration) {
    *slot = match *slot {
        Some(old) if old != v => Some(Duration::ZERO),
        _ => Some(v),
    };
}

/// Parses a field-name list argument (`#field-name`); `None` when malformed or empty.
fn field_list(value: &str) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for part in value.split(',') {
        let part = part.trim_matches(|c| c == ' ' || c == '\t');
        if part.is_empty() {
            continue;
        }
        let name = HeaderName::from_bytes(part.as_bytes()).ok()?;
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if names.is_empty() {
        None
    } else {
        Some(names)
    }
}

/// Adds one `no-cache` / `private` member to `slot`: a field list widens a qualified one; the
/// unqualified form, or an unparsable list, covers the whole response.
fn merge_scope(slot: &mut FieldScope, value: &RawValue) {
    let new = match value {
        RawValue::Token(v) | RawValue::Quoted(v) => match field_list(v) {
            Some(names) => FieldScope::Fields(names),
            None => FieldScope::All,
        },
        _ => FieldScope::All,
    };
    *slot = match (std::mem::take(slot), new) {
        (FieldScope::All, _) | (_, FieldScope::All) => FieldScope::All,
        (FieldScope::Absent, n) => n,
        (FieldScope::Fields(mut a), FieldScope::Fields(b)) => {
            for name in b {
                if !a.contains(&name) {
                    a.push(name);
                }
            }
            FieldScope::Fields(a)
        }
        (old, FieldScope::Absent) => old,
    };
}

impl ResponseDirectives {
    /// Parses all `Cache-Control` field lines of a response.
    pub fn from_cache_control(headers: &HeaderMap) -> Self {
        let lines = headers.get_all(CACHE_CONTROL).iter().map(|v| v.as_bytes());
        Self::from_raw(&split_cache_control(lines), false)
    }

    /// Parses one `Cache-Control` value string (convenience for tests and tools).
    pub fn parse(value: &str) -> Self {
        Self::from_raw(
            &split_cache_control(std::iter::once(value.as_bytes())),
            false,
        )
    }

    /// Parses the targeted field `name` (RFC 9213 §2.1) as a Dictionary. Returns `None` when
    /// the field is absent, empty, or fails to parse — the cases in which RFC 9213 says the field
    /// is ignored.
    pub fn from_targeted_field(headers: &HeaderMap, name: &HeaderName) -> Option<Self> {
        let lines: Vec<&[u8]> = headers.get_all(name).iter().map(|v| v.as_bytes()).collect();
        if lines.is_empty() {
            return None;
        }
        let dict = sf::parse_dictionary(&lines)?;
        if dict.is_empty() {
            return None;
        }
        let raw: Vec<RawDirective> = dict
            .into_iter()
            .filter_map(|(name, member)| {
                let value = match member {
                    MemberValue::Item(BareItem::Boolean(true)) => RawValue::None,
                    // An explicit false: the directive is not in force.
                    MemberValue::Item(BareItem::Boolean(false)) => return None,
                    MemberValue::Item(BareItem::Integer(n)) if n >= 0 => {
                        RawValue::Token(n.to_string())
                    }
                    MemberValue::Item(BareItem::Token(t)) => RawValue::Token(t),
                    MemberValue::Item(BareItem::String(s)) => RawValue::Quoted(s),
                    _ => RawValue::Invalid,
                };
                Some(RawDirective { name, value })
            })
            .collect();
        Some(Self::from_raw(&raw, true))
    }

    fn from_raw(raw: &[RawDirective], strict: bool) -> Self {
        let mut d = ResponseDirectives::default();
        for RawDirective { name, value } in raw {
            let delta = delta_arg(value, strict);
            match name.as_str() {
                "max-age" => strict_opt(&mut d.max_age, delta.unwrap_or(Duration::ZERO)),
                "s-maxage" => strict_opt(&mut d.s_maxage, delta.unwrap_or(Duration::ZERO)),
                "no-store" => d.no_store = true,
                "no-cache" => merge_scope(&mut d.no_cache, value),
                "private" => merge_scope(&mut d.private, value),
                "must-revalidate" => d.must_revalidate = true,
                "proxy-revalidate" => d.proxy_revalidate = true,
                "public" if *value == RawValue::None => d.public = true,
                "no-transform" => d.no_transform = true,
                "must-understand" => d.must_understand = true,
                "stale-while-revalidate" => {
                    if let Some(v) = delta {
                        min_opt(&mut d.stale_while_revalidate, v);
                    }
                }
                "stale-if-error" => {
                    if let Some(v) = delta {
                        min_opt(&mut d.stale_if_error, v);
                    }
                }
                _ => {}
            }
        }
        d
    }
}

impl RequestDirectives {
    /// Whether these directives demand a revalidation whatever is stored
    /// (`Some(true)`: `no-cache`, `max-age=0`), never demand one
    /// (`Some(false)`: no `max-age` or `min-fresh`), or only when the stored
    /// response falls short of them (`None`:
    /// [`crate::response::CachedResponse::falls_short_of`]).
    pub fn demands_revalidation(&self) -> Option<bool> {
        if self.no_cache || self.max_age == Some(Duration::ZERO) {
            Some(true)
        } else if self.max_age.is_none() && self.min_fresh.is_none() {
            Some(false)
        } else {
            None
        }
    }

    /// Parses the `Cache-Control` field lines of a request; when there is none, a `Pragma`
    /// containing `no-cache` counts as `Cache-Control: no-cache` (RFC 9111 §5.4, deprecated but
    /// honoured conservatively).
    pub fn from_headers(headers: &HeaderMap) -> Self {
        if !headers.contains_key(CACHE_CONTROL) {
            let pragma_no_cache = headers.get_all(PRAGMA).iter().any(|v| {
                split_cache_control(std::iter::once(v.as_bytes()))
                    .iter()
                    .any(|d| d.name == "no-cache")
            });
            return RequestDirectives {
                no_cache: pragma_no_cache,
                ..Default::default()
            };
        }
        let lines = headers.get_all(CACHE_CONTROL).iter().map(|v| v.as_bytes());
        Self::from_raw(&split_cache_control(lines))
    }

    /// Parses one `Cache-Control` request value string.
    pub fn parse(value: &str) -> Self {
        Self::from_raw(&split_cache_control(std::iter::once(value.as_bytes())))
    }

    fn from_raw(raw: &[RawDirective]) -> Self {
        let mut d = RequestDirectives::default();
        for RawDirective { name, value } in raw {
            let delta = delta_arg(value, false);
            match name.as_str() {
                "max-age" => min_opt(&mut d.max_age, delta.unwrap_or(Duration::ZERO)),
                "max-stale" => {
                    let new = match value {
                        RawValue::None => Some(MaxStale::Any),
                        _ => delta.map(MaxStale::Limit),
                    };
                    if let Some(new) = new {
                        d.max_stale = Some(match (d.max_stale, new) {
                            (Some(MaxStale::Limit(a)), MaxStale::Limit(b)) => {
                                MaxStale::Limit(a.min(b))
                            }
                            (Some(MaxStale::Limit(a)), MaxStale::Any) => MaxStale::Limit(a),
                            (_, n) => n,
                        });
                    }
                }
                "min-fresh" => {
                    if let Some(v) = delta {
                        d.min_fresh = Some(d.min_fresh.map_or(v, |old| old.max(v)));
                    }
                }
                "no-cache" => d.no_cache = true,
                "no-store" => d.no_store = true,
                "no-transform" => d.no_transform = true,
                "only-if-cached" => d.only_if_cached = true,
                "stale-if-error" => {
                    if let Some(v) = delta {
                        min_opt(&mut d.stale_if_error, v);
                    }
                }
                _ => {}
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_requests_demand_a_revalidation() {
        for (cc, demanded) in [
            ("no-cache", Some(true)),
            ("max-age=0", Some(true)),
            ("max-age=0, max-stale", Some(true)),
            ("", Some(false)),
            ("max-stale=5, stale-if-error=9", Some(false)),
            ("max-age=5", None),
            ("min-fresh=5", None),
        ] {
            assert_eq!(
                RequestDirectives::parse(cc).demands_revalidation(),
                demanded,
                "{cc}"
            );
        }
    }
    use http::HeaderValue;

    fn secs(n: u64) -> Option<Duration> {
        Some(Duration::from_secs(n))
    }

    fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn rfc9111_5_2_2_response_directives_basic() {
        let d = ResponseDirectives::parse(
            "public, max-age=60, s-maxage=120, must-revalidate, proxy-revalidate, no-transform",
        );
        assert!(d.public && d.must_revalidate && d.proxy_revalidate && d.no_transform);
        assert_eq!(d.max_age, secs(60));
        assert_eq!(d.s_maxage, secs(120));
        assert!(!d.no_store);
        assert_eq!(d.no_cache, FieldScope::Absent);
        assert!(d.forbids_stale());
    }

    #[test]
    fn rfc9111_5_2_case_whitespace_and_empty_members() {
        let d = ResponseDirectives::parse("  MAX-AGE = 30 ,, ,\tNo-Store  ,");
        assert_eq!(d.max_age, secs(30));
        assert!(d.no_store);
    }

    #[test]
    fn rfc9111_5_2_quoted_arguments_accepted() {
        let d = ResponseDirectives::parse(r#"max-age="15", stale-if-error="30""#);
        assert_eq!(d.max_age, secs(15));
        assert_eq!(d.stale_if_error, secs(30));
    }

    #[test]
    fn rfc9111_5_2_2_invalid_max_age_means_stale() {
        for v in [
            "max-age=abc",
            "max-age=-1",
            "max-age=1.5",
            "max-age=",
            "max-age",
            "max-age=\"12",
            "max-age=6 0",
        ] {
            assert_eq!(ResponseDirectives::parse(v).max_age, secs(0), "{v}");
        }
    }

    #[test]
    fn rfc9111_4_2_1_conflicting_duplicates_are_stale_equal_ones_kept() {
        assert_eq!(
            ResponseDirectives::parse("max-age=10, max-age=20").max_age,
            secs(0)
        );
        assert_eq!(
            ResponseDirectives::parse("max-age=10, max-age=10").max_age,
            secs(10)
        );
        let mut h = hm(&[
            ("cache-control", "s-maxage=5"),
            ("cache-control", "s-maxage=7"),
        ]);
        assert_eq!(ResponseDirectives::from_cache_control(&h).s_maxage, secs(0));
        h.clear();
        assert_eq!(
            ResponseDirectives::from_cache_control(&h),
            ResponseDirectives::default()
        );
    }

    #[test]
    fn rfc9111_1_2_2_delta_seconds_saturate_at_2_pow_31() {
        let d = ResponseDirectives::parse("max-age=99999999999999999999999999");
        assert_eq!(d.max_age, secs(MAX_DELTA_SECONDS));
        let d = ResponseDirectives::parse("max-age=2147483649");
        assert_eq!(d.max_age, secs(MAX_DELTA_SECONDS));
    }

    #[test]
    fn rfc9111_5_2_2_7_private_qualified_and_unqualified() {
        let d = ResponseDirectives::parse(r#"private="Set-Cookie, X-User", max-age=5"#);
        assert_eq!(
            d.private,
            FieldScope::Fields(vec![
                HeaderName::from_static("set-cookie"),
                HeaderName::from_static("x-user")
            ])
        );
        assert_eq!(d.max_age, secs(5));
        assert_eq!(
            ResponseDirectives::parse("private").private,
            FieldScope::All
        );
        // Malformed or empty field lists degrade to unqualified private.
        assert_eq!(
            ResponseDirectives::parse(r#"private="bad name""#).private,
            FieldScope::All
        );
        assert_eq!(
            ResponseDirectives::parse(r#"private="""#).private,
            FieldScope::All
        );
        // Duplicates: union, and unqualified wins.
        assert_eq!(
            ResponseDirectives::parse(r#"private="a", private=b"#).private,
            FieldScope::Fields(vec![
                HeaderName::from_static("a"),
                HeaderName::from_static("b")
            ])
        );
        assert_eq!(
            ResponseDirectives::parse(r#"private="a", private"#).private,
            FieldScope::All
        );
    }

    #[test]
    fn rfc9111_5_2_2_4_qualified_no_cache_lists_fields() {
        let d = ResponseDirectives::parse(r#"no-cache="Set-Cookie, X-User""#);
        assert_eq!(
            d.no_cache,
            FieldScope::Fields(vec![
                HeaderName::from_static("set-cookie"),
                HeaderName::from_static("x-user")
            ])
        );
        assert!(!d.always_validate());
        for all in [
            "no-cache",
            r#"no-cache="bad name""#,
            r#"no-cache="a", no-cache"#,
        ] {
            let d = ResponseDirectives::parse(all);
            assert_eq!(d.no_cache, FieldScope::All, "{all}");
            assert!(d.always_validate(), "{all}");
        }
    }

    #[test]
    fn rfc5861_swr_and_sie_parse_and_invalid_grants_nothing() {
        let d = ResponseDirectives::parse("stale-while-revalidate=30, stale-if-error=600");
        assert_eq!(d.stale_while_revalidate, secs(30));
        assert_eq!(d.stale_if_error, secs(600));
        let d = ResponseDirectives::parse("stale-while-revalidate=x, stale-if-error");
        assert_eq!(d.stale_while_revalidate, None);
        assert_eq!(d.stale_if_error, None);
        let d = ResponseDirectives::parse("stale-while-revalidate=30, stale-while-revalidate=10");
        assert_eq!(d.stale_while_revalidate, secs(10));
    }

    #[test]
    fn rfc9111_5_2_restrictive_flags_with_stray_arguments_still_count() {
        let d = ResponseDirectives::parse("no-store=1, must-revalidate=yes, public=oops");
        assert!(d.no_store && d.must_revalidate);
        assert!(!d.public);
    }

    #[test]
    fn rfc9111_5_2_garbage_never_panics_and_unknown_ignored() {
        for g in [
            "\"",
            "=",
            "==,==",
            ",,,",
            "\"a,b\"=c",
            "max-age=\"\\",
            "a=\"x\"y",
            "ü=1",
            "foo, bar=baz, max-age=3",
        ] {
            let _ = ResponseDirectives::parse(g);
            let _ = RequestDirectives::parse(g);
        }
        assert_eq!(
            ResponseDirectives::parse("foo, bar=baz, max-age=3").max_age,
            secs(3)
        );
        // A comma inside a quoted string does not split members.
        let d = ResponseDirectives::parse(r#"x="a, max-age=9", max-age=4"#);
        assert_eq!(d.max_age, secs(4));
    }

    #[test]
    fn rfc9111_5_2_1_request_directives() {
        let r = RequestDirectives::parse(
            "max-age=10, max-stale=20, min-fresh=5, no-cache, no-store, only-if-cached, no-transform, stale-if-error=9",
        );
        assert_eq!(r.max_age, secs(10));
        assert_eq!(r.max_stale, Some(MaxStale::Limit(Duration::from_secs(20))));
        assert_eq!(r.min_fresh, secs(5));
        assert!(r.no_cache && r.no_store && r.only_if_cached && r.no_transform);
        assert_eq!(r.stale_if_error, secs(9));
    }

    #[test]
    fn rfc9111_5_2_1_2_max_stale_forms() {
        assert_eq!(
            RequestDirectives::parse("max-stale").max_stale,
            Some(MaxStale::Any)
        );
        assert_eq!(RequestDirectives::parse("max-stale=x").max_stale, None);
        assert_eq!(
            RequestDirectives::parse("max-stale, max-stale=3").max_stale,
            Some(MaxStale::Limit(Duration::from_secs(3)))
        );
        assert_eq!(
            RequestDirectives::parse("max-stale=3, max-stale").max_stale,
            Some(MaxStale::Limit(Duration::from_secs(3)))
        );
        assert!(MaxStale::Any.allows(Duration::from_secs(1_000_000)));
        assert!(MaxStale::Limit(Duration::from_secs(3)).allows(Duration::from_secs(3)));
        assert!(!MaxStale::Limit(Duration::from_secs(3)).allows(Duration::from_secs(4)));
    }

    #[test]
    fn rfc9111_5_2_1_request_invalid_and_duplicates_conservative() {
        assert_eq!(RequestDirectives::parse("max-age=zz").max_age, secs(0));
        assert_eq!(
            RequestDirectives::parse("max-age=10, max-age=3").max_age,
            secs(3)
        );
        assert_eq!(
            RequestDirectives::parse("min-fresh=10, min-fresh=30, min-fresh=x").min_fresh,
            secs(30)
        );
    }

    #[test]
    fn rfc9111_5_4_pragma_no_cache_only_without_cache_control() {
        let r = RequestDirectives::from_headers(&hm(&[("pragma", "No-Cache")]));
        assert!(r.no_cache);
        let r = RequestDirectives::from_headers(&hm(&[
            ("pragma", "no-cache"),
            ("cache-control", "max-age=5"),
        ]));
        assert!(!r.no_cache);
        assert_eq!(r.max_age, secs(5));
        let r = RequestDirectives::from_headers(&hm(&[("pragma", "foo")]));
        assert!(!r.no_cache);
    }

    #[test]
    fn rfc9213_2_2_targeted_field_takes_precedence() {
        let config = CacheConfig::default();
        let h = hm(&[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=600"),
        ]);
        let p = ResponsePolicy::from_headers(&h, &config);
        assert_eq!(
            p.source,
            PolicySource::Targeted(HeaderName::from_static("cdn-cache-control"))
        );
        assert_eq!(p.directives.max_age, secs(600));
        assert!(!p.directives.no_store);
        assert!(!p.uses_expires());
    }

    #[test]
    fn rfc9213_2_2_target_list_order() {
        let config = CacheConfig::default();
        let h = hm(&[
            ("cdn-cache-control", "max-age=600"),
            (
                "herdguard-cache-control",
                "max-age=7, stale-while-revalidate=3",
            ),
        ]);
        let p = ResponsePolicy::from_headers(&h, &config);
        assert_eq!(
            p.source,
            PolicySource::Targeted(HeaderName::from_static("herdguard-cache-control"))
        );
        assert_eq!(p.directives.max_age, secs(7));
        assert_eq!(p.directives.stale_while_revalidate, secs(3));
    }

    #[test]
    fn rfc9213_2_1_invalid_or_empty_targeted_field_is_ignored() {
        let config = CacheConfig::default();
        for bad in ["", "Max-Age=60", "max-age=60,", "max-age=\"unterminated"] {
            let h = hm(&[("cdn-cache-control", bad), ("cache-control", "max-age=9")]);
            let p = ResponsePolicy::from_headers(&h, &config);
            assert_eq!(p.source, PolicySource::CacheControl, "{bad:?}");
            assert_eq!(p.directives.max_age, secs(9));
        }
        // Not on the target list: no effect.
        let h = hm(&[
            ("other-cache-control", "no-store"),
            ("cache-control", "max-age=9"),
        ]);
        assert_eq!(
            ResponsePolicy::from_headers(&h, &config).source,
            PolicySource::CacheControl
        );
    }

    #[test]
    fn rfc9213_2_1_value_types() {
        let name = HeaderName::from_static("cdn-cache-control");
        let d = |v: &str| {
            ResponseDirectives::from_targeted_field(&hm(&[("cdn-cache-control", v)]), &name)
                .unwrap()
        };
        assert_eq!(d("max-age=1.5").max_age, secs(0));
        assert_eq!(d("max-age=-5").max_age, secs(0));
        assert_eq!(d("max-age=\"60\"").max_age, secs(0));
        assert_eq!(d("max-age=(1 2)").max_age, secs(0));
        assert!(!d("no-store=?0").no_store);
        assert!(d("no-store").no_store);
        assert_eq!(
            d("private=\"set-cookie\"").private,
            FieldScope::Fields(vec![HeaderName::from_static("set-cookie")])
        );
        assert_eq!(
            d("no-cache=\"set-cookie\"").no_cache,
            FieldScope::Fields(vec![HeaderName::from_static("set-cookie")])
        );
        // Unknown directive: parses, but changes nothing.
        assert_eq!(d("none"), ResponseDirectives::default());
        // Last duplicate wins in a Dictionary (RFC 8941 §4.2.2).
        assert_eq!(d("max-age=1, max-age=2").max_age, secs(2));
    }

    #[test]
    fn rfc9111_4_2_1_explicit_expiration_detection() {
        let config = CacheConfig::default();
        let h = hm(&[("expires", "0")]);
        assert!(ResponsePolicy::from_headers(&h, &config).has_explicit_expiration(&h));
        let h = hm(&[("expires", "0"), ("cdn-cache-control", "public")]);
        assert!(!ResponsePolicy::from_headers(&h, &config).has_explicit_expiration(&h));
        let h = hm(&[("cache-control", "public")]);
        assert!(!ResponsePolicy::from_headers(&h, &config).has_explicit_expiration(&h));
    }
}
