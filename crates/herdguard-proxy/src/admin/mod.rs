//! The admin listener: `/` (the live dashboard) and `/events` (its update
//! stream), `/metrics` (Prometheus text), `/healthz`, `/readyz`, `POST /purge`
//! — with the same connection limits as the proxy listener (head, idle and
//! write timeouts, a connection cap) and a back-off on accept errors.
//!
//! # Layout
//!
//! - [`dashboard`]: the live view — one sampler a second, the event stream,
//!   the fleet view through Redis, the page.
//! - `metrics`: the Prometheus exposition of the counters.
//! - `purge`: `POST /purge`, broadcast to the fleet through Redis;
//!   `purge_client`: `herdguard purge`, its client.

pub mod dashboard;
pub(crate) mod metrics;
pub(crate) mod purge;
pub(crate) mod purge_client;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

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
}

impl Admin {
    /// Serves admin requests until `stop` turns true.
    pub(crate) async fn serve(self, listener: TcpListener, mut stop: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(self.max_connections));
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
            let proxy = Arc::clone(&self.proxy);
            let sampler = Arc::clone(&self.sampler);
            let redis = self.redis;
            let purger = Arc::clone(&self.purger);
            let quorum = self.remote.clone();
            let state = Arc::new(ConnState::default());
            let limits = self.live.load().limits;
            let io = TimedIo::new(stream, Arc::clone(&state), limits);
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let busy = state.begin();
                // The quorum counters copy every lock server's name: read
                // them for a scrape only.
                let quorum = (req.uri().path() == "/metrics")
                    .then(|| quorum.as_ref().and_then(|r| r.quorum_stats()))
                    .flatten();
                let (proxy, sampler, purger) = (
                    Arc::clone(&proxy),
                    Arc::clone(&sampler),
                    Arc::clone(&purger),
                );
                async move {
                    // Only a purge reads more of the request than its path.
                    let response = if req.uri().path() == "/purge" {
                        purger.answer(req).await
                    } else {
                        answer(&proxy, &sampler, redis, quorum.as_ref(), req.uri().path())
                    };
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
        "/events" => {
            let mut r = typed(
                Body::stream(EventStream::follow(sampler.subscribe())),
                "text/event-stream",
            );
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
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
