//! Range requests (RFC 9110 §14) answered from a whole stored response: one
//! `bytes` range becomes a 206 with `Content-Range`; an unsatisfiable one a 416.
//! Several ranges, another unit, or an `If-Range` that does not match the
//! stored response get the whole response (a server may ignore `Range`).
//! The object itself is always loaded whole, so ranged misses coalesce with
//! every other request of the URL.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use crate::body::Body;

/// One satisfiable range, inclusive, or a range no byte of the object satisfies.
#[derive(Debug, PartialEq, Eq)]
enum Wanted {
    Bytes(u64, u64),
    Unsatisfiable,
}

/// Parses a `Range` value against an object of `len` bytes; `None` when it is
/// to be ignored (not `bytes`, several ranges, malformed).
fn parse(value: &str, len: u64) -> Option<Wanted> {
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
            return Some(Wanted::Unsatisfiable);
        }
        return Some(Wanted::Bytes(len.saturating_sub(n), len - 1));
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
        return Some(Wanted::Unsatisfiable);
    }
    Some(Wanted::Bytes(start, end.min(len - 1)))
}

/// Whether `If-Range` lets the range be served from `response` (a strong
/// entity-tag equal to its `ETag`, or exactly its `Last-Modified` date).
fn if_range_holds(if_range: &HeaderValue, response: &HeaderMap) -> bool {
    let Ok(text) = if_range.to_str() else {
        return false;
    };
    let text = text.trim();
    if text.starts_with('"') {
        return response
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|etag| etag.trim() == text);
    }
    if text.starts_with("W/") {
        return false;
    }
    let date = herdguard_http::freshness::parse_http_date(if_range);
    date.is_some()
        && response
            .get(header::LAST_MODIFIED)
            .and_then(herdguard_http::freshness::parse_http_date)
            == date
}

/// Cuts the range `request` asks for out of a whole 200 `response` (the rest
/// is returned unchanged).
pub(crate) fn apply(request: &HeaderMap, mut response: Response<Body>) -> Response<Body> {
    let mut ranges = request.get_all(header::RANGE).iter();
    let (Some(range), None) = (ranges.next(), ranges.next()) else {
        return response;
    };
    if response.status() != StatusCode::OK {
        return response;
    }
    let bytes = match response.body() {
        Body::Full(b) => b.clone().unwrap_or_default(),
        Body::Stream(_) => return response,
    };
    if let Some(if_range) = request.get(header::IF_RANGE) {
        if !if_range_holds(if_range, response.headers()) {
            return response;
        }
    }
    let len = bytes.len() as u64;
    let Some(wanted) = range.to_str().ok().and_then(|r| parse(r, len)) else {
        return response;
    };
    let headers = response.headers_mut();
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    match wanted {
        Wanted::Bytes(start, end) => {
            let part: Bytes = bytes.slice(start as usize..=end as usize);
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(part.len()));
            headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {start}-{end}/{len}"))
                    .unwrap_or_else(|_| HeaderValue::from_static("bytes */0")),
            );
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            *response.body_mut() = Body::full(part);
        }
        Wanted::Unsatisfiable => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
            headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{len}"))
                    .unwrap_or_else(|_| HeaderValue::from_static("bytes */0")),
            );
            *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            *response.body_mut() = Body::empty();
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_against_the_length() {
        assert_eq!(parse("bytes=0-0", 10), Some(Wanted::Bytes(0, 0)));
        assert_eq!(parse("bytes=2-", 10), Some(Wanted::Bytes(2, 9)));
        assert_eq!(parse("bytes=-20", 10), Some(Wanted::Bytes(0, 9)));
        assert_eq!(parse("bytes=5-500", 10), Some(Wanted::Bytes(5, 9)));
        assert_eq!(parse("bytes=10-", 10), Some(Wanted::Unsatisfiable));
        assert_eq!(parse("bytes=-0", 10), Some(Wanted::Unsatisfiable));
        for ignored in [
            "bytes=5-2",
            "bytes=0-1,4-5",
            "items=0-1",
            "bytes=a-b",
            "bytes=-",
            "bytes",
        ] {
            assert_eq!(parse(ignored, 10), None, "{ignored}");
        }
    }
}
