//! A tiny origin for `scripts/bench-serve.sh`: `/slow/...` answers after
//! `--delay-ms` (the stampede case), `/big/N` streams N bytes, uncacheable (the
//! streaming case), everything else answers at once (the hit case). Other
//! answers are cacheable for 5 minutes (`/small/...`: 35 bytes for 10 minutes, the
//! memory benchmark's object); it prints the requests it served on exit.
//! `/_slow_calls`, asked directly (not through a cache), answers how many
//! `/slow/...` requests it has served (uncacheable): a fleet's origin calls.
//!
//! `cargo run --release --example bench-origin -- --port 9000 --delay-ms 200`

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, SizeHint};
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

/// `left` bytes of `x`, in 64 KiB frames of one shared buffer.
struct Repeat {
    left: u64,
    chunk: Bytes,
}

impl Repeat {
    fn new(left: u64) -> Self {
        Repeat {
            left,
            chunk: Bytes::from(vec![b'x'; 64 * 1024]),
        }
    }
}

impl Body for Repeat {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64);
        self.left -= n;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n as usize)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(("127.0.0.1", args.port)).await?;
    let served = Arc::new(AtomicU64::new(0));
    let body = Bytes::from(vec![b'x'; 1024]);
    let delay = Duration::from_millis(args.delay_ms);
    let slow_calls = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&served);
    let accept = async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (body, counter, slow) =
                (body.clone(), Arc::clone(&counter), Arc::clone(&slow_calls));
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let (body, counter, slow) = (body.clone(), Arc::clone(&counter), Arc::clone(&slow));
                async move {
                    counter.fetch_add(1, Ordering::Relaxed);
                    if req.uri().path() == "/_slow_calls" {
                        let n = slow.load(Ordering::Relaxed).to_string();
                        let mut r = Response::new(Either::Left(Full::new(Bytes::from(n))));
                        r.headers_mut()
                            .insert("cache-control", http::HeaderValue::from_static("no-store"));
                        return Ok::<_, Infallible>(r);
                    }
                    if let Some(n) = req.uri().path().strip_prefix("/big/") {
                        let left = n.parse().unwrap_or(0);
                        let mut r = Response::new(Either::Right(Repeat::new(left)));
                        r.headers_mut()
                            .insert("cache-control", http::HeaderValue::from_static("no-store"));
                        return Ok::<_, Infallible>(r);
                    }
                    if req.uri().path().starts_with("/slow/") {
                        slow.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(delay).await;
                    }
                    if req.uri().path().starts_with("/small/") {
                        // 35 bytes, cacheable for 10 minutes: the memory benchmark's object.
                        let mut r = Response::new(Either::Left(Full::new(Bytes::from_static(
                            b"{\"temp\":21.5,\"unit\":\"C\",\"ok\":true }",
                        ))));
                        r.headers_mut().insert(
                            "cache-control",
                            http::HeaderValue::from_static("max-age=600"),
                        );
                        return Ok::<_, Infallible>(r);
                    }
                    let mut r = Response::new(Either::Left(Full::new(body)));
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
