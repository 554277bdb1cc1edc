//! A test helper: one process of an axum app behind the layer, optionally on a
//! shared Redis, so tests can run a fleet of them.
//!
//! `herdguard-tower-app [--redis URL] [--delay-ms N]` listens on a free
//! loopback port, prints `listening ADDR` on stdout, and serves until its
//! standard input closes (so a test that dies takes it along).
//!
//! Routes: `/slow/{name}` answers after `--delay-ms` (default 200) with
//! `Cache-Control: max-age=60`, counting its calls; `/calls` says how many.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use axum::extract::{Path, State};
use axum::http::header;
use axum::routing::get;
use axum::Router;
use herdguard_redis::{RedisConfig, RedisRemote};
use herdguard_tower::{CachedResponse, HerdLayer};
use tokio::io::AsyncReadExt;

struct App {
    calls: AtomicU64,
    delay: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut redis = None;
    let mut delay_ms = 200u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--redis" => redis = Some(args.next().context("--redis needs a URL")?),
            "--delay-ms" => {
                delay_ms = args
                    .next()
                    .context("--delay-ms needs a number")?
                    .parse()
                    .context("--delay-ms needs a number")?
            }
            other => bail!("unknown argument {other:?} (usage: [--redis URL] [--delay-ms N])"),
        }
    }
    let mut builder = HerdLayer::builder();
    if let Some(url) = redis {
        let remote = RedisRemote::<String, CachedResponse>::connect(
            RedisConfig::new(url).prefix("herdguard:tower-app:"),
        )
        .await
        .context("connecting to Redis")?;
        builder = builder.shared_store(remote);
    }
    let layer = builder.build().context("the layer's settings")?;
    let app = Arc::new(App {
        calls: AtomicU64::new(0),
        delay: Duration::from_millis(delay_ms),
    });
    let cached = Router::new()
        .route("/slow/{name}", get(slow))
        .layer(layer)
        .route("/calls", get(calls))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .context("binding a loopback port")?;
    println!("listening {}", listener.local_addr()?);
    let stdin_closed = async {
        let mut sink = [0u8; 64];
        let mut stdin = tokio::io::stdin();
        while matches!(stdin.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    axum::serve(listener, cached)
        .with_graceful_shutdown(stdin_closed)
        .await
        .context("serving")
}

async fn slow(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> impl axum::response::IntoResponse {
    app.calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(app.delay).await;
    (
        [(header::CACHE_CONTROL, "max-age=60")],
        format!("slow {name}\n"),
    )
}

async fn calls(State(app): State<Arc<App>>) -> String {
    app.calls.load(Ordering::SeqCst).to_string()
}
