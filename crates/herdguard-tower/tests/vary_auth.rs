//! `Vary` and `Authorization` as `herdguard serve` handles them: one stored
//! answer per variant, and an authorized request never leads a shared load nor
//! gets a stored answer the handler did not mark shareable.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use common::{serve, Client, Server};
use herdguard_tower::HerdLayer;

fn field(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string()
}

async fn greet(State(calls): State<Arc<AtomicUsize>>, headers: HeaderMap) -> impl IntoResponse {
    calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = match field(&headers, "accept-language").as_str() {
        "de" => "hallo",
        _ => "hello",
    };
    (
        [
            (header::CACHE_CONTROL, "max-age=60"),
            (header::VARY, "Accept-Language"),
        ],
        text,
    )
}

/// What the caller is allowed to see, by its credentials; `max-age` only.
async fn account(State(calls): State<Arc<AtomicUsize>>, headers: HeaderMap) -> impl IntoResponse {
    calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    (
        [(header::CACHE_CONTROL, "max-age=60")],
        format!("data for {}", field(&headers, "authorization")),
    )
}

/// Compressed only for a request that asks for exactly `gzip`.
async fn coded(State(calls): State<Arc<AtomicUsize>>, headers: HeaderMap) -> impl IntoResponse {
    calls.fetch_add(1, Ordering::SeqCst);
    let gzip = field(&headers, "accept-encoding") == "gzip";
    let mut fields = HeaderMap::new();
    fields.insert(header::CACHE_CONTROL, "max-age=60".parse().unwrap());
    fields.insert(header::VARY, "Accept-Encoding".parse().unwrap());
    if gzip {
        fields.insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
    }
    (fields, if gzip { "GZ" } else { "ID" })
}

/// The same for everyone, and the handler says so (`public`).
async fn catalogue(State(calls): State<Arc<AtomicUsize>>) -> impl IntoResponse {
    calls.fetch_add(1, Ordering::SeqCst);
    ([(header::CACHE_CONTROL, "public, max-age=60")], "catalogue")
}

async fn app() -> (Server, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route("/greet", get(greet))
        .route("/account", get(account))
        .route("/catalogue", get(catalogue))
        .route("/coded", get(coded))
        .layer(HerdLayer::new())
        .with_state(Arc::clone(&calls));
    (serve(app).await, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_variant_is_loaded_once_and_served_only_to_its_own() {
    let (server, calls) = app().await;
    let url = server.url("/greet");
    let client = Client::new();
    // Both languages at once on a cold URL: the first load teaches the URL varies.
    let requests = (0..40).map(|i| {
        let (client, url) = (client.clone(), url.clone());
        let lang = if i % 2 == 0 { "en" } else { "de" };
        tokio::spawn(async move { (lang, client.get(&url, &[("accept-language", lang)]).await) })
    });
    for reply in futures_util::future::join_all(requests).await {
        let (lang, reply) = reply.unwrap();
        let want = if lang == "de" { "hallo" } else { "hello" };
        assert_eq!(reply.body, want, "{lang}: {}", reply.cache_status());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one load per variant");
    for (lang, want) in [("de", "hallo"), ("en", "hello")] {
        let reply = client.get(&url, &[("accept-language", lang)]).await;
        assert_eq!(reply.body, want);
        assert!(
            reply.cache_status().starts_with("herdguard; hit"),
            "{}",
            reply.cache_status()
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_authorized_request_never_leads_a_shared_load() {
    let (server, calls) = app().await;
    let url = server.url("/account");
    let client = Client::new();
    // An authorized and an anonymous request at once, on a cold URL, many times.
    let requests = (0..20).map(|i| {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            if i % 2 == 0 {
                let reply = client.get(&url, &[("authorization", "Bearer alice")]).await;
                ("Bearer alice", reply)
            } else {
                ("-", client.get(&url, &[]).await)
            }
        })
    });
    for reply in futures_util::future::join_all(requests).await {
        let (who, reply) = reply.unwrap();
        assert_eq!(
            reply.body,
            format!("data for {who}"),
            "{}",
            reply.cache_status()
        );
    }
    // The anonymous answer is stored; an authorized request is answered alone,
    // since the stored answer is not marked shareable with credentials.
    let anonymous = client.get(&url, &[]).await;
    assert_eq!(anonymous.body, "data for -");
    assert!(anonymous.cache_status().starts_with("herdguard; hit"));
    let before = calls.load(Ordering::SeqCst);
    let authorized = client.get(&url, &[("authorization", "Bearer bob")]).await;
    assert_eq!(authorized.body, "data for Bearer bob");
    assert_eq!(
        authorized.cache_status(),
        "herdguard; fwd=request; fwd-status=200; detail=authorization"
    );
    assert_eq!(calls.load(Ordering::SeqCst), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_authorized_request_gets_a_stored_answer_marked_public() {
    let (server, calls) = app().await;
    let url = server.url("/catalogue");
    let client = Client::new();
    assert_eq!(client.get(&url, &[]).await.body, "catalogue");
    let reply = client.get(&url, &[("authorization", "Bearer bob")]).await;
    assert_eq!(reply.body, "catalogue");
    assert!(
        reply.cache_status().starts_with("herdguard; hit"),
        "{}",
        reply.cache_status()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// RFC 9111 §4.1: a request whose own variant is not stored gets a stored one
/// whose coding it accepts (q > 0); one it refuses is never served to it.
#[tokio::test]
async fn a_stored_variant_is_chosen_by_q_value_never_one_refused() {
    let (server, calls) = app().await;
    let url = server.url("/coded");
    let client = Client::new();
    let ask = |ae: &'static str| {
        let (client, url) = (client.clone(), url.clone());
        async move { client.get(&url, &[("accept-encoding", ae)]).await }
    };
    assert_eq!(ask("gzip").await.body, "GZ");
    let reply = ask("br, gzip;q=0.5").await;
    assert_eq!(reply.body, "GZ", "{}", reply.cache_status());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    for refusing in ["gzip;q=0, identity", "*;q=0", "br", "identity"] {
        let reply = ask(refusing).await;
        assert_eq!(reply.body, "ID", "{refusing}: {}", reply.cache_status());
    }
    let reply = client.get(&url, &[]).await;
    assert_eq!(reply.body, "ID");
}

/// `Vary: Accept-Encoding` without `Accept-Language`; with it, both, and the
/// language the request asked for.
async fn lang(headers: HeaderMap) -> impl IntoResponse {
    let ae = field(&headers, "accept-encoding");
    let mut fields = HeaderMap::new();
    fields.insert(header::CACHE_CONTROL, "max-age=60".parse().unwrap());
    let body = match headers.get("accept-language") {
        None => {
            fields.insert(header::VARY, "Accept-Encoding".parse().unwrap());
            format!("{ae}-any")
        }
        Some(lang) => {
            let vary = "Accept-Encoding, Accept-Language";
            fields.insert(header::VARY, vary.parse().unwrap());
            fields.insert(header::CONTENT_LANGUAGE, lang.clone());
            format!("{ae}-{}", field(&headers, "accept-language"))
        }
    };
    (fields, body)
}

/// One app process of a fleet: its own layer on the shared Redis.
async fn fleet_app(redis: &str) -> Server {
    let remote = herdguard_redis::RedisRemote::connect(
        herdguard_redis::RedisConfig::new(redis).prefix("herdguard:vary-test:"),
    )
    .await
    .unwrap();
    let layer = HerdLayer::builder().shared_store(remote).build().unwrap();
    serve(Router::new().route("/lang", get(lang)).layer(layer)).await
}

/// `Vary` changed by the handler, seen in the second round: app 1 learns from
/// the shared store that `/lang` varies on `Accept-Encoding`, and under the
/// variant key it then looks up finds what app 0 stored once the handler
/// varied on `Accept-Language` too — French. A German client must not get it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_vary_that_changes_between_rounds_is_answered_uncached() {
    let redis = herdguard_testkit::RedisServer::start().unwrap();
    let apps = [fleet_app(&redis.url()).await, fleet_app(&redis.url()).await];
    let client = Client::new();
    let url = |i: usize| apps[i].url("/lang");
    let gzip = [("accept-encoding", "gzip")];
    assert_eq!(client.get(&url(0), &gzip).await.body, "gzip-any");
    let br_fr = [("accept-encoding", "br"), ("accept-language", "fr")];
    assert_eq!(client.get(&url(0), &br_fr).await.body, "br-fr");
    let br_de = [("accept-encoding", "br"), ("accept-language", "de")];
    let reply = client.get(&url(1), &br_de).await;
    assert_eq!(reply.body, "br-de", "{}", reply.cache_status());
}
