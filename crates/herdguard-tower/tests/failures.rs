//! A handler that fails or panics under a stampede: every waiter gets a 5xx,
//! the handler is called once, and the next request calls it again.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use common::{serve, Client};
use herdguard_tower::HerdLayer;

const CLIENTS: usize = 50;

async fn failing(State(calls): State<Arc<AtomicUsize>>) -> impl IntoResponse {
    calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    (StatusCode::INTERNAL_SERVER_ERROR, "the database is down")
}

async fn panicking(State(calls): State<Arc<AtomicUsize>>) -> &'static str {
    calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    panic!("the handler panicked (on purpose)");
}

async fn stampede_then_once_more(path: &str) {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route("/failing", get(failing))
        .route("/panicking", get(panicking))
        .layer(HerdLayer::new())
        .with_state(Arc::clone(&calls));
    let server = serve(app).await;
    let url = server.url(path);
    let client = Client::new();
    let replies = futures_util::future::join_all((0..CLIENTS).map(|_| {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move { client.get(&url, &[]).await })
    }))
    .await;
    for reply in replies {
        let reply = reply.unwrap();
        assert_eq!(reply.status, 500, "{reply:?}");
        assert!(
            reply.cache_status().starts_with("herdguard; fwd=miss"),
            "{reply:?}"
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one call for the stampede");
    let next = client.get(&url, &[]).await;
    assert_eq!(next.status, 500);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the next request calls the handler again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handler_error_reaches_every_waiter_and_is_not_kept() {
    stampede_then_once_more("/failing").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handler_panic_reaches_every_waiter_as_a_500_and_is_not_kept() {
    stampede_then_once_more("/panicking").await;
}
