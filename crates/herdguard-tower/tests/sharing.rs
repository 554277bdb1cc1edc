//! Answers a shared cache may not share — `private`, `Set-Cookie` — reach
//! their own client only, even when clients of two users stampede one URL.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use common::{serve, Client};
use herdguard_tower::HerdLayer;

fn user(headers: &HeaderMap) -> String {
    headers
        .get("x-user")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("nobody")
        .to_string()
}

async fn private(State(calls): State<Arc<AtomicUsize>>, headers: HeaderMap) -> impl IntoResponse {
    calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    (
        [(header::CACHE_CONTROL, "private, max-age=60")],
        format!("account of {}", user(&headers)),
    )
}

async fn login(State(calls): State<Arc<AtomicUsize>>, headers: HeaderMap) -> impl IntoResponse {
    calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let who = user(&headers);
    (
        [
            (header::CACHE_CONTROL, "max-age=60".to_string()),
            (header::SET_COOKIE, format!("session={who}")),
        ],
        format!("welcome {who}"),
    )
}

/// Alice's and Bob's clients, 25 requests each, all at once, then once more
/// each: every answer is its own user's.
async fn two_clients_never_see_each_other(path: &str, expect_body: &str) {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route("/account", get(private))
        .route("/login", get(login))
        .layer(HerdLayer::new())
        .with_state(Arc::clone(&calls));
    let server = serve(app).await;
    let url = server.url(path);
    let (alice, bob) = (Client::new(), Client::new());
    for round in 0..2 {
        let n = if round == 0 { 25 } else { 1 };
        let requests = (0..n).flat_map(|_| {
            [("alice", alice.clone()), ("bob", bob.clone())].map(|(who, client)| {
                let url = url.clone();
                tokio::spawn(async move { (who, client.get(&url, &[("x-user", who)]).await) })
            })
        });
        for reply in futures_util::future::join_all(requests).await {
            let (who, reply) = reply.unwrap();
            assert_eq!(reply.status, 200);
            assert_eq!(
                reply.body,
                format!("{expect_body} {who}"),
                "{who} in round {round}"
            );
            if let Some(cookie) = reply.headers.get(header::SET_COOKIE) {
                assert_eq!(cookie, &format!("session={who}"));
            }
            assert!(
                !reply.cache_status().contains("hit;"),
                "{}",
                reply.cache_status()
            );
        }
    }
    // Nothing was served from the cache: every request called the handler.
    assert_eq!(calls.load(Ordering::SeqCst), 52);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn private_answers_are_never_shared() {
    two_clients_never_see_each_other("/account", "account of").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn set_cookie_answers_are_never_shared() {
    two_clients_never_see_each_other("/login", "welcome").await;
}
