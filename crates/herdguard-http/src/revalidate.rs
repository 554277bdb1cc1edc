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
    tag_list(b).any(|m| EntityTag::parse(m).is_some_and(|t| t.weak_eq(etag)))
}

/// The members of an entity-tag list, split on commas outside quotes (an
/// opaque tag may itself contain a comma).
fn tag_list(b: &[u8]) -> impl Iterator<Item = &[u8]> {
    let (mut start, mut quoted, mut at) = (0, false, 0);
    std::iter::from_fn(move || {
        while at < b.len() {
            let i = at;
            at += 1;
            match b[i] {
                b'"' => quoted = !quoted,
                b',' if !quoted => {
                    let member = &b[start..i];
                    start = i + 1;
                    return Some(member);
                }
                _ => {}
            }
        }
        if start <= b.len() {
            let member = &b[start..];
            start = b.len() + 1;
            return Some(member);
        }
        None
    })
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

/// What a `200` answer to a `HEAD` says of the stored `GET` response that
/// could have answered the same request (RFC 9111 §4.3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadVerdict {
    /// Every validator it carries (`ETag`, by the strong comparison when
    /// strong; `Last-Modified`) and its `Content-Length`, when present, match
    /// the stored ones, and something matched — a validator or, when the
    /// stored response has none, the length: its fields update the stored
    /// ones as a `304`'s would ([`update_stored_headers`]).
    Confirms,
    /// A validator or the length it carries differs from (or is missing in)
    /// the stored response: the stored response is out of date.
    Contradicts,
    /// It carries nothing to compare with (no validator for a stored response
    /// that has one): neither. The letter would update the stored response on
    /// such an answer; a server that drops its validators on `HEAD` would then
    /// refresh whatever is stored, and one that is not the `GET`'s twin would
    /// let any client evict it.
    Silent,
}

/// What a `200` answer to a `HEAD` with fields `head` says of a stored `GET`
/// response with fields `stored` (RFC 9111 §4.3.5; see [`HeadVerdict`]).
pub fn head_verdict(head: &HeaderMap, stored: &HeaderMap) -> HeadVerdict {
    let mut confirmed = false;
    if head.contains_key(ETAG) {
        let matches = match (
            EntityTag::from_headers(head),
            EntityTag::from_headers(stored),
        ) {
            (Some(new), Some(old)) if new.weak => new.weak_eq(&old),
            (Some(new), Some(old)) => new.strong_eq(&old),
            _ => false,
        };
        if !matches {
            return HeadVerdict::Contradicts;
        }
        confirmed = true;
    }
    if head.contains_key(LAST_MODIFIED) {
        match (last_modified(head), last_modified(stored)) {
            (Some(new), Some(old)) if new == old => confirmed = true,
            _ => return HeadVerdict::Contradicts,
        }
    }
    if head.contains_key(CONTENT_LENGTH) {
        match (single_length(head), single_length(stored)) {
            (Some(new), Some(old)) if new == old => confirmed |= !has_validator(stored),
            _ => return HeadVerdict::Contradicts,
        }
    }
    if confirmed {
        HeadVerdict::Confirms
    } else {
        HeadVerdict::Silent
    }
}

/// The `Content-Length` of a message: one valid value on a single line, else `None`.
pub(crate) fn single_length(headers: &HeaderMap) -> Option<u64> {
    let mut all = headers.get_all(CONTENT_LENGTH).iter();
    let first = all.next()?;
    if all.next().is_some() {
        return None;
    }
    let text = first.to_str().ok()?.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The entity tags of a client's `If-None-Match`, when it may be merged into
/// a conditional request the cache makes for that client alone (RFC 9111
/// §4.3.2): at most [`MAX_CLIENT_TAGS`] valid tags, each member parsing; `None`
/// for `*` (any current representation, which would make every `304`
/// ambiguous), an empty list, or one that does not parse.
pub fn client_tags(if_none_match: &HeaderValue) -> Option<Vec<EntityTag>> {
    let mut tags = Vec::new();
    for member in tag_list(if_none_match.as_bytes()) {
        if member.iter().all(|c| matches!(c, b' ' | b'\t')) {
            continue;
        }
        tags.push(EntityTag::parse(member)?);
        if tags.len() > MAX_CLIENT_TAGS {
            return None;
        }
    }
    (!tags.is_empty()).then_some(tags)
}

/// Most entity tags of a client's `If-None-Match` merged into the cache's own
/// conditional request; a longer list is not merged (the request then goes
/// without them, as it would without merging).
pub const MAX_CLIENT_TAGS: usize = 16;

/// The `If-None-Match` of a conditional request the cache makes for one
/// client: the stored response's tag (from [`conditional_headers`], when it
/// has one) followed by the client's `tags` (RFC 9111 §4.3.2).
pub fn merged_if_none_match(
    stored: Option<&HeaderValue>,
    tags: &[EntityTag],
) -> Option<HeaderValue> {
    let mut out: Vec<u8> = stored.map(|v| v.as_bytes().to_vec()).unwrap_or_default();
    for tag in tags {
        if !out.is_empty() {
            out.extend_from_slice(b", ");
        }
        if tag.weak {
            out.extend_from_slice(b"W/");
        }
        out.push(b'"');
        out.extend_from_slice(tag.tag.as_bytes());
        out.push(b'"');
    }
    HeaderValue::from_bytes(&out).ok()
}

/// Whose representation a `304` to a merged conditional request selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectedBy {
    /// The stored response's: it is validated ([`validates`]) and updated for everyone.
    Stored,
    /// Only the client's: a `304` for that client alone; nothing stored changes.
    Client,
    /// Neither for sure (no `ETag` while both were asked, or one nobody
    /// asked for): the cache asks again without validators.
    Unknown,
}

/// Whose representation the `304` with fields `not_modified` selects, for a
/// request that carried the stored response's validators (`stored`, when it
/// was conditional on them) and the client's `tags` (RFC 9111 §4.3.2, §4.3.4).
/// The stored response wins when its tag matches, so the `304` serves every
/// later request; a `304` without `ETag` is the client's only when the stored
/// response's validators were not asked about.
pub fn selected_by(
    not_modified: &HeaderMap,
    stored: Option<&HeaderMap>,
    tags: &[EntityTag],
) -> SelectedBy {
    let Some(etag) = EntityTag::from_headers(not_modified) else {
        return if stored.is_none() && !not_modified.contains_key(ETAG) {
            SelectedBy::Client
        } else {
            SelectedBy::Unknown
        };
    };
    if let Some(stored) = stored {
        if EntityTag::from_headers(stored).is_some() && validates(not_modified, stored) {
            return SelectedBy::Stored;
        }
    }
    if tags.iter().any(|t| t.weak_eq(&etag)) {
        SelectedBy::Client
    } else {
        SelectedBy::Unknown
    }
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
    fn rfc9111_4_3_5_a_head_answer_confirms_or_contradicts_only_by_what_it_carries() {
        use HeadVerdict::{Confirms, Contradicts, Silent};
        let lm = "Thu, 01 Jan 2015 00:00:00 GMT";
        let other_lm = "Fri, 02 Jan 2015 00:00:00 GMT";
        let stored = hm(&[
            ("etag", "\"a\""),
            ("last-modified", lm),
            ("content-length", "5"),
        ]);
        let verdict = |head: &[(&str, &str)]| head_verdict(&hm(head), &stored);
        // Matching validators and length: its fields then update the stored ones.
        assert_eq!(
            verdict(&[("etag", "\"a\""), ("content-length", "5")]),
            Confirms
        );
        assert_eq!(verdict(&[("etag", "W/\"a\"")]), Confirms);
        assert_eq!(verdict(&[("last-modified", lm)]), Confirms);
        // Any field it carries that differs: the stored response is out of date.
        assert_eq!(verdict(&[("etag", "\"b\"")]), Contradicts);
        assert_eq!(
            verdict(&[("etag", "\"a\""), ("content-length", "6")]),
            Contradicts
        );
        assert_eq!(
            verdict(&[("etag", "\"a\""), ("last-modified", other_lm)]),
            Contradicts
        );
        assert_eq!(
            verdict(&[("etag", "\"a\""), ("etag", "\"a\"")]),
            Contradicts
        );
        assert_eq!(verdict(&[("etag", "garbage")]), Contradicts);
        assert_eq!(
            verdict(&[("etag", "\"a\""), ("content-length", "+5")]),
            Contradicts
        );
        assert_eq!(verdict(&[("content-length", "0")]), Contradicts);
        // A strong tag never matches a weak stored one.
        assert_eq!(
            head_verdict(&hm(&[("etag", "\"a\"")]), &hm(&[("etag", "W/\"a\"")])),
            Contradicts
        );
        // Nothing to compare: no validator for a stored response that has one.
        assert_eq!(verdict(&[("content-length", "5")]), Silent);
        assert_eq!(verdict(&[("x", "1")]), Silent);
        // Without validators on either side, the length decides.
        let bare = hm(&[("content-length", "5")]);
        assert_eq!(
            head_verdict(&hm(&[("content-length", "5")]), &bare),
            Confirms
        );
        assert_eq!(
            head_verdict(&hm(&[("content-length", "4")]), &bare),
            Contradicts
        );
        assert_eq!(head_verdict(&hm(&[]), &bare), Silent);
        // A validator the stored response lacks: another representation.
        assert_eq!(head_verdict(&hm(&[("etag", "\"a\"")]), &bare), Contradicts);
    }

    #[test]
    fn rfc9111_4_3_2_client_tags_merge_only_when_each_parses() {
        let hv = |s: &str| HeaderValue::from_str(s).unwrap();
        let tags = client_tags(&hv("\"c1\", W/\"c2\" ,\"x,y\"")).unwrap();
        assert_eq!(tags.len(), 3);
        assert!(tags[1].weak && tags[2].tag == "x,y");
        for refused in ["*", "", " , ", "c1", "\"c1\", nope", "\"open"] {
            assert_eq!(client_tags(&hv(refused)), None, "{refused}");
        }
        let many = vec!["\"t\""; MAX_CLIENT_TAGS + 1].join(",");
        assert_eq!(client_tags(&hv(&many)), None);
        let merged = merged_if_none_match(Some(&hv("\"s\"")), &tags).unwrap();
        assert_eq!(merged, "\"s\", \"c1\", W/\"c2\", \"x,y\"");
        assert_eq!(merged_if_none_match(None, &tags[..1]).unwrap(), "\"c1\"");
    }

    #[test]
    fn rfc9111_4_3_2_a_304_to_merged_tags_serves_the_store_only_when_it_names_its_tag() {
        let stored = hm(&[("etag", "\"s\"")]);
        let tags = vec![EntityTag::parse(b"\"c\"").unwrap()];
        let sel = |n: &[(&str, &str)], s: Option<&HeaderMap>| selected_by(&hm(n), s, &tags);
        assert_eq!(sel(&[("etag", "\"s\"")], Some(&stored)), SelectedBy::Stored);
        assert_eq!(
            sel(&[("etag", "W/\"s\"")], Some(&stored)),
            SelectedBy::Stored
        );
        assert_eq!(sel(&[("etag", "\"c\"")], Some(&stored)), SelectedBy::Client);
        assert_eq!(
            sel(&[("etag", "W/\"c\"")], Some(&stored)),
            SelectedBy::Client
        );
        // Ambiguous or nobody's: asked again, never handed to anyone.
        assert_eq!(sel(&[], Some(&stored)), SelectedBy::Unknown);
        assert_eq!(
            sel(&[("etag", "\"z\"")], Some(&stored)),
            SelectedBy::Unknown
        );
        assert_eq!(sel(&[("etag", "bad")], None), SelectedBy::Unknown);
        // Only the client's tags were asked about: a 304 without ETag is the client's.
        assert_eq!(sel(&[], None), SelectedBy::Client);
        assert_eq!(sel(&[("etag", "\"c\"")], None), SelectedBy::Client);
        assert_eq!(sel(&[("etag", "\"s\"")], None), SelectedBy::Unknown);
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
