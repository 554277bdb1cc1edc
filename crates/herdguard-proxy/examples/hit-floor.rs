//! The floor under a sidecar hit, for `docs/performance.md`: what hyper and
//! Tokio cost to answer one keep-alive HTTP/1.1 request on one thread, with the
//! answer a hit sends (the bench origin's 1 KiB body and fields, plus `Age` and
//! `Cache-Status`) cloned from a kept field map, and nothing else — no key, no
//! lookup, no rules. Run under callgrind like `serve` (one thread, `wrk -c8`):
//! instructions per request here are what no change to herdguard can remove.
//!
//! With `--h2`, the same for HTTP/2 by prior knowledge: the `h2` crate and
//! Tokio, each stream answered on the connection's task as it is accepted
//! (head, then the body in one DATA frame), with the `h2` settings the sidecar
//! uses (run under `h2load -c8 -m8`).
//!
//! `cargo run --release --example hit-floor -- --port 9001 [--h2]`

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use clap::Parser;
use http::{header, HeaderMap, HeaderValue, Response};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[derive(Parser)]
struct Args {
    /// Loopback port to listen on.
    #[arg(long)]
    port: u16,
    /// Speak HTTP/2 (h2c, prior knowledge) with the `h2` crate, not HTTP/1.1.
    #[arg(long)]
    h2: bool,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(args.port, args.h2))
}

async fn serve(port: u16, h2: bool) -> std::io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let body = Bytes::from(vec![b'x'; 1024]);
    let mut kept = HeaderMap::new();
    kept.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    kept.insert(
        header::DATE,
        HeaderValue::from_static("Mon, 07 Dec 2026 05:00:00 GMT"),
    );
    kept.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    kept.insert(header::AGE, HeaderValue::from_static("0"));
    kept.insert(
        "cache-status",
        HeaderValue::from_static("herdguard; hit; ttl=299"),
    );
    let kept = Arc::new(kept);
    let accept = async {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (body, kept) = (body.clone(), Arc::clone(&kept));
            if h2 {
                tokio::spawn(serve_h2(stream, body, kept));
                continue;
            }
            let service = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                let mut response = Response::new(Full::new(body.clone()));
                *response.headers_mut() = HeaderMap::clone(&kept);
                std::future::ready(Ok::<_, Infallible>(response))
            });
            tokio::spawn(
                http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    };
    tokio::select! {
        () = accept => Ok(()),
        () = herdguard_proxy::shutdown_signal() => Ok(()),
    }
}

/// One HTTP/2 connection: every stream answered as it is accepted.
async fn serve_h2(stream: tokio::net::TcpStream, body: Bytes, kept: Arc<HeaderMap>) {
    let mut builder = h2::server::Builder::new();
    // The sidecar's settings (listen/h2.rs).
    builder
        .initial_window_size(1024 * 1024)
        .initial_connection_window_size(1024 * 1024)
        .max_frame_size(16 * 1024)
        .max_send_buffer_size(400 * 1024)
        .max_concurrent_streams(200);
    let Ok(mut conn) = builder.handshake::<_, Bytes>(stream).await else {
        return;
    };
    while let Some(Ok((_request, mut reply))) = conn.accept().await {
        let mut response = Response::new(());
        *response.headers_mut() = HeaderMap::clone(&kept);
        if let Ok(mut tx) = reply.send_response(response, false) {
            let _ = tx.send_data(body.clone(), true);
        }
    }
}
