//! The bounds, at their defaults: a body past the body bound streams through
//! uncached (never buffered whole), the store keeps to its entry and memory
//! bounds, and unsafe methods pass through and invalidate the URL.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use common::{serve, Client};
use herdguard_tower::{HerdLayer, DEFAULT_MAX_BODY_BYTES};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as Legacy;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Notify;

const CHUNK: usize = 64 << 10;

struct Big {
    calls: AtomicUsize,
    /// The last chunk waits for this: the client must have had the rest first.
    go_on: Notify,
}

/// One chunk past the default body bound, then — once the client says it has
/// read that far — one more.
async fn big(State(big): State<Arc<Big>>) -> impl IntoResponse {
    big.calls.fetch_add(1, Ordering::SeqCst);
    let chunks = DEFAULT_MAX_BODY_BYTES / CHUNK + 1;
    let stream = futures_util::stream::unfold((0, big), move |(i, big)| async move {
        if i == chunks {
            big.go_on.notified().await;
        }
        (i <= chunks).then(|| {
            (
                Ok::<_, Infallible>(Bytes::from(vec![b'x'; CHUNK])),
                (i + 1, big),
            )
        })
    });
    (
        [(header::CACHE_CONTROL, "max-age=60")],
        Body::from_stream(stream),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_body_past_the_bound_streams_through_uncached() {
    let state = Arc::new(Big {
        calls: AtomicUsize::new(0),
        go_on: Notify::new(),
    });
    let app = Router::new()
        .route("/big", get(big))
        .layer(HerdLayer::new())
        .with_state(Arc::clone(&state));
    let server = serve(app).await;
    let client = Legacy::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let expected = (DEFAULT_MAX_BODY_BYTES / CHUNK + 2) * CHUNK;
    for round in 1..=2 {
        let uri = server.url("/big").parse().unwrap();
        let response = tokio::time::timeout(Duration::from_secs(30), client.get(uri))
            .await
            .expect("the head arrives before the last chunk is made")
            .unwrap();
        let status = response.headers()["cache-status"]
            .to_str()
            .unwrap()
            .to_string();
        // The first time a miss; then the URL is known not to be shared (hit-for-miss).
        let want = match round {
            1 => "herdguard; fwd=miss; fwd-status=200; detail=too-large",
            _ => "herdguard; fwd=bypass; fwd-status=200; detail=hit-for-miss-too-large",
        };
        assert_eq!(status, want);
        let mut body = response.into_body();
        let mut read = 0;
        let mut released = false;
        while let Some(frame) = tokio::time::timeout(Duration::from_secs(30), body.frame())
            .await
            .expect("every byte before the last chunk arrives without it")
        {
            read += frame.unwrap().into_data().map_or(0, |d| d.len());
            if read > DEFAULT_MAX_BODY_BYTES && !released {
                state.go_on.notify_one();
                released = true;
            }
        }
        assert_eq!(read, expected);
        assert_eq!(state.calls.load(Ordering::SeqCst), round, "not stored");
    }
}

async fn numbered(Path(n): Path<u32>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "max-age=60")],
        vec![b'n'; 32 << 10 | n as usize],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_store_keeps_to_its_entry_and_memory_bounds() {
    for (layer, bound) in [
        (
            HerdLayer::builder().max_entries(10).build().unwrap(),
            "entries",
        ),
        (
            HerdLayer::builder().max_memory(1 << 20).build().unwrap(),
            "memory",
        ),
    ] {
        let app = Router::new()
            .route("/n/{n}", get(numbered))
            .layer(layer.clone());
        let server = serve(app).await;
        let client = Client::new();
        for n in 0..100 {
            let reply = client.get(&server.url(&format!("/n/{n}")), &[]).await;
            assert_eq!(reply.status, 200);
            assert!(
                reply.cache_status().contains("stored"),
                "{n}: {}",
                reply.cache_status()
            );
        }
        // The store's own upkeep runs on inserts: settle before counting.
        let m = layer.metrics();
        match bound {
            "entries" => assert!(m.entries <= 10, "{} entries", m.entries),
            _ => assert!(m.bytes.unwrap() <= 1 << 20, "{:?} bytes", m.bytes),
        }
        assert!(m.entries > 0);
    }
}

async fn item(State(calls): State<Arc<AtomicUsize>>, method: Method) -> impl IntoResponse {
    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
    if method == Method::POST {
        return (
            StatusCode::OK,
            [(header::LOCATION, "/other")],
            "saved".to_string(),
        )
            .into_response();
    }
    (
        [(header::CACHE_CONTROL, "max-age=60")],
        format!("version {n}"),
    )
        .into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unsafe_method_passes_through_and_invalidates_the_url_and_its_location() {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route("/item", get(item).post(item))
        .route("/other", get(item))
        .layer(HerdLayer::new())
        .with_state(Arc::clone(&calls));
    let server = serve(app).await;
    let client = Client::new();
    let (item_url, other_url) = (server.url("/item"), server.url("/other"));
    assert_eq!(client.get(&item_url, &[]).await.body, "version 1");
    assert_eq!(client.get(&other_url, &[]).await.body, "version 2");
    assert_eq!(client.get(&item_url, &[]).await.body, "version 1");
    let post = client.send(Method::POST, &item_url, &[]).await;
    assert_eq!(post.body, "saved");
    assert_eq!(post.cache_status(), "herdguard; fwd=method; fwd-status=200");
    assert_eq!(client.get(&item_url, &[]).await.body, "version 4");
    assert_eq!(client.get(&other_url, &[]).await.body, "version 5");
}
