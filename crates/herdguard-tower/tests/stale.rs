//! Stale answers, as the response allows: `stale-while-revalidate` serves the
//! stored answer while one call refreshes it; `stale-if-error` serves it when
//! the call fails.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use common::{serve, Client};
use herdguard_tower::HerdLayer;

#[derive(Default)]
struct Origin {
    calls: AtomicUsize,
    failing: AtomicBool,
}

async fn swr(State(o): State<Arc<Origin>>) -> impl IntoResponse {
    let n = o.calls.fetch_add(1, Ordering::SeqCst) + 1;
    // Slow enough that the stale answers all come before the refresh ends.
    tokio::time::sleep(Duration::from_millis(500)).await;
    (
        [(
            header::CACHE_CONTROL,
            "max-age=1, stale-while-revalidate=30",
        )],
        format!("version {n}"),
    )
}

async fn sie(State(o): State<Arc<Origin>>) -> impl IntoResponse {
    let n = o.calls.fetch_add(1, Ordering::SeqCst) + 1;
    if o.failing.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    (
        [(header::CACHE_CONTROL, "max-age=1, stale-if-error=30")],
        format!("version {n}"),
    )
        .into_response()
}

async fn app() -> (common::Server, Arc<Origin>) {
    let origin = Arc::new(Origin::default());
    let app = Router::new()
        .route("/swr", get(swr))
        .route("/sie", get(sie))
        .layer(HerdLayer::new())
        .with_state(Arc::clone(&origin));
    (serve(app).await, origin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_while_revalidate_answers_at_once_and_refreshes_once() {
    let (server, origin) = app().await;
    let (client, url) = (Client::new(), server.url("/swr"));
    assert_eq!(client.get(&url, &[]).await.body, "version 1");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let stale = futures_util::future::join_all((0..10).map(|_| client.get(&url, &[]))).await;
    for reply in &stale {
        assert_eq!(reply.body, "version 1");
        assert_eq!(
            reply.cache_status(),
            "herdguard; hit; detail=stale-while-revalidate"
        );
        let age: u64 = reply.headers["age"].to_str().unwrap().parse().unwrap();
        assert!(age >= 2, "age {age}");
    }
    // One refresh, in the background.
    for _ in 0..100 {
        if client.get(&url, &[]).await.body == "version 2" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(client.get(&url, &[]).await.body, "version 2");
    assert_eq!(origin.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_if_error_stands_in_for_a_failed_call() {
    let (server, origin) = app().await;
    let (client, url) = (Client::new(), server.url("/sie"));
    assert_eq!(client.get(&url, &[]).await.body, "version 1");
    origin.failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let reply = client.get(&url, &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "version 1");
    assert_eq!(
        reply.cache_status(),
        "herdguard; hit; detail=stale-if-error"
    );
    assert_eq!(origin.calls.load(Ordering::SeqCst), 2);
}
