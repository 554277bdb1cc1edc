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
