//! The admin listener: `/metrics` (Prometheus text), `/healthz`, `/readyz`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::proxy::{plain, Proxy};

/// Serves admin requests until `stop` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    redis: bool,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
            _ = stop.changed() => return,
        };
        let proxy = Arc::clone(&proxy);
        let service = service_fn(move |req: Request<hyper::body::Incoming>| {
            let proxy = Arc::clone(&proxy);
            async move { Ok::<_, Infallible>(answer(&proxy, redis, req.uri().path())) }
        });
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(proxy: &Proxy, redis: bool, path: &str) -> Response<Full<Bytes>> {
    match path {
        "/metrics" => {
            let shared = redis.then(|| proxy.cache.shared_store_healthy());
            let text = proxy.stats.render(&proxy.cache.metrics(), shared);
            let mut r = Response::new(Full::new(Bytes::from(text)));
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
            "not found: try /metrics, /healthz, /readyz\n",
        ),
    }
}
