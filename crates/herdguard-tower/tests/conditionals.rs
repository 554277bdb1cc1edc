//! The client's own conditionals and `Range` are answered from the whole
//! stored response; the shared load is never conditional nor ranged.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, Method};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use common::{serve, Client};
use herdguard_tower::HerdLayer;

/// Counts calls, and what conditional or ranged fields reached the handler.
#[derive(Default)]
struct Seen {
    calls: AtomicUsize,
    conditional_or_ranged: AtomicUsize,
}

async fn page(State(seen): State<Arc<Seen>>, headers: HeaderMap) -> impl IntoResponse {
    seen.calls.fetch_add(1, Ordering::SeqCst);
    if headers.contains_key(header::IF_NONE_MATCH) || headers.contains_key(header::RANGE) {
        seen.conditional_or_ranged.fetch_add(1, Ordering::SeqCst);
    }
    (
        [
            (header::CACHE_CONTROL, "max-age=60"),
            (header::ETAG, "\"v1\""),
        ],
        "abcdefghij",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditionals_and_ranges_are_answered_from_the_stored_response() {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route("/page", get(page))
        .layer(HerdLayer::new())
        .with_state(Arc::clone(&seen));
    let server = serve(app).await;
    let (client, url) = (Client::new(), server.url("/page"));
    // A cold URL asked with a validator and a range: the load is plain, the
    // client gets its 304, then its range.
    let not_modified = client.get(&url, &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(not_modified.status, 304);
    assert_eq!(not_modified.body, "");
    let part = client.get(&url, &[("range", "bytes=2-4")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, "cde");
    assert_eq!(part.headers["content-range"], "bytes 2-4/10");
    let beyond = client.get(&url, &[("range", "bytes=20-")]).await;
    assert_eq!(beyond.status, 416);
    assert_eq!(beyond.headers["content-range"], "bytes */10");
    // An If-Range that does not hold: the whole response.
    let whole = client
        .get(&url, &[("range", "bytes=2-4"), ("if-range", "\"v0\"")])
        .await;
    assert_eq!(
        (whole.status.as_u16(), whole.body.as_str()),
        (200, "abcdefghij")
    );
    let changed = client.get(&url, &[("if-none-match", "\"v0\"")]).await;
    assert_eq!(
        (changed.status.as_u16(), changed.body.as_str()),
        (200, "abcdefghij")
    );
    let head = client.send(Method::HEAD, &url, &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["content-length"], "10");
    assert_eq!(seen.calls.load(Ordering::SeqCst), 1);
    assert_eq!(seen.conditional_or_ranged.load(Ordering::SeqCst), 0);
}

/// What reached the handler of `/w`: per call, whether it carried
/// `Authorization`, and its `If-None-Match` lines joined.
#[derive(Default)]
struct Calls(std::sync::Mutex<Vec<(bool, String)>>);

async fn tagged(State(calls): State<Arc<Calls>>, headers: HeaderMap) -> impl IntoResponse {
    let inm: Vec<&str> = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let inm = inm.join(", ");
    let n = {
        let mut seen = calls.0.lock().unwrap();
        seen.push((headers.contains_key(header::AUTHORIZATION), inm.clone()));
        seen.len()
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    if inm.contains("\"c\"") {
        return (
            axum::http::StatusCode::NOT_MODIFIED,
            [
                (header::CACHE_CONTROL, "max-age=60"),
                (header::ETAG, "\"c\""),
            ],
            String::new(),
        );
    }
    (
        axum::http::StatusCode::OK,
        [
            (header::CACHE_CONTROL, "max-age=60"),
            (header::ETAG, "\"n\""),
        ],
        format!("body {n}"),
    )
}

/// RFC 9111 §4.3.2, the adversary's order: a client with its own entity tag
/// leads the load of a cold key (no stored tag to stand in for its own), others (with credentials or none) wait on
/// it. A client's tag never reaches a load others share, so no waiter gets a
/// `304` it did not ask for; a request with credentials calls the service on
/// its own with its tags as sent, and only it gets their `304`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_waiter_ever_gets_a_304_it_did_not_ask_for() {
    let calls = Arc::new(Calls::default());
    let app = Router::new()
        .route("/w", get(tagged))
        .layer(HerdLayer::new())
        .with_state(Arc::clone(&calls));
    let server = serve(app).await;
    let (client, url) = (Client::new(), server.url("/w"));
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let headers: &[(&str, &str)] = match i % 4 {
                // Answered by the layer from the whole response the shared load stores.
                0 => &[("if-none-match", "\"c\"")],
                // Its own call, its own tag.
                1 => &[("authorization", "Bearer y"), ("if-none-match", "\"c\"")],
                2 => &[("authorization", "Bearer x")],
                _ => &[],
            };
            (i % 4, client.get(&url, headers).await)
        }));
        if i == 0 {
            // The client with a tag leads the shared load.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    for t in tasks {
        let (kind, r) = t.await.unwrap();
        match kind {
            1 => assert_eq!(r.status, 304, "{r:?}"),
            0 => assert_eq!(r.status, 200, "a shared load's 304: {r:?}"),
            _ => {
                assert_eq!(r.status, 200, "an unasked-for 304: {r:?}");
                assert!(r.body.starts_with("body "), "{r:?}");
            }
        }
    }
    for (authorized, inm) in calls.0.lock().unwrap().iter() {
        assert!(
            *authorized || !inm.contains("\"c\""),
            "a client's tag on a load others share: {inm}"
        );
    }
    let r = client.get(&url, &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with("body "), "{r:?}");
}
