//! The benchmark's app (`scripts/bench-tower.sh`): the same routes behind the
//! herdguard layer, behind axum-response-cache, or behind nothing.
//!
//! `bench-app --mode layer|arc|plain` listens on a free loopback port and
//! prints `listening ADDR`. Routes: `/hot` (1 KiB, at once), `/cold/{n}`
//! (after 200 ms, counting calls), both `Cache-Control: max-age=3600`;
//! `/calls` (uncached) says how many `/cold` calls were made.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use axum_response_cache::CacheLayer;
use herdguard_tower::HerdLayer;

async fn hot() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "max-age=3600")], vec![b'h'; 1024])
}

async fn cold(State(calls): State<Arc<AtomicU64>>, Path(n): Path<u64>) -> impl IntoResponse {
    calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    (
        [(header::CACHE_CONTROL, "max-age=3600")],
        format!("cold {n}\n"),
    )
}

async fn calls(State(calls): State<Arc<AtomicU64>>) -> String {
    calls.load(Ordering::SeqCst).to_string()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mode = match std::env::args().skip(1).collect::<Vec<_>>().as_slice() {
        [flag, mode] if flag == "--mode" => mode.clone(),
        _ => return Err("usage: bench-app --mode layer|arc|plain".into()),
    };
    let counter = Arc::new(AtomicU64::new(0));
    let routes = Router::new()
        .route("/hot", get(hot))
        .route("/cold/{n}", get(cold));
    let routes = match mode.as_str() {
        "layer" => routes.layer(HerdLayer::new()),
        "arc" => routes.layer(CacheLayer::with_lifespan(Duration::from_secs(3600))),
        "plain" => routes,
        other => return Err(format!("unknown mode {other:?} (layer, arc, plain)").into()),
    };
    let app = routes.route("/calls", get(calls)).with_state(counter);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
