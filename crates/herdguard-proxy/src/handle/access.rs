//! The access log (`--access-log`): one `tracing` event per request under the
//! target `herdguard::access`, so it takes the binary's log format (text or
//! JSON lines). Off by default; when off, a request pays one branch for it.
//!
//! The answer is read from the response itself: its status, its length when
//! known (stored answers, and passed-through ones with a `Content-Length`),
//! its `Cache-Status` member, and the origin time a load put in its extensions.

use std::time::{Duration, Instant};

use herdguard_http::cache_status::CACHE_STATUS;
use http::{header, Method, Response};

use crate::body::Body;

/// The access log's target.
pub(crate) const TARGET: &str = "herdguard::access";

/// How long the origin took for the answer's load or pass (to its response
/// head), put in the response's extensions; absent for hits.
#[derive(Copy, Clone, Debug)]
pub(crate) struct OriginTime(pub(crate) Duration);

/// A request to log once answered (`--access-log`): what the log takes of
/// it, read before the handler consumes it.
pub(crate) struct Logged {
    method: Method,
    path: String,
    started: Instant,
}

impl Logged {
    /// Notes `request` as it arrives.
    pub(crate) fn of<B>(request: &http::Request<B>) -> Logged {
        Logged {
            method: request.method().clone(),
            path: request.uri().path().to_string(),
            started: Instant::now(),
        }
    }

    /// Logs it with its `response`.
    pub(crate) fn done(self, response: &Response<Body>) {
        log(&self.method, &self.path, response, self.started.elapsed());
    }
}

/// Logs one request: `total` is the time from the request's arrival to its
/// response head.
pub(crate) fn log(method: &Method, path: &str, response: &Response<Body>, total: Duration) {
    let status = response.status().as_u16();
    let bytes = match response.body() {
        Body::Full(b) => Some(b.as_ref().map_or(0, |b| b.len() as u64)),
        _ => response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok()),
    };
    // Ours is the last member (upstream caches' come first).
    let cache_status = response
        .headers()
        .get_all(CACHE_STATUS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .rfind(|m| m.starts_with("herdguard"))
        .unwrap_or("");
    let (result, coalesced) = result_of(cache_status, status);
    let origin_ms = response
        .extensions()
        .get::<OriginTime>()
        .map(|t| millis(t.0));
    tracing::info!(
        target: TARGET,
        method = %method,
        path,
        status,
        bytes,
        total_ms = millis(total),
        origin_ms,
        result,
        coalesced,
        cache_status,
        "request"
    );
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// The request's result (the labels of `herdguard_proxy_requests_total`) and
/// whether it shared another request's load, from this cache's own
/// `Cache-Status` member.
fn result_of(cache_status: &str, status: u16) -> (&'static str, bool) {
    let params: Vec<&str> = cache_status.split(';').map(str::trim).collect();
    let has = |p: &str| {
        params
            .iter()
            .any(|x| *x == p || x.starts_with(&format!("{p}=")))
    };
    let param = |p: &str| {
        params
            .iter()
            .find_map(|x| x.strip_prefix(p).and_then(|v| v.strip_prefix('=')))
    };
    let coalesced = has("collapsed");
    let detail = param("detail").unwrap_or("");
    let result = if has("hit") {
        if detail.contains("stale") || detail.contains("max-stale") {
            "stale"
        } else {
            "hit"
        }
    } else if coalesced {
        "coalesced"
    } else if detail.contains("origin-error") || (param("fwd").is_none() && status >= 500) {
        "error"
    } else {
        match param("fwd") {
            Some("miss" | "stale") if !detail.contains("hit-for-miss") => "miss",
            Some(_) => "bypass",
            None => "error",
        }
    };
    (result, coalesced)
}

#[cfg(test)]
mod tests {
    use super::result_of;

    #[test]
    fn results_are_read_from_the_cache_status_member() {
        assert_eq!(result_of("herdguard; hit; ttl=5", 200), ("hit", false));
        assert_eq!(
            result_of("herdguard; hit; detail=stale-while-revalidate", 200),
            ("stale", false)
        );
        assert_eq!(
            result_of("herdguard; fwd=miss; fwd-status=200; stored; ttl=5", 200),
            ("miss", false)
        );
        assert_eq!(
            result_of(
                "herdguard; fwd=miss; fwd-status=200; collapsed; stored; ttl=5",
                200
            ),
            ("coalesced", true)
        );
        assert_eq!(
            result_of("herdguard; fwd=request; fwd-status=200; detail=range", 200),
            ("bypass", false)
        );
        assert_eq!(
            result_of(
                "herdguard; fwd=miss; fwd-status=503; detail=origin-error",
                503
            ),
            ("error", false)
        );
        assert_eq!(result_of("", 502), ("error", false));
    }
}
