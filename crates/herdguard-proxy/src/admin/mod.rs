//! The admin listener: `/` (the live dashboard) and `/events` (its update
//! stream), `/metrics` (Prometheus text), `/healthz`, `/readyz`, `POST /purge`
//! — with the same connection limits as the proxy listener (head, idle and
//! write timeouts, a connection cap) and a back-off on accept errors.
//!
//! Open dashboards cannot starve the operations: an `/events` stream gives its
//! connection slot back and counts against a cap of its own
//! (`admin_max_event_streams`; past it, 503), so `admin_max_connections`
//! slots stay for `/metrics`, purges and probes. With `admin_auth = "all"`
//! everything but the probes needs the purge token (`auth`). Bound beyond
//! loopback, the listener says so at start.
//!
//! # Layout
//!
//! - [`dashboard`]: the live view — one sampler a second, the event stream,
//!   the fleet view through Redis, the page.
//! - `auth`: the purge token and what needs it (`admin_auth`).
//! - `metrics`: the Prometheus exposition of the counters.
//! - `purge`: `POST /purge`, broadcast to the fleet through Redis;
//!   `purge_client`: `herdguard purge`, its client.

pub(crate) mod auth;
pub mod dashboard;
pub(crate) mod metrics;
pub(crate) mod purge;
pub(crate) mod purge_client;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use auth::{unauthorized, AdminAuth, Token};
use dashboard::{EventStream, Sampler, PAGE};
use purge::Purger;

use crate::body::Body;
use crate::handle::answer::plain;
use crate::handle::proxy::{FleetRemote, Proxy};
use crate::listen::acceptor::{accept, LiveConnections};
use crate::listen::limits::{ConnState, TimedIo, Tracked};
use herdguard_web::{CHART_JS, CSS_TYPE, HTML_TYPE, JS_TYPE, STYLE_CSS};

/// The admin listener's settings.
pub(crate) struct Admin {
    pub sampler: Arc<Sampler>,
    pub proxy: Arc<Proxy>,
    /// The connection limits in force (a reload replaces them).
    pub live: LiveConnections,
    pub redis: bool,
    pub purger: Arc<Purger>,
    /// The shared store, for its quorum-lease counters.
    pub remote: Option<FleetRemote>,
    pub max_connections: usize,
    /// Most `/events` streams open at once, beside the connection slots.
    pub max_event_streams: usize,
    /// What needs the purge token (`token`).
    pub auth: (AdminAuth, Option<Token>),
}

/// How long a dashboard refused for want of a stream slot is asked to wait.
const EVENTS_RETRY_AFTER_SECS: u32 = 5;

/// What a request of the admin listener may use beyond its connection.
#[derive(Clone)]
struct Shared {
    proxy: Arc<Proxy>,
    sampler: Arc<Sampler>,
    redis: bool,
    purger: Arc<Purger>,
    quorum: Option<FleetRemote>,
    /// The `/events` stream slots.
    streams: Arc<Semaphore>,
    max_event_streams: usize,
    auth: (AdminAuth, Option<Token>),
}

impl Admin {
    /// Serves admin requests until `stop` turns true.
    pub(crate) async fn serve(self, listener: TcpListener, mut stop: watch::Receiver<bool>) {
        if let Ok(addr) = listener.local_addr() {
            if let Some(warning) = exposure(addr, self.auth.0) {
                tracing::warn!(target: "herdguard::serve", %addr, "{warning}");
            }
        }
        let slots = Arc::new(Semaphore::new(self.max_connections));
        let shared = Shared {
            proxy: self.proxy,
            sampler: self.sampler,
            redis: self.redis,
            purger: self.purger,
            quorum: self.remote,
            streams: Arc::new(Semaphore::new(self.max_event_streams)),
            max_event_streams: self.max_event_streams,
            auth: self.auth,
        };
        let mut builder = http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(None);
        loop {
            let accepted = tokio::select! {
                accepted = accept(&listener, &slots) => accepted,
                _ = stop.changed() => return,
            };
            let Some((stream, _, slot)) = accepted else {
                continue;
            };
            // Shared with the service: an event stream gives it back.
            let slot = Arc::new(Mutex::new(Some(slot)));
            let state = Arc::new(ConnState::default());
            let limits = self.live.load().limits;
            let io = TimedIo::new(stream, Arc::clone(&state), limits);
            let (shared, held) = (shared.clone(), Arc::clone(&slot));
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let busy = state.begin();
                let (shared, slot) = (shared.clone(), Arc::clone(&held));
                async move {
                    let response = shared.answer(req, &slot).await;
                    Ok::<_, Infallible>(response.map(|b| Tracked::new(b, busy)))
                }
            });
            let conn = builder.serve_connection(TokioIo::new(io), service);
            tokio::spawn(async move {
                let _slot = slot;
                let _ = conn.await;
            });
        }
    }
}

impl Shared {
    /// The answer to one admin request on a connection holding `slot`.
    async fn answer(
        &self,
        req: Request<hyper::body::Incoming>,
        slot: &Mutex<Option<OwnedSemaphorePermit>>,
    ) -> Response<Body> {
        let path = req.uri().path();
        if let (AdminAuth::All, Some(token)) = &self.auth {
            // Purge checks the token itself (and says when purge is disabled).
            if path != "/purge" && AdminAuth::All.guards(path) && !token.admits(req.headers()) {
                return unauthorized(path);
            }
        }
        match path {
            // Only a purge reads more of the request than its path.
            "/purge" => self.purger.answer(req).await,
            "/events" => self.events(slot),
            _ => {
                // The quorum counters copy every lock server's name: read
                // them for a scrape only.
                let quorum = (path == "/metrics")
                    .then(|| self.quorum.as_ref().and_then(|r| r.quorum_stats()))
                    .flatten();
                answer(
                    &self.proxy,
                    &self.sampler,
                    self.redis,
                    quorum.as_ref(),
                    path,
                )
            }
        }
    }

    /// A dashboard's event stream, on a stream slot instead of the
    /// connection's (which goes back to the listener); 503 when all are taken.
    fn events(&self, slot: &Mutex<Option<OwnedSemaphorePermit>>) -> Response<Body> {
        let Ok(stream) = Arc::clone(&self.streams).try_acquire_owned() else {
            let mut r = plain(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "herdguard: {} dashboards are open (admin_max_event_streams)\n",
                    self.max_event_streams
                ),
            );
            let h = r.headers_mut();
            h.insert(
                header::RETRY_AFTER,
                HeaderValue::from(EVENTS_RETRY_AFTER_SECS),
            );
            // A page retrying in a loop must not keep a slot meant for operations.
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
            return r;
        };
        if let Ok(mut slot) = slot.lock() {
            slot.take();
        }
        let mut r = typed(
            Body::stream(EventStream::follow(self.sampler.subscribe(), stream)),
            "text/event-stream",
        );
        let h = r.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // Its connection holds no slot any more: nothing follows the stream on it.
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        r
    }
}

/// The warning an admin listener on `addr` deserves: beyond loopback, anyone
/// who reaches it reads the metrics and the dashboard (unless `admin_auth` is
/// `all`) and may try the purge token.
fn exposure(addr: SocketAddr, auth: AdminAuth) -> Option<String> {
    if addr.ip().is_loopback() {
        return None;
    }
    Some(match auth {
        AdminAuth::Purge => "admin listener beyond loopback: /metrics and the dashboard are open to anyone who reaches it (admin_auth = \"all\" puts them behind the purge token)".to_string(),
        AdminAuth::All => "admin listener beyond loopback: every path but /healthz and /readyz needs the purge token (admin_auth = \"all\")".to_string(),
    })
}

fn answer(
    proxy: &Proxy,
    sampler: &Sampler,
    redis: bool,
    quorum: Option<&herdguard_redis::QuorumStats>,
    path: &str,
) -> Response<Body> {
    match path {
        "/" => typed(Body::full(Bytes::from_static(PAGE.as_bytes())), HTML_TYPE),
        "/assets/chart.js" => typed(Body::full(Bytes::from_static(CHART_JS.as_bytes())), JS_TYPE),
        "/assets/style.css" => typed(
            Body::full(Bytes::from_static(STYLE_CSS.as_bytes())),
            CSS_TYPE,
        ),
        "/dashboard.json" => {
            let latest = sampler.subscribe().borrow().clone();
            typed(Body::full(latest), "application/json")
        }
        "/metrics" => {
            let shared = redis.then(|| proxy.cache.shared_store_healthy());
            let text = metrics::render(&proxy.stats, &proxy.cache.metrics(), shared, quorum);
            let mut r = Response::new(Body::full(Bytes::from(text)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        "/healthz" => plain(StatusCode::OK, "ok\n"),
        // Redis trouble degrades coalescing to per instance but never stops
        // serving, so the proxy stays ready; the body says which mode it is in.
        "/readyz" => match (redis, proxy.cache.shared_store_healthy()) {
            (false, _) => plain(StatusCode::OK, "ready\nshared_store: none\n"),
            (true, true) => plain(StatusCode::OK, "ready\nshared_store: ok\n"),
            (true, false) => plain(
                StatusCode::OK,
                "ready\nshared_store: degraded (coalescing per instance)\n",
            ),
        },
        _ => plain(
            StatusCode::NOT_FOUND,
            "not found: try /, /events, /dashboard.json, /metrics, /healthz, /readyz, POST /purge\n",
        ),
    }
}

fn typed(body: Body, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(body);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_listener_beyond_loopback_is_warned_of() {
        for addr in ["127.0.0.1:9090", "[::1]:9090"] {
            assert_eq!(
                exposure(addr.parse().unwrap(), AdminAuth::Purge),
                None,
                "{addr}"
            );
        }
        for addr in ["0.0.0.0:9090", "10.0.0.5:9090", "[::]:9090"] {
            let warning = exposure(addr.parse().unwrap(), AdminAuth::Purge).unwrap();
            assert!(warning.contains("admin_auth"), "{warning}");
        }
        assert!(exposure("0.0.0.0:1".parse().unwrap(), AdminAuth::All).is_some());
    }
}
