//! Every outcome as a response with its RFC 9211 `Cache-Status` member — the
//! members `herdguard serve` writes, rendered by `herdguard-http`.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use herdguard::{Error, Served};
use herdguard_http::cache_status::CACHE_NAME;
use herdguard_http::engine::stored_member;
use herdguard_http::response::CachedResponse;
use herdguard_http::{CacheConfig, CacheStatus, ForwardReason};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use crate::body::HerdBody;
use crate::load::LoadError;

/// A stored response, served as `served` says, with `ttl` of freshness left.
/// `forced` when the request itself demanded the load.
pub(crate) fn stored(
    config: &CacheConfig,
    value: &CachedResponse,
    served: Served,
    ttl: Duration,
    forced: bool,
    head: bool,
) -> Response<HerdBody> {
    let (member, _) = stored_member(served, value, ttl, forced);
    let headers = value.answer_headers(config, member, SystemTime::now());
    respond(
        value.status(),
        headers,
        HerdBody::full(value.body.clone()),
        head,
    )
}

/// The service's own answer, passed to one client (not stored): why it went
/// to the service, and, when a load's answer was not shareable, why not.
pub(crate) fn passed(
    mut response: Response<HerdBody>,
    fwd: ForwardReason,
    detail: Option<&str>,
    head: bool,
) -> Response<HerdBody> {
    let mut member = CacheStatus::new(CACHE_NAME)
        .forwarded(fwd)
        .fwd_status(response.status().as_u16());
    if let Some(d) = detail {
        member = member.detail(d.to_string());
    }
    member.append_to(response.headers_mut());
    if head {
        *response.body_mut() = HerdBody::empty();
    }
    response
}

/// The service's own server error, for the one caller whose load it was.
pub(crate) fn own_error(mut response: Response<HerdBody>, head: bool) -> Response<HerdBody> {
    CacheStatus::new(CACHE_NAME)
        .forwarded(ForwardReason::Miss)
        .fwd_status(response.status().as_u16())
        .detail("origin-error")
        .append_to(response.headers_mut());
    if head {
        *response.body_mut() = HerdBody::empty();
    }
    response
}

/// A load that failed, for a caller with no answer of its own (a waiter, or
/// the leader when the handler panicked or timed out): a short 5xx made by the
/// layer, never another caller's answer.
pub(crate) fn failed(error: &Error) -> Response<HerdBody> {
    let (status, why) = match error {
        Error::Origin(e) | Error::RecentlyFailed(e) => match e.downcast_ref::<LoadError>() {
            Some(LoadError::ServerError(status)) => (*status, "the shared call answered an error"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "the shared call failed"),
        },
        Error::LoaderPanicked => (StatusCode::INTERNAL_SERVER_ERROR, "the handler panicked"),
        Error::LoadTimeout(_) | Error::Timeout(_) => {
            (StatusCode::GATEWAY_TIMEOUT, "the handler took too long")
        }
        Error::CircuitOpen => (
            StatusCode::SERVICE_UNAVAILABLE,
            "handler calls suspended (circuit open)",
        ),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "the cache failed"),
    };
    let mut response = plain(status, &format!("herdguard: {why}\n"));
    CacheStatus::new(CACHE_NAME)
        .forwarded(ForwardReason::Miss)
        .fwd_status(status.as_u16())
        .collapsed(true)
        .detail("origin-error")
        .append_to(response.headers_mut());
    response
}

/// An answer with its fields complete; HEAD keeps the length, drops the body.
fn respond(
    status: StatusCode,
    mut headers: HeaderMap,
    body: HerdBody,
    head: bool,
) -> Response<HerdBody> {
    if !headers.contains_key(header::CONTENT_LENGTH) {
        let len = http_body::Body::size_hint(&body).exact().unwrap_or(0);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    let mut response = Response::new(if head { HerdBody::empty() } else { body });
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// A short text answer made by the layer itself.
pub(crate) fn plain(status: StatusCode, text: &str) -> Response<HerdBody> {
    let mut r = Response::new(HerdBody::full(Bytes::from(text.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    r
}
