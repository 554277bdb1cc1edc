//! Range requests (RFC 9110 §14) answered from a whole stored response: one
//! `bytes` range becomes a 206 with `Content-Range`; an unsatisfiable one a 416.
//! Several ranges, another unit, or an `If-Range` that does not hold for the
//! stored response (a strong validator only: `herdguard_http::range`) get the
//! whole response (a server may ignore `Range`).
//! The object itself is always loaded whole, so ranged misses coalesce with
//! every other request of the URL.

use bytes::Bytes;
use herdguard_http::range::{if_range_holds, parse_range, ByteRange};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use crate::body::Body;

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
    let Some(wanted) = range.to_str().ok().and_then(|r| parse_range(r, len)) else {
        return response;
    };
    let headers = response.headers_mut();
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    match wanted {
        ByteRange::Satisfiable {
            first: start,
            last: end,
        } => {
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
        ByteRange::Unsatisfiable => {
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
