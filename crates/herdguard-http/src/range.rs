//! Range requests (RFC 9110 §14) against a whole stored representation: the
//! one `bytes` range a request asks for ([`parse_range`]), and whether its
//! `If-Range` lets a part be served at all ([`if_range_holds`], §13.1.5).
//! Several ranges and other units are left to the caller to ignore (a server
//! may always answer `Range` with the whole representation).

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue, DATE, LAST_MODIFIED};
use http::StatusCode;

use crate::freshness::parse_http_date;
use crate::revalidate::{single_date, EntityTag};

/// What one `bytes` range asks of a representation of known length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// The bytes from `first` to `last`, inclusive, both inside the representation.
    Satisfiable {
        /// The first byte's offset.
        first: u64,
        /// The last byte's offset (at most the length minus one).
        last: u64,
    },
    /// No byte of the representation is in the range: answered `416` (§15.5.17).
    Unsatisfiable,
}

/// Parses a `Range` value against a representation of `len` bytes (§14.1.2);
/// `None` when it is to be ignored: not `bytes`, several ranges, malformed.
pub fn parse_range(value: &str, len: u64) -> Option<ByteRange> {
    let (unit, spec) = value.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let spec = spec.trim();
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if first.is_empty() {
        // A suffix: the last `n` bytes.
        if !digits(last) {
            return None;
        }
        let n: u64 = last.parse().ok()?;
        if n == 0 || len == 0 {
            return Some(ByteRange::Unsatisfiable);
        }
        return Some(ByteRange::Satisfiable {
            first: len.saturating_sub(n),
            last: len - 1,
        });
    }
    if !digits(first) || !(last.is_empty() || digits(last)) {
        return None;
    }
    let start: u64 = first.parse().ok()?;
    let end: u64 = if last.is_empty() {
        u64::MAX
    } else {
        last.parse().ok()?
    };
    if end < start {
        return None;
    }
    if start >= len {
        return Some(ByteRange::Unsatisfiable);
    }
    Some(ByteRange::Satisfiable {
        first: start,
        last: end.min(len - 1),
    })
}

/// Whether `If-Range` lets a range of the `stored` response be served
/// (§13.1.5): an entity-tag equal to its `ETag` by the strong comparison (a
/// weak tag, given or stored, never matches), or an HTTP-date exactly its
/// `Last-Modified` when that is a strong validator — at least a second before
/// the stored `Date` (§8.8.2.2). Anything else: serve the whole response.
pub fn if_range_holds(if_range: &HeaderValue, stored: &HeaderMap) -> bool {
    if let Some(given) = EntityTag::parse(if_range.as_bytes()) {
        return EntityTag::from_headers(stored).is_some_and(|etag| given.strong_eq(&etag));
    }
    let Some(date) = parse_http_date(if_range) else {
        return false;
    };
    let (Some(modified), Some(served)) = (
        single_date(stored, LAST_MODIFIED),
        single_date(stored, DATE),
    ) else {
        return false;
    };
    modified == date
        && served
            .duration_since(modified)
            .is_ok_and(|d| d >= Duration::from_secs(1))
}

/// Cuts the range `request` asks for out of a whole `200` response (its
/// `headers` and `body`): the `206` (or `416`) to answer and its body, `headers`
/// updated (`Accept-Ranges`, `Content-Range`, `Content-Length`); `None` when
/// the whole response stands — not one `Range`, not a `bytes` range that
/// parses, or an `If-Range` that does not hold.
pub fn cut(
    request: &HeaderMap,
    headers: &mut HeaderMap,
    body: &Bytes,
) -> Option<(StatusCode, Bytes)> {
    let len = body.len() as u64;
    let wanted = wanted(request, headers, len)?;
    Some(answer(headers, body, wanted, len))
}

/// Cuts the range `request` asks for out of the `prefix` kept of an
/// incomplete `200` of `complete` bytes (RFC 9111 §3.3): a `206` only when the
/// range lies wholly within the prefix (and its `If-Range`, if any, holds);
/// `None` otherwise — the request then needs the origin.
pub fn cut_prefix(
    request: &HeaderMap,
    headers: &mut HeaderMap,
    prefix: &Bytes,
    complete: u64,
) -> Option<(StatusCode, Bytes)> {
    match wanted(request, headers, complete)? {
        ByteRange::Satisfiable { first, last } if last < prefix.len() as u64 => Some(answer(
            headers,
            prefix,
            ByteRange::Satisfiable { first, last },
            complete,
        )),
        _ => None,
    }
}

/// The one `bytes` range `request` asks of a representation of `len` bytes
/// with fields `headers`, when its `If-Range` (if any) holds.
fn wanted(request: &HeaderMap, headers: &HeaderMap, len: u64) -> Option<ByteRange> {
    let mut ranges = request.get_all(header::RANGE).iter();
    let (Some(range), None) = (ranges.next(), ranges.next()) else {
        return None;
    };
    if let Some(if_range) = request.get(header::IF_RANGE) {
        if !if_range_holds(if_range, headers) {
            return None;
        }
    }
    range.to_str().ok().and_then(|r| parse_range(r, len))
}

/// The answer to `wanted` of a representation of `len` bytes whose first
/// bytes are `body` (all of them, or a prefix holding the range).
fn answer(
    headers: &mut HeaderMap,
    body: &Bytes,
    wanted: ByteRange,
    len: u64,
) -> (StatusCode, Bytes) {
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let content_range = |text: String| {
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("bytes */0"))
    };
    match wanted {
        ByteRange::Satisfiable { first, last } => {
            // The callers keep both offsets inside the body.
            let part = body.slice(first as usize..=last as usize);
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(part.len()));
            headers.insert(
                header::CONTENT_RANGE,
                content_range(format!("bytes {first}-{last}/{len}")),
            );
            (StatusCode::PARTIAL_CONTENT, part)
        }
        ByteRange::Unsatisfiable => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
            headers.insert(
                header::CONTENT_RANGE,
                content_range(format!("bytes */{len}")),
            );
            (StatusCode::RANGE_NOT_SATISFIABLE, Bytes::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::hm;

    fn sat(first: u64, last: u64) -> Option<ByteRange> {
        Some(ByteRange::Satisfiable { first, last })
    }

    #[test]
    fn rfc9110_14_1_2_ranges_parse_against_the_length() {
        assert_eq!(parse_range("bytes=0-0", 10), sat(0, 0));
        assert_eq!(parse_range("bytes=2-", 10), sat(2, 9));
        assert_eq!(parse_range("bytes=-20", 10), sat(0, 9));
        assert_eq!(parse_range("bytes=5-500", 10), sat(5, 9));
        assert_eq!(parse_range("BYTES = 0-0", 10), sat(0, 0));
        assert_eq!(parse_range("bytes=10-", 10), Some(ByteRange::Unsatisfiable));
        assert_eq!(parse_range("bytes=-0", 10), Some(ByteRange::Unsatisfiable));
        assert_eq!(parse_range("bytes=-5", 0), Some(ByteRange::Unsatisfiable));
        for ignored in [
            "bytes=5-2",
            "bytes=0-1,4-5",
            "items=0-1",
            "bytes=a-b",
            "bytes=-",
            "bytes",
            "bytes=99999999999999999999-",
        ] {
            assert_eq!(parse_range(ignored, 10), None, "{ignored}");
        }
    }

    #[test]
    fn rfc9110_13_1_5_if_range_needs_a_strong_validator() {
        let hv = |s: &str| HeaderValue::from_str(s).unwrap();
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        let second_later = "Sun, 06 Nov 1994 08:49:38 GMT";
        let strong = hm(&[
            ("etag", "\"s\""),
            ("last-modified", date),
            ("date", second_later),
        ]);
        assert!(if_range_holds(&hv("\"s\""), &strong));
        assert!(if_range_holds(&hv(" \"s\" "), &strong));
        assert!(if_range_holds(&hv(date), &strong));
        for no in ["W/\"s\"", "\"t\"", "\"s", "w/\"s\"", second_later, "*", ""] {
            assert!(!if_range_holds(&hv(no), &strong), "{no:?}");
        }
        // A weak ETag never matches, whichever way the tag is given.
        let weak = hm(&[("etag", "W/\"w\"")]);
        assert!(!if_range_holds(&hv("W/\"w\""), &weak));
        assert!(!if_range_holds(&hv("\"w\""), &weak));
        // A Last-Modified within a second of Date (or without Date) is weak.
        let same_second = hm(&[("last-modified", date), ("date", date)]);
        assert!(!if_range_holds(&hv(date), &same_second));
        assert!(!if_range_holds(&hv(date), &hm(&[("last-modified", date)])));
    }

    #[test]
    fn rfc9111_3_3_a_range_wholly_within_the_prefix_is_cut_from_it() {
        let prefix = Bytes::from_static(b"01234");
        let ask = |range: &str, if_range: Option<&str>| {
            let mut request = hm(&[("range", range)]);
            if let Some(tag) = if_range {
                request.insert(header::IF_RANGE, HeaderValue::from_str(tag).unwrap());
            }
            let mut headers = hm(&[("etag", "\"s\"")]);
            cut_prefix(&request, &mut headers, &prefix, 10).map(|(status, part)| {
                let range = headers
                    .get("content-range")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string();
                (status, part, range)
            })
        };
        let (status, part, range) = ask("bytes=1-3", None).unwrap();
        assert_eq!(
            (status, &part[..], range.as_str()),
            (StatusCode::PARTIAL_CONTENT, &b"123"[..], "bytes 1-3/10")
        );
        let (_, part, range) = ask("bytes=0-4", Some("\"s\"")).unwrap();
        assert_eq!((&part[..], range.as_str()), (&b"01234"[..], "bytes 0-4/10"));
        // Past the prefix, open-ended, a suffix, unsatisfiable, or an If-Range that fails.
        for (range, if_range) in [
            ("bytes=3-5", None),
            ("bytes=0-", None),
            ("bytes=-2", None),
            ("bytes=10-", None),
            ("bytes=0-1,2-3", None),
            ("bytes=0-1", Some("\"t\"")),
            ("bytes=0-1", Some("W/\"s\"")),
        ] {
            assert_eq!(ask(range, if_range), None, "{range} {if_range:?}");
        }
    }
}
