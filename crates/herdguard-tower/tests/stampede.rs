//! A cold route under a stampede: one handler call, every client the same answer.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::routing::get;
use axum::Router;
use common::{serve, Client};
use herdguard_tower::HerdLayer;

const CLIENTS: usize = 200;

async fn slow(State(calls): State<Arc<AtomicUsize>>) -> impl axum::response::IntoResponse {
    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::time::sleep(Duration::from_millis(200)).await;
    (
        [(header::CACHE_CONTROL, "max-age=60")],
        format!("report #{n}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_requests_to_a_cold_route_make_one_handler_call() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = HerdLayer::new();
    let app = Router::new()
        .route("/report", get(slow))
        .layer(layer.clone())
        .with_state(Arc::clone(&calls));
    let server = serve(app).await;
    let url = server.url("/report");
    let client = Client::new();
    let replies = futures_util::future::join_all((0..CLIENTS).map(|_| {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move { client.get(&url, &[]).await })
    }))
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 1, "handler calls");
    let mut coalesced = 0;
    for reply in replies {
        let reply = reply.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, "report #1");
        coalesced += usize::from(reply.cache_status().contains("collapsed"));
    }
    // Every caller but the leader waited on its load (some may come late and hit).
    let m = layer.metrics();
    assert_eq!(m.loads, 1);
    assert_eq!(m.coalesced as usize + m.hits as usize + 1, CLIENTS);
    assert!(coalesced > 0);
    // The next request is a hit.
    let hit = client.get(&url, &[]).await;
    assert!(
        hit.cache_status().starts_with("herdguard; hit"),
        "{}",
        hit.cache_status()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
