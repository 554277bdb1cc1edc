//! Incomplete responses (RFC 9111 §3.3) and combining partial content
//! (§3.4): which broken-off `200` may be kept as a prefix, which requests it
//! answers, how the rest is asked for, and when the origin's `206` may be
//! joined to it.
//!
//! The rules are strict so that an origin cannot make a cache join the bytes
//! of two representations: a prefix is kept only with a strong `ETag` and a
//! `Content-Length` (its complete length), and a `206` joins it only with the
//! same strong `ETag`, the same complete length and a `Content-Range` that
//! begins within the prefix and ends at the last byte — bytes it repeats of the
//! prefix must be the same bytes.

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::StatusCode;

use crate::revalidate::EntityTag;

/// The complete length of a `200` whose body broke off after `received`
/// bytes, when that prefix may be kept marked incomplete (§3.3): the answer
/// has a strong `ETag` (one, valid) and one valid `Content-Length` longer than
/// what arrived, and something arrived. `None`: nothing is kept.
pub fn keepable(status: StatusCode, headers: &HeaderMap, received: u64) -> Option<u64> {
    if status != StatusCode::OK || received == 0 {
        return None;
    }
    EntityTag::from_headers(headers).filter(|t| !t.weak)?;
    let complete = crate::revalidate::single_length(headers)?;
    (complete > received).then_some(complete)
}

/// The fields that ask the origin for what follows `kept` bytes of the
/// incomplete response with fields `stored` (§3.4, RFC 9110 §14.2, §13.1.5):
/// `Range: bytes=kept-` and `If-Range` with its strong `ETag`, so that an
/// origin whose representation changed answers with the whole `200`.
pub fn rest_request(stored: &HeaderMap, kept: u64) -> HeaderMap {
    let mut fields = HeaderMap::new();
    if let Ok(range) = HeaderValue::from_str(&format!("bytes={kept}-")) {
        fields.insert(header::RANGE, range);
    }
    if let Some(etag) = stored.get(header::ETAG) {
        fields.insert(header::IF_RANGE, etag.clone());
    }
    fields
}

/// A `Content-Range` of one satisfied range (RFC 9110 §14.4):
/// `bytes first-last/complete`, `first <= last < complete`. `None` for
/// anything else (an unknown complete length `*`, `bytes */n`, another unit).
pub fn parse_content_range(value: &HeaderValue) -> Option<(u64, u64, u64)> {
    let text = value.to_str().ok()?.trim();
    let (unit, rest) = text.split_once(' ')?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let (range, complete) = rest.trim().split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    let (first, last, complete) = (number(first)?, number(last)?, number(complete)?);
    (first <= last && last < complete).then_some((first, last, complete))
}

/// Where the `206` with fields `part` begins, when it continues the stored
/// incomplete response (fields `stored`, `kept` bytes of `complete`) to its
/// end (§3.4): one `Content-Range` from at most `kept` to the last byte of the
/// same complete length, a strong `ETag` equal to the stored one by the strong
/// comparison, and a `Content-Length`, if any, equal to the range's. `None`:
/// not joined (the prefix is dropped and the response fetched whole).
pub fn continues(
    stored: &HeaderMap,
    (kept, complete): (u64, u64),
    status: StatusCode,
    part: &HeaderMap,
) -> Option<u64> {
    if status != StatusCode::PARTIAL_CONTENT {
        return None;
    }
    let (Some(old), Some(new)) = (
        EntityTag::from_headers(stored),
        EntityTag::from_headers(part),
    ) else {
        return None;
    };
    if !new.strong_eq(&old) {
        return None;
    }
    let mut ranges = part.get_all(header::CONTENT_RANGE).iter();
    let (Some(range), None) = (ranges.next(), ranges.next()) else {
        return None;
    };
    let (first, last, length) = parse_content_range(range)?;
    if length != complete || first > kept || last + 1 != complete {
        return None;
    }
    let announced =
        part.get_all(header::CONTENT_LENGTH)
            .iter()
            .try_fold(None, |seen: Option<u64>, v| {
                let n = v.to_str().ok()?.trim().parse::<u64>().ok()?;
                match seen {
                    Some(m) if m != n => None,
                    _ => Some(Some(n)),
                }
            })?;
    if announced.is_some_and(|n| n != last - first + 1) {
        return None;
    }
    Some(first)
}

/// The whole body: the `prefix` kept, joined with the `part` that begins at
/// byte `first` (from [`continues`]), when together they make exactly
/// `complete` bytes and the bytes `part` repeats of the prefix are the same.
pub fn combine(prefix: &Bytes, first: u64, part: &Bytes, complete: u64) -> Option<Bytes> {
    let first = usize::try_from(first).ok()?;
    if first > prefix.len() || (first as u64).checked_add(part.len() as u64)? != complete {
        return None;
    }
    let repeated = prefix.len() - first;
    if part.len() < repeated || prefix[first..] != part[..repeated] {
        return None;
    }
    let mut whole = BytesMut::with_capacity(usize::try_from(complete).ok()?);
    whole.extend_from_slice(prefix);
    whole.extend_from_slice(&part[repeated..]);
    Some(whole.freeze())
}

/// The fields of the combined response: the stored ones updated with the
/// `206`'s (§3.4, as §3.2 updates them), without a `Content-Range` or a
/// `Content-Length` (the stored value has its own body's length).
pub fn combined_headers(stored: &HeaderMap, part: &HeaderMap) -> HeaderMap {
    let mut merged = stored.clone();
    crate::revalidate::update_stored_headers(&mut merged, part);
    merged.remove(header::CONTENT_RANGE);
    merged.remove(header::CONTENT_LENGTH);
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::hm;

    #[test]
    fn rfc9111_3_3_only_a_broken_200_with_a_strong_etag_and_length_is_kept() {
        let strong = hm(&[("etag", "\"s\""), ("content-length", "10")]);
        assert_eq!(keepable(StatusCode::OK, &strong, 4), Some(10));
        assert_eq!(keepable(StatusCode::OK, &strong, 9), Some(10));
        // Nothing arrived, or all of it did.
        assert_eq!(keepable(StatusCode::OK, &strong, 0), None);
        assert_eq!(keepable(StatusCode::OK, &strong, 10), None);
        // Another status.
        assert_eq!(keepable(StatusCode::NOT_FOUND, &strong, 4), None);
        assert_eq!(keepable(StatusCode::PARTIAL_CONTENT, &strong, 4), None);
        for fields in [
            hm(&[("etag", "W/\"s\""), ("content-length", "10")]),
            hm(&[("content-length", "10")]),
            hm(&[
                ("etag", "\"s\""),
                ("etag", "\"t\""),
                ("content-length", "10"),
            ]),
            hm(&[("etag", "s"), ("content-length", "10")]),
            hm(&[("etag", "\"s\"")]),
            hm(&[("etag", "\"s\""), ("content-length", "+10")]),
            hm(&[
                ("etag", "\"s\""),
                ("content-length", "10"),
                ("content-length", "10"),
            ]),
            hm(&[
                ("etag", "\"s\""),
                ("content-length", "99999999999999999999999"),
            ]),
        ] {
            assert_eq!(keepable(StatusCode::OK, &fields, 4), None, "{fields:?}");
        }
    }

    #[test]
    fn rfc9111_3_4_the_rest_is_asked_for_with_if_range() {
        let fields = rest_request(&hm(&[("etag", "\"s\"")]), 4);
        assert_eq!(fields.get("range").unwrap(), "bytes=4-");
        assert_eq!(fields.get("if-range").unwrap(), "\"s\"");
    }

    #[test]
    fn rfc9110_14_4_content_range_parses_one_satisfied_range() {
        let hv = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(parse_content_range(&hv("bytes 4-9/10")), Some((4, 9, 10)));
        assert_eq!(parse_content_range(&hv("BYTES 0-0/1")), Some((0, 0, 1)));
        for bad in [
            "bytes 4-9/*",
            "bytes */10",
            "bytes 5-4/10",
            "bytes 4-10/10",
            "items 4-9/10",
            "bytes 4-9",
            "bytes -9/10",
            "bytes +4-9/10",
            "bytes 4-99999999999999999999999/10",
            "",
        ] {
            assert_eq!(parse_content_range(&hv(bad)), None, "{bad}");
        }
    }

    #[test]
    fn rfc9111_3_4_a_206_joins_only_with_the_same_strong_etag_and_length() {
        let stored = hm(&[("etag", "\"s\""), ("content-length", "10")]);
        let part = |pairs: &[(&str, &str)]| hm(pairs);
        let at = (4, 10);
        let ok = part(&[("etag", "\"s\""), ("content-range", "bytes 4-9/10")]);
        assert_eq!(
            continues(&stored, at, StatusCode::PARTIAL_CONTENT, &ok),
            Some(4)
        );
        // Beginning earlier (the origin repeats bytes) is joinable; later is a gap.
        let earlier = part(&[
            ("etag", "\"s\""),
            ("content-range", "bytes 2-9/10"),
            ("content-length", "8"),
        ]);
        assert_eq!(
            continues(&stored, at, StatusCode::PARTIAL_CONTENT, &earlier),
            Some(2)
        );
        assert_eq!(continues(&stored, at, StatusCode::OK, &ok), None);
        for no in [
            part(&[("etag", "\"t\""), ("content-range", "bytes 4-9/10")]),
            part(&[("etag", "W/\"s\""), ("content-range", "bytes 4-9/10")]),
            part(&[("content-range", "bytes 4-9/10")]),
            part(&[("etag", "\"s\""), ("content-range", "bytes 5-9/10")]),
            part(&[("etag", "\"s\""), ("content-range", "bytes 4-8/10")]),
            part(&[("etag", "\"s\""), ("content-range", "bytes 4-10/11")]),
            part(&[("etag", "\"s\""), ("content-range", "bytes 4-9/*")]),
            part(&[("etag", "\"s\"")]),
            part(&[
                ("etag", "\"s\""),
                ("content-range", "bytes 4-9/10"),
                ("content-range", "bytes 4-9/10"),
            ]),
            part(&[
                ("etag", "\"s\""),
                ("content-range", "bytes 4-9/10"),
                ("content-length", "7"),
            ]),
        ] {
            assert_eq!(
                continues(&stored, at, StatusCode::PARTIAL_CONTENT, &no),
                None,
                "{no:?}"
            );
        }
        // A weak stored tag never joins.
        let weak = hm(&[("etag", "W/\"s\"")]);
        let weak_part = part(&[("etag", "W/\"s\""), ("content-range", "bytes 4-9/10")]);
        assert_eq!(
            continues(&weak, at, StatusCode::PARTIAL_CONTENT, &weak_part),
            None
        );
    }

    #[test]
    fn rfc9111_3_4_combine_checks_length_and_repeated_bytes() {
        let prefix = Bytes::from_static(b"0123");
        let whole = Bytes::from_static(b"0123456789");
        assert_eq!(
            combine(&prefix, 4, &Bytes::from_static(b"456789"), 10),
            Some(whole.clone())
        );
        assert_eq!(
            combine(&prefix, 2, &Bytes::from_static(b"23456789"), 10),
            Some(whole)
        );
        // Repeated bytes that differ, a short or long part, a gap.
        assert_eq!(
            combine(&prefix, 2, &Bytes::from_static(b"XX456789"), 10),
            None
        );
        assert_eq!(combine(&prefix, 4, &Bytes::from_static(b"45678"), 10), None);
        assert_eq!(
            combine(&prefix, 4, &Bytes::from_static(b"4567890"), 10),
            None
        );
        assert_eq!(combine(&prefix, 5, &Bytes::from_static(b"56789"), 10), None);
        assert_eq!(combine(&prefix, 0, &Bytes::from_static(b"01"), 2), None);
        assert_eq!(combine(&prefix, u64::MAX, &Bytes::new(), u64::MAX), None);
    }

    #[test]
    fn rfc9111_3_4_combined_fields_are_updated_by_the_206() {
        let stored = hm(&[
            ("etag", "\"s\""),
            ("cache-control", "max-age=60"),
            ("content-length", "10"),
            ("x-old", "1"),
        ]);
        let part = hm(&[
            ("etag", "\"s\""),
            ("cache-control", "max-age=120"),
            ("content-range", "bytes 4-9/10"),
            ("content-length", "6"),
        ]);
        let merged = combined_headers(&stored, &part);
        assert_eq!(merged.get("cache-control").unwrap(), "max-age=120");
        assert!(merged.get("content-length").is_none());
        assert_eq!(merged.get("x-old").unwrap(), "1");
        assert!(merged.get("content-range").is_none());
    }
}
