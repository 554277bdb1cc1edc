//! An axum app with a slow route behind the herdguard layer.
//!
//! ```text
//! cargo run -p herdguard-tower --example axum          # listens on 127.0.0.1:3000
//! curl -si localhost:3000/report                        # 1 s the first time, then at once
//! curl -s localhost:3000/stats                          # the cache's counters
//! ```
//!
//! Run a stampede on the cold route (`wrk -c64 -d5s http://127.0.0.1:3000/report?day=2`,
//! `xargs -P`, ...): `/stats` shows one load and the rest coalesced or hits.
//! `PORT=8080` picks another port.

use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use herdguard_tower::HerdLayer;

/// A report that takes a second to compute, and may be kept 10 s, then
/// served stale for 30 s more while one call refreshes it.
async fn report() -> impl IntoResponse {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (
        [(
            header::CACHE_CONTROL,
            "max-age=10, stale-while-revalidate=30",
        )],
        format!("the report, computed at {now}\n"),
    )
}

/// One user's page: `private`, so never shared.
async fn me() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "private, max-age=60")],
        "your page\n",
    )
}

async fn stats(State(layer): State<HerdLayer>) -> String {
    let m = layer.metrics();
    format!(
        "hits {}\nloads {}\ncoalesced {}\nstale {}\nentries {}\n",
        m.hits, m.loads, m.coalesced, m.stale_while_revalidate, m.entries
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let layer = HerdLayer::new();
    let app = Router::new()
        .route("/report", get(report))
        .route("/me", get(me))
        .layer(layer.clone())
        // Added after the layer: not cached.
        .route("/stats", get(stats))
        .with_state(layer);
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p.parse().map_err(|_| format!("PORT={p:?} is not a port"))?,
        Err(_) => 3000,
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
