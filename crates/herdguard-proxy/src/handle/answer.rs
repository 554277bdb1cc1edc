//! The one place that turns every outcome into an answer: a stored response, an
//! answer passed through, a failure, a refused request — each with its RFC 9211
//! `Cache-Status` member (serialized by `herdguard-http`) and its count in
//! `herdguard_proxy_requests_total`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use herdguard::{Entry, Error, Served, Timestamp};
use herdguard_http::cache_status::{CACHE_NAME, CACHE_STATUS};
use herdguard_http::engine::stored_member;
use herdguard_http::{CacheConfig, CacheStatus, ForwardReason};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::request::Refusal;
use super::response::CachedResponse;
use crate::body::Body;
use crate::origin::OriginError;
use crate::stats::Stats;

/// An origin answer passed through to one client, not stored.
pub(crate) struct Passed {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Body,
}

/// The identifier this cache writes its `Cache-Status` member under.
const NAME: &str = CACHE_NAME;

/// A stored response, served as `served` says, with `ttl` of freshness left.
/// `forced` when the request itself demanded the load (a forced revalidation).
pub(crate) fn stored(
    stats: &Stats,
    config: &CacheConfig,
    value: &CachedResponse,
    served: Served,
    ttl: Duration,
    forced: bool,
    head: bool,
) -> Response<Body> {
    let (member, label) = stored_member(served, value, ttl, forced);
    with_stored(stats, config, value, member, label, head, SystemTime::now())
}

/// A stored `entry` served as `served` says, as it is: its freshness left
/// (`Cache-Status`'s `ttl`) and its `Age` from one reading of the clock.
pub(crate) fn entry(
    stats: &Stats,
    config: &CacheConfig,
    entry: &Entry<CachedResponse>,
    served: Served,
    head: bool,
) -> Response<Body> {
    let now = SystemTime::now();
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let stamp =
        Timestamp::from_unix_nanos(u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX));
    let value = entry.value();
    let (member, label) = stored_member(served, value, entry.time_to_live(stamp), false);
    with_stored(stats, config, value, member, label, head, now)
}

/// A stale stored response the request itself accepted (`max-stale`, `only-if-cached`).
pub(crate) fn stale_accepted(
    stats: &Stats,
    config: &CacheConfig,
    value: &CachedResponse,
    detail: &'static str,
    head: bool,
) -> Response<Body> {
    let member = CacheStatus::new(NAME).hit().detail(detail);
    with_stored(
        stats,
        config,
        value,
        member.to_header_value(),
        "stale",
        head,
        SystemTime::now(),
    )
}

/// A range wholly within the prefix kept of an incomplete answer `value` of
/// `complete` bytes (RFC 9111 §3.3): a `206` whose member is a hit with the
/// detail `incomplete`; `None` when the range `request` asks for is not.
pub(crate) fn from_prefix(
    stats: &Stats,
    config: &CacheConfig,
    value: &CachedResponse,
    complete: u64,
    request: &HeaderMap,
) -> Option<Response<Body>> {
    let member = CacheStatus::new(NAME).hit().detail("incomplete");
    let mut headers = value.answer_headers(config, member.to_header_value(), SystemTime::now());
    let (status, part) =
        herdguard_http::range::cut_prefix(request, &mut headers, &value.body, complete)?;
    stats.count("hit");
    Some(respond(status, headers, Body::full(part), false))
}

fn with_stored(
    stats: &Stats,
    config: &CacheConfig,
    value: &CachedResponse,
    member: HeaderValue,
    label: &'static str,
    head: bool,
    now: SystemTime,
) -> Response<Body> {
    stats.count(label);
    // The kept fields carry the body's length already (set once, at parse).
    let headers = value.answer_headers(config, member, now);
    sized(
        value.status(),
        headers,
        Body::full(value.body.clone()),
        head,
    )
}

/// An origin answer passed through to one client (not stored): why it went
/// forward, and, when a load's result was not shareable, why not.
pub(crate) fn passed(
    stats: &Stats,
    passed: Passed,
    fwd: ForwardReason,
    detail: Option<&str>,
    head: bool,
) -> Response<Body> {
    let label = match fwd {
        ForwardReason::Miss | ForwardReason::Stale => "miss",
        _ => "bypass",
    };
    stats.count(label);
    let mut member = CacheStatus::new(NAME)
        .forwarded(fwd)
        .fwd_status(passed.status.as_u16());
    if let Some(d) = detail {
        member = member.detail(d.to_string());
    }
    finish(
        passed.status,
        passed.headers,
        passed.body,
        member.to_header_value(),
        head,
    )
}

/// The answer to an unsafe method that the origin said is its target's
/// current answer (a `POST` with its own `Content-Location`), stored for the
/// `GET`s that follow.
pub(crate) fn method_stored(
    stats: &Stats,
    value: &CachedResponse,
    ttl: Duration,
) -> Response<Body> {
    stats.count("bypass");
    let member = CacheStatus::new(NAME)
        .forwarded(ForwardReason::Method)
        .fwd_status(value.status)
        .stored(true)
        .ttl(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
    finish(
        value.status(),
        value.header_map(),
        Body::full(value.body.clone()),
        member.to_header_value(),
        false,
    )
}

/// The origin's own error answer (a 5xx), for the one caller whose load it was.
pub(crate) fn origin_error(stats: &Stats, passed: Passed, head: bool) -> Response<Body> {
    stats.count("error");
    let member = CacheStatus::new(NAME)
        .forwarded(ForwardReason::Miss)
        .fwd_status(passed.status.as_u16())
        .detail("origin-error");
    finish(
        passed.status,
        passed.headers,
        passed.body,
        member.to_header_value(),
        head,
    )
}

/// A load that failed, for a caller that has no origin answer of its own (a
/// waiter, or any caller when the origin gave no answer at all): a short answer
/// made by the proxy, never another caller's origin answer.
pub(crate) fn failed(stats: &Stats, error: &Error) -> Response<Body> {
    match error {
        Error::Origin(e) | Error::RecentlyFailed(e) => match e.downcast_ref::<OriginError>() {
            Some(OriginError::ServerError(status)) => {
                stats.count("error");
                let mut r = plain(
                    *status,
                    &format!("herdguard: the origin answered {status} to the shared request\n"),
                );
                let member = CacheStatus::new(NAME)
                    .forwarded(ForwardReason::Miss)
                    .fwd_status(status.as_u16())
                    .collapsed(true)
                    .detail("origin-error");
                member.append_to(r.headers_mut());
                r
            }
            Some(e) => origin_failed(stats, e),
            None => gateway(stats, StatusCode::BAD_GATEWAY, &e.to_string()),
        },
        Error::Timeout(d) => gateway(
            stats,
            StatusCode::GATEWAY_TIMEOUT,
            &format!("timed out after {d:?} waiting for the origin"),
        ),
        Error::CircuitOpen => gateway(
            stats,
            StatusCode::SERVICE_UNAVAILABLE,
            "origin calls suspended (circuit open)",
        ),
        other => gateway(stats, StatusCode::BAD_GATEWAY, &other.to_string()),
    }
}

/// The origin gave no answer (or the client's request body failed on the way).
pub(crate) fn origin_failed(stats: &Stats, e: &OriginError) -> Response<Body> {
    match e {
        OriginError::Timeout(d) => gateway(
            stats,
            StatusCode::GATEWAY_TIMEOUT,
            &format!("origin did not answer within {d:?}"),
        ),
        OriginError::RequestBodyStalled(limit) => {
            stats.count("error");
            plain(
                StatusCode::REQUEST_TIMEOUT,
                &format!("herdguard: request body stalled for {limit:?}\n"),
            )
        }
        OriginError::RequestBodyTooLarge => {
            stats.count("error");
            plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "herdguard: request body too large\n",
            )
        }
        OriginError::Busy(_, waited) => {
            let mut r = gateway(stats, StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
            // Come back once a queue's wait has passed.
            let secs = waited.as_secs() + u64::from(waited.subsec_nanos() > 0);
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            r
        }
        other => gateway(stats, StatusCode::BAD_GATEWAY, &other.to_string()),
    }
}

/// A request refused before it reached the origin.
pub(crate) fn refused(stats: &Stats, refusal: &Refusal) -> Response<Body> {
    stats.count("error");
    let (status, text) = match refusal {
        Refusal::HeadTooLarge => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request header fields too large".to_string(),
        ),
        Refusal::UnexpectedBody => (
            StatusCode::BAD_REQUEST,
            "a body is not allowed on this method".to_string(),
        ),
        Refusal::Target(e) => (StatusCode::BAD_REQUEST, format!("bad request target ({e})")),
        Refusal::Host => (
            StatusCode::BAD_REQUEST,
            "missing, repeated or invalid Host".to_string(),
        ),
        Refusal::Method => (
            StatusCode::METHOD_NOT_ALLOWED,
            "method not forwarded".to_string(),
        ),
        Refusal::BodyTooLarge => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large".to_string(),
        ),
    };
    let mut r = plain(status, &format!("herdguard: {text}\n"));
    // A refused request's body is not read: the connection cannot carry another.
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

fn gateway(stats: &Stats, status: StatusCode, why: &str) -> Response<Body> {
    stats.count("error");
    let mut r = plain(status, &format!("herdguard: {why}\n"));
    CacheStatus::new(NAME)
        .forwarded(ForwardReason::Miss)
        .detail(format!("origin-unavailable-{}", status.as_u16()))
        .append_to(r.headers_mut());
    r
}

/// An answer passed through, with its `Cache-Status` member.
fn finish(
    status: StatusCode,
    mut headers: HeaderMap,
    body: Body,
    member: HeaderValue,
    head: bool,
) -> Response<Body> {
    headers.append(CACHE_STATUS, member);
    respond(status, headers, body, head)
}

/// An answer with its fields complete; HEAD keeps the length, drops the body.
fn respond(status: StatusCode, mut headers: HeaderMap, body: Body, head: bool) -> Response<Body> {
    // A stored response carries its length already (set once, at parse); a
    // streamed one keeps the origin's framing (length or chunked).
    if let Body::Full(bytes) = &body {
        if !headers.contains_key(header::CONTENT_LENGTH) {
            let len = bytes.as_ref().map_or(0, Bytes::len);
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
    }
    sized(status, headers, body, head)
}

/// [`respond`] for fields that carry the body's framing already.
fn sized(status: StatusCode, headers: HeaderMap, body: Body, head: bool) -> Response<Body> {
    let mut response = Response::new(if head { Body::empty() } else { body });
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// A short text answer made by the proxy itself.
pub(crate) fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(Body::full(Bytes::from(text.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
