//! A tiny origin for `scripts/bench-serve.sh`: `/slow/...` answers after
//! `--delay-ms` (the stampede case), everything else at once (the hit case).
//! Every answer is cacheable for 5 minutes; it prints the requests it served on exit.
//!
//! `cargo run --release --example bench-origin -- --port 9000 --delay-ms 200`

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[derive(Parser)]
struct Args {
    /// Loopback port to listen on.
    #[arg(long)]
    port: u16,
    /// Latency of `/slow/...` answers, milliseconds.
    #[arg(long, default_value_t = 200)]
    delay_ms: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(("127.0.0.1", args.port)).await?;
    let served = Arc::new(AtomicU64::new(0));
    let body = Bytes::from(vec![b'x'; 1024]);
    let delay = Duration::from_millis(args.delay_ms);
    let counter = Arc::clone(&served);
    let accept = async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (body, counter) = (body.clone(), Arc::clone(&counter));
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let (body, counter) = (body.clone(), Arc::clone(&counter));
                async move {
                    counter.fetch_add(1, Ordering::Relaxed);
                    if req.uri().path().starts_with("/slow/") {
                        tokio::time::sleep(delay).await;
                    }
                    let mut r = Response::new(Full::new(body));
                    r.headers_mut().insert(
                        "cache-control",
                        http::HeaderValue::from_static("max-age=300"),
                    );
                    Ok::<_, Infallible>(r)
                }
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    };
    tokio::select! {
        () = accept => {}
        () = herdguard_proxy::shutdown_signal() => {}
    }
    eprintln!(
        "bench-origin: served {} requests",
        served.load(Ordering::Relaxed)
    );
    Ok(())
}
