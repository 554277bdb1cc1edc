//! The one place that turns every outcome into an answer: a stored response, an
//! answer passed through, a failure, a refused request — each with its RFC 9211
//! `Cache-Status` member (serialized by `herdguard-http`) and its count in
//! `herdguard_proxy_requests_total`.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use herdguard::{Error, Served};
use herdguard_http::cache_status::CACHE_STATUS;
use herdguard_http::{CacheConfig, CacheStatus, ForwardReason};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::request::Refusal;
use super::response::{CachedResponse, Fetch};
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
const NAME: &str = "herdguard";

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
    if served == Served::Hit {
        // The common case, by far: its member is rendered once per ttl value.
        let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        return with_stored(stats, config, value, hit_member(ttl), "hit", head);
    }
    let (mut member, label) = served_member(served, value, ttl);
    if forced && matches!(served, Served::Loaded | Served::Coalesced) {
        member = member.forwarded(ForwardReason::Request);
    }
    with_stored(stats, config, value, member.to_header_value(), label, head)
}

/// `herdguard; hit; ttl=N`, rendered once per value of N on each thread: hits
/// of one entry share N for a second at a time, so a clone (a reference count)
/// replaces a rendering.
fn hit_member(ttl: i64) -> HeaderValue {
    thread_local! {
        static RENDERED: std::cell::RefCell<[(i64, Option<HeaderValue>); 8]> =
            std::cell::RefCell::new(Default::default());
    }
    let render = || CacheStatus::new(NAME).hit().ttl(ttl).to_header_value();
    RENDERED.with(|slots| {
        let Ok(mut slots) = slots.try_borrow_mut() else {
            return render();
        };
        let slot = &mut slots[usize::try_from(ttl.rem_euclid(8)).unwrap_or(0)];
        match &slot.1 {
            Some(v) if slot.0 == ttl => v.clone(),
            _ => {
                let v = render();
                *slot = (ttl, Some(v.clone()));
                v
            }
        }
    })
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
    )
}

fn with_stored(
    stats: &Stats,
    config: &CacheConfig,
    value: &CachedResponse,
    member: HeaderValue,
    label: &'static str,
    head: bool,
) -> Response<Body> {
    stats.count(label);
    let age = value.semantics(config).current_age(SystemTime::now());
    finish(
        value.status(),
        value.header_map(),
        Body::full(value.body.clone()),
        Some(age),
        member,
        head,
    )
}

/// How a stored response was served, as a `Cache-Status` member and a count label.
fn served_member(
    served: Served,
    value: &CachedResponse,
    ttl: Duration,
) -> (CacheStatus, &'static str) {
    let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    let m = CacheStatus::new(NAME);
    match served {
        Served::Hit => (m.hit().ttl(ttl), "hit"),
        Served::EarlyRefresh => (m.hit().ttl(ttl).detail("early-refresh"), "hit"),
        Served::Shared => (m.hit().ttl(ttl).detail("fleet"), "hit"),
        Served::StaleWhileRevalidate => (m.hit().detail("stale-while-revalidate"), "stale"),
        Served::StaleOnError => (m.hit().detail("stale-if-error"), "stale"),
        Served::StaleOnTimeout => (m.hit().detail("stale-on-timeout"), "stale"),
        Served::Loaded | Served::Coalesced | Served::Pass => {
            let fwd = match value.fetch {
                Fetch::Miss => ForwardReason::Miss,
                Fetch::Revalidated | Fetch::Replaced => ForwardReason::Stale,
            };
            let fwd_status = if value.fetch == Fetch::Revalidated {
                304
            } else {
                value.status
            };
            let collapsed = served == Served::Coalesced;
            // A pass (hit-for-miss) is this caller's own answer: not stored.
            let pass = served == Served::Pass;
            let m = m.forwarded(fwd).fwd_status(fwd_status).collapsed(collapsed);
            match (pass, collapsed) {
                (true, _) => (m.detail("hit-for-miss"), "bypass"),
                (false, true) => (m.stored(true).ttl(ttl), "coalesced"),
                (false, false) => (m.stored(true).ttl(ttl), "miss"),
            }
        }
        _ => (m.hit(), "hit"),
    }
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
        None,
        member.to_header_value(),
        head,
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
        None,
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

/// An answer with `Age` and `Cache-Status`; HEAD keeps the length, drops the body.
fn finish(
    status: StatusCode,
    mut headers: HeaderMap,
    body: Body,
    age: Option<Duration>,
    member: HeaderValue,
    head: bool,
) -> Response<Body> {
    if let Some(age) = age {
        headers.insert(header::AGE, HeaderValue::from(age.as_secs()));
    }
    headers.append(CACHE_STATUS, member);
    // A stored response carries its length already (set once, at parse); a
    // streamed one keeps the origin's framing (length or chunked).
    if let Body::Full(bytes) = &body {
        if !headers.contains_key(header::CONTENT_LENGTH) {
            let len = bytes.as_ref().map_or(0, Bytes::len);
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_hit_members_equal_a_fresh_rendering() {
        for ttl in [0, 1, 8, 9, 16, 59, 59, 86_400, 0] {
            let fresh = CacheStatus::new(NAME).hit().ttl(ttl).to_header_value();
            assert_eq!(hit_member(ttl), fresh, "{ttl}");
        }
    }
}
