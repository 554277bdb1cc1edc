//! Conditional revalidation (RFC 9111 §4.3) and header updates (§3.2).
//!
//! 1. [`conditional_headers`] builds `If-None-Match` / `If-Modified-Since` from a stored response
//!    (§4.3.1). Send them on the request to the origin.
//! 2. On a `304`, [`validates`] says whether it validates the stored response the request was
//!    made from (§4.3.4); [`update_stored_headers`] merges its header fields into it (§3.2). Then recompute
//!    the [`crate::freshness::StoredResponse`] with the 304's request/response times.
//! 3. On a full response (e.g. `200`), store it as new; on a `5xx` (or no answer), the proxy may
//!    serve stale only if the decision's `stale_if_error_until` allows it (§4.3.3, RFC 5861 §4).

use std::time::SystemTime;

use http::header::{
    HeaderName, HeaderValue, CONTENT_LENGTH, DATE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH,
    LAST_MODIFIED,
};
use http::HeaderMap;

use crate::freshness::{format_http_date, parse_http_date};
use crate::hop::connection_listed;
use crate::storable::is_never_stored;

/// An entity tag (RFC 9110 §8.8.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntityTag {
    /// Whether it is a weak tag (`W/` prefix).
    pub weak: bool,
    /// The opaque tag, without the quotes.
    pub tag: String,
}

impl EntityTag {
    /// Parses one entity-tag: `[W/] DQUOTE *etagc DQUOTE`, where etagc is `%x21 / %x23-7E /
    /// obs-text`. Surrounding whitespace is tolerated; anything else is `None`.
    pub fn parse(s: &[u8]) -> Option<EntityTag> {
        let mut s = s;
        while let [b' ' | b'\t', rest @ ..] = s {
            s = rest;
        }
        while let [rest @ .., b' ' | b'\t'] = s {
            s = rest;
        }
        let (weak, rest) = match s {
            [b'W', b'/', rest @ ..] => (true, rest),
            _ => (false, s),
        };
        let inner = match rest {
            [b'"', inner @ .., b'"'] => inner,
            _ => return None,
        };
        if !inner
            .iter()
            .all(|&c| c == 0x21 || (0x23..=0x7e).contains(&c) || c >= 0x80)
        {
            return None;
        }
        Some(EntityTag {
            weak,
            tag: String::from_utf8_lossy(inner).into_owned(),
        })
    }

    /// The `ETag` of a response: one valid entity-tag on a single line, else `None`.
    pub fn from_headers(headers: &HeaderMap) -> Option<EntityTag> {
        let mut all = headers.get_all(ETAG).iter();
        let first = all.next()?;
        if all.next().is_some() {
            return None;
        }
        EntityTag::parse(first.as_bytes())
    }

    /// Strong comparison (RFC 9110 §8.8.3.2): both strong and identical.
    pub fn strong_eq(&self, other: &EntityTag) -> bool {
        !self.weak && !other.weak && self.tag == other.tag
    }

    /// Weak comparison (RFC 9110 §8.8.3.2): identical opaque tags.
    pub fn weak_eq(&self, other: &EntityTag) -> bool {
        self.tag == other.tag
    }
}

/// Whether a stored response has a validator (a valid `ETag` or `Last-Modified`) that a
/// conditional request could use.
pub fn has_validator(stored: &HeaderMap) -> bool {
    EntityTag::from_headers(stored).is_some() || last_modified(stored).is_some()
}

fn last_modified(headers: &HeaderMap) -> Option<SystemTime> {
    single_date(headers, LAST_MODIFIED)
}

/// The date in field `name`: one valid HTTP-date on a single line, else `None`.
pub(crate) fn single_date(headers: &HeaderMap, name: HeaderName) -> Option<SystemTime> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    if all.next().is_some() {
        return None;
    }
    parse_http_date(first)
}

/// The conditional header fields to revalidate a stored response (RFC 9111 §4.3.1):
/// `If-None-Match` with its entity-tag (weak tags are fine here, RFC 9110 §13.1.2) and
/// `If-Modified-Since` with its `Last-Modified` date. Empty when it has no validator, in which
/// case the proxy sends an unconditional request.
pub fn conditional_headers(stored: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    if EntityTag::from_headers(stored).is_some() {
        if let Some(v) = stored.get(ETAG) {
            out.insert(IF_NONE_MATCH, trimmed(v));
        }
    }
    if let Some(lm) = last_modified(stored) {
        out.insert(IF_MODIFIED_SINCE, format_http_date(lm));
    }
    out
}

fn trimmed(v: &HeaderValue) -> HeaderValue {
    let b = v.as_bytes();
    let start = b.iter().position(|c| !matches!(c, b' ' | b'\t'));
    let end = b.iter().rposition(|c| !matches!(c, b' ' | b'\t'));
    match (start, end) {
        (Some(s), Some(e)) => b
            .get(s..=e)
            .and_then(|x| HeaderValue::from_bytes(x).ok())
            .unwrap_or_else(|| v.clone()),
        _ => v.clone(),
    }
}

/// Whether a client's `If-None-Match` matches a response's `ETag` (RFC 9110 §13.1.2): `*`, or
/// any listed entity-tag equal by the weak comparison. A cache answers such a request `304`.
/// Members that do not parse are ignored; a list that does not parse matches nothing.
pub fn none_match(if_none_match: &HeaderValue, etag: &EntityTag) -> bool {
    let b = if_none_match.as_bytes();
    if b.iter().all(|c| matches!(c, b' ' | b'\t' | b'*')) && b.contains(&b'*') {
        return true;
    }
    // Split on commas outside quotes: an opaque tag may itself contain a comma.
    let mut start = 0;
    let mut quoted = false;
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                if b.get(start..i)
                    .and_then(EntityTag::parse)
                    .is_some_and(|t| t.weak_eq(etag))
                {
                    return true;
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    b.get(start..)
        .and_then(EntityTag::parse)
        .is_some_and(|t| t.weak_eq(etag))
}

/// Whether a client's `If-None-Match` — or, without one, `If-Modified-Since` (RFC 9110 §13.1.3:
/// ignored when `If-None-Match` is present) — says it holds the `stored` response already: a
/// cache answers such a request `304` (RFC 9111 §4.3.2). The modification date is
/// `Last-Modified`, else `Date`.
pub fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    if let Some(inm) = request.get(IF_NONE_MATCH) {
        return EntityTag::from_headers(stored).is_some_and(|etag| none_match(inm, &etag));
    }
    let Some(since) = request.get(IF_MODIFIED_SINCE).and_then(parse_http_date) else {
        return false;
    };
    let modified = stored
        .get(LAST_MODIFIED)
        .or_else(|| stored.get(DATE))
        .and_then(parse_http_date);
    modified.is_some_and(|m| m <= since)
}

/// Whether a `304` to a conditional request made from `stored` (with
/// [`conditional_headers`]) validates it (RFC 9111 §4.3.4, read as every major
/// cache reads it):
///
/// * the 304 and `stored` both have an `ETag`: they must match — by the strong
///   comparison when the 304's tag is strong, else by the weak one;
/// * else both have a `Last-Modified`: the dates must be equal;
/// * else (the 304 names no validator `stored` has, as many servers send it):
///   it validates `stored`, the one response the request was made from.
///
/// The letter of §4.3.4 selects nothing for a 304 without validators when the
/// stored response has one, which makes the cache refetch; nginx, Varnish,
/// Apache httpd, Traffic Server and Squid all take it as validating, and so
/// does this. Only a validator that contradicts the stored one forces the
/// refetch. A proxy holds one stored response per key, so "the most recent
/// matching one" of §4.3.4 is this one.
pub fn validates(not_modified: &HeaderMap, stored: &HeaderMap) -> bool {
    if let (Some(new), Some(old)) = (
        EntityTag::from_headers(not_modified),
        EntityTag::from_headers(stored),
    ) {
        return if new.weak {
            new.weak_eq(&old)
        } else {
            new.strong_eq(&old)
        };
    }
    if let (Some(new), Some(old)) = (last_modified(not_modified), last_modified(stored)) {
        return new == old;
    }
    true
}

/// Whether a field of a newer response must not replace the stored one (RFC 9111 §3.2): the
/// §3.1 exceptions and `Content-Length`.
pub fn is_update_exempt(name: &HeaderName) -> bool {
    name == CONTENT_LENGTH || is_never_stored(name)
}

/// Updates a stored response's header fields from a newer response, e.g. a `304` (RFC 9111
/// §3.2): every field of `newer` replaces all stored lines of that name, except `Content-Length`,
/// hop-by-hop and proxy fields, and fields listed in the newer response's `Connection`.
pub fn update_stored_headers(stored: &mut HeaderMap, newer: &HeaderMap) {
    let listed = connection_listed(newer);
    let mut replaced: Vec<&HeaderName> = Vec::new();
    for (name, value) in newer {
        if is_update_exempt(name) || listed.contains(name) {
            continue;
        }
        if !replaced.contains(&name) {
            stored.remove(name);
            replaced.push(name);
        }
        stored.append(name.clone(), value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::hm;

    #[test]
    fn rfc9110_13_1_3_if_none_match_decides_before_if_modified_since() {
        let stored = hm(&[
            ("etag", "W/\"v1\""),
            ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]);
        let later = "Mon, 07 Nov 1994 08:49:37 GMT";
        let earlier = "Sat, 05 Nov 1994 08:49:37 GMT";
        assert!(not_modified(&hm(&[("if-none-match", "\"v1\"")]), &stored));
        assert!(not_modified(&hm(&[("if-modified-since", later)]), &stored));
        assert!(!not_modified(
            &hm(&[("if-modified-since", earlier)]),
            &stored
        ));
        // A non-matching If-None-Match: If-Modified-Since is not looked at.
        let both = hm(&[("if-none-match", "\"v2\""), ("if-modified-since", later)]);
        assert!(!not_modified(&both, &stored));
        // Without Last-Modified, the Date counts.
        let dated = hm(&[("date", "Sun, 06 Nov 1994 08:49:37 GMT")]);
        assert!(not_modified(&hm(&[("if-modified-since", later)]), &dated));
        assert!(!not_modified(
            &hm(&[("if-modified-since", earlier)]),
            &dated
        ));
        assert!(!not_modified(&HeaderMap::new(), &stored));
    }

    #[test]
    fn rfc9110_13_1_2_if_none_match_uses_weak_comparison() {
        let etag = EntityTag::parse(b"\"b\"").unwrap();
        let hv = |s: &str| HeaderValue::from_str(s).unwrap();
        assert!(none_match(&hv("\"a\", W/\"b\""), &etag));
        assert!(none_match(&hv(" * "), &etag));
        assert!(!none_match(&hv("\"a\""), &etag));
        assert!(!none_match(&hv("b"), &etag));
        let comma = EntityTag::parse(b"\"x,y\"").unwrap();
        assert!(none_match(&hv("\"z\", \"x,y\""), &comma));
        assert!(!none_match(&hv("\"x\""), &comma));
    }

    #[test]
    fn rfc9110_8_8_3_entity_tag_parsing_and_comparison() {
        let s = EntityTag::parse(b"\"abc\"").unwrap();
        let w = EntityTag::parse(b" W/\"abc\" ").unwrap();
        assert!(!s.weak && w.weak);
        assert_eq!(w.tag, "abc");
        assert!(s.strong_eq(&s.clone()));
        assert!(!s.strong_eq(&w));
        assert!(s.weak_eq(&w));
        assert!(EntityTag::parse(b"\"\"").is_some());
        for bad in [
            &b"abc"[..],
            b"\"a\"b\"",
            b"w/\"a\"",
            b"\"a",
            b"\"a b\"",
            b"",
        ] {
            assert!(EntityTag::parse(bad).is_none(), "{bad:?}");
        }
        assert_eq!(
            EntityTag::from_headers(&hm(&[("etag", "\"a\""), ("etag", "\"b\"")])),
            None
        );
    }

    #[test]
    fn rfc9111_4_3_1_conditional_headers() {
        let h = hm(&[
            ("etag", " W/\"v1\""),
            ("last-modified", "Thu, 01 Jan 2015 00:00:00 GMT"),
        ]);
        let c = conditional_headers(&h);
        assert_eq!(c.get(IF_NONE_MATCH).unwrap(), "W/\"v1\"");
        assert_eq!(
            c.get(IF_MODIFIED_SINCE).unwrap(),
            "Thu, 01 Jan 2015 00:00:00 GMT"
        );
        // RFC 850 date is re-emitted as IMF-fixdate.
        let h = hm(&[("last-modified", "Thursday, 01-Jan-15 00:00:00 GMT")]);
        assert_eq!(
            conditional_headers(&h).get(IF_MODIFIED_SINCE).unwrap(),
            "Thu, 01 Jan 2015 00:00:00 GMT"
        );
        // Invalid validators are not sent.
        let h = hm(&[("etag", "nope"), ("last-modified", "yesterday")]);
        assert!(conditional_headers(&h).is_empty());
        assert!(!has_validator(&h));
    }

    #[test]
    fn rfc9111_4_3_4_a_304_validates_unless_its_validator_contradicts() {
        let lm = "Thu, 01 Jan 2015 00:00:00 GMT";
        let other_lm = "Fri, 02 Jan 2015 00:00:00 GMT";
        let strong = hm(&[("etag", "\"a\""), ("last-modified", lm)]);
        let weak = hm(&[("etag", "W/\"a\"")]);
        let dated = hm(&[("last-modified", lm)]);
        let bare = hm(&[("x", "1")]);
        // Matching validators.
        assert!(validates(&hm(&[("etag", "\"a\"")]), &strong));
        assert!(validates(&hm(&[("etag", "W/\"a\"")]), &strong));
        assert!(validates(&hm(&[("etag", "W/\"a\"")]), &weak));
        assert!(validates(&hm(&[("last-modified", lm)]), &dated));
        // No validator in the 304, or none the stored response has: it validates.
        for stored in [&strong, &weak, &dated, &bare] {
            assert!(validates(&hm(&[("cache-control", "max-age=9")]), stored));
        }
        assert!(validates(&hm(&[("etag", "\"z\"")]), &dated));
        assert!(validates(&hm(&[("last-modified", other_lm)]), &weak));
        // A contradicting validator: it does not.
        assert!(!validates(&hm(&[("etag", "\"b\"")]), &strong));
        assert!(!validates(&hm(&[("etag", "W/\"b\"")]), &weak));
        // A strong tag never matches a weak stored one (strong comparison).
        assert!(!validates(&hm(&[("etag", "\"a\"")]), &weak));
        assert!(!validates(&hm(&[("last-modified", other_lm)]), &dated));
        // The tag decides when both have one, whatever the dates say.
        assert!(validates(
            &hm(&[("etag", "\"a\""), ("last-modified", other_lm)]),
            &strong
        ));
    }

    #[test]
    fn rfc9111_3_2_update_stored_headers() {
        let mut stored = hm(&[
            ("content-length", "100"),
            ("cache-control", "max-age=10"),
            ("x-multi", "a"),
            ("x-multi", "b"),
            ("etag", "\"v\""),
            ("content-type", "text/plain"),
        ]);
        let newer = hm(&[
            ("content-length", "0"),
            ("cache-control", "max-age=60"),
            ("x-multi", "c"),
            ("date", "Thu, 01 Jan 2015 00:00:00 GMT"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=1"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
        ]);
        update_stored_headers(&mut stored, &newer);
        assert_eq!(stored.get("content-length").unwrap(), "100");
        assert_eq!(stored.get("cache-control").unwrap(), "max-age=60");
        let multi: Vec<_> = stored.get_all("x-multi").iter().collect();
        assert_eq!(multi, vec!["c"]);
        assert_eq!(stored.get_all("set-cookie").iter().count(), 2);
        assert!(stored.get("date").is_some());
        assert!(stored.get("x-hop").is_none());
        assert!(stored.get("connection").is_none());
        assert!(stored.get("keep-alive").is_none());
        assert_eq!(stored.get("etag").unwrap(), "\"v\"");
        assert_eq!(stored.get("content-type").unwrap(), "text/plain");
    }
}
