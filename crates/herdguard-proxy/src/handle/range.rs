//! Range requests (RFC 9110 §14) answered from a whole stored response
//! (`herdguard_http::range::cut`, which the tower layer calls too): one
//! `bytes` range becomes a 206 with `Content-Range`; an unsatisfiable one a 416.
//! Several ranges, another unit, or an `If-Range` that does not hold for the
//! stored response (a strong validator only) get the
//! whole response (a server may ignore `Range`).
//! The object itself is always loaded whole, so ranged misses coalesce with
//! every other request of the URL.

use herdguard_http::range::cut;
use http::header::HeaderMap;
use http::{Response, StatusCode};

use crate::body::Body;

/// Cuts the range `request` asks for out of a whole 200 `response` (the rest
/// is returned unchanged).
pub(crate) fn apply(request: &HeaderMap, mut response: Response<Body>) -> Response<Body> {
    if response.status() != StatusCode::OK {
        return response;
    }
    let bytes = match response.body() {
        Body::Full(b) => b.clone().unwrap_or_default(),
        Body::Stream(_) => return response,
    };
    let Some((status, part)) = cut(request, response.headers_mut(), &bytes) else {
        return response;
    };
    *response.status_mut() = status;
    *response.body_mut() = match status {
        StatusCode::PARTIAL_CONTENT => Body::full(part),
        _ => Body::empty(),
    };
    response
}
