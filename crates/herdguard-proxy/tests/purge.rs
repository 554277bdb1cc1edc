//! `POST /purge` on the admin listener: three sidecars sharing a real Redis and
//! a real origin; a purge on one removes the URL and every `Vary` variant of it
//! from all three — including a variant only another instance has seen.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use herdguard_proxy::ServeArgs;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

mod support;
use support::Proxy;

const TOKEN: &str = "purge-token-for-tests-0123";

/// An origin answering `{lang} v{n}` (n counts that language's requests),
/// `Vary: Accept-Language`, fresh for a minute.
struct Origin {
    addr: SocketAddr,
    calls: Arc<Mutex<HashMap<String, usize>>>,
}

impl Origin {
    fn calls(&self, lang: &str) -> usize {
        self.calls.lock().unwrap().get(lang).copied().unwrap_or(0)
    }
}

async fn origin() -> Origin {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let counted = Arc::clone(&calls);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counted = Arc::clone(&counted);
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let lang = req
                    .headers()
                    .get("accept-language")
                    .map_or("none", |v| v.to_str().unwrap())
                    .to_string();
                let n = {
                    let mut calls = counted.lock().unwrap();
                    let n = calls.entry(lang.clone()).or_default();
                    *n += 1;
                    *n
                };
                async move {
                    let mut r = Response::new(Full::new(Bytes::from(format!("{lang} v{n}"))));
                    let h = r.headers_mut();
                    h.insert("cache-control", "max-age=60".parse().unwrap());
                    h.insert("vary", "accept-language".parse().unwrap());
                    Ok::<_, Infallible>(r)
                }
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    Origin { addr, calls }
}

async fn proxy(origin: SocketAddr, tweak: impl FnOnce(&mut ServeArgs)) -> Proxy {
    let mut args = ServeArgs {
        origin: Some(format!("http://{origin}")),
        purge_token: Some(TOKEN.into()),
        threads: Some(1),
        ..ServeArgs::default()
    };
    tweak(&mut args);
    support::start(args).await
}

async fn send(
    method: &str,
    url: String,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, http::HeaderMap) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::from(body.to_string()))).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status.as_u16(),
        String::from_utf8_lossy(&body).into_owned(),
        parts.headers,
    )
}

/// A GET of `/item` in `lang`, with the service's `Host`.
async fn get(p: &Proxy, lang: &str) -> String {
    let (status, body, _) = send(
        "GET",
        format!("http://{}/item", p.addr),
        &[("host", "api.example"), ("accept-language", lang)],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn purges(p: &Proxy) -> u64 {
    let (_, metrics, _) = send("GET", format!("http://{}/metrics", p.admin), &[], "").await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("herdguard_proxy_purges_total "))
        .map_or(0, |v| v.trim().parse().unwrap())
}

async fn purge(p: &Proxy, auth: Option<&str>, query: &str, body: &str) -> (u16, String) {
    let bearer = auth.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| ("authorization", b))
        .into_iter()
        .collect();
    let (status, body, _) = send(
        "POST",
        format!("http://{}/purge{query}", p.admin),
        &headers,
        body,
    )
    .await;
    (status, body)
}

/// Waits (bounded) until the instances applied at least `want` purges each,
/// then checks that they applied exactly that many.
async fn wait_purges(p: &[Proxy], want: [u64; 3]) {
    let mut seen = [0; 3];
    for _ in 0..200 {
        for (s, q) in seen.iter_mut().zip(p) {
            *s = purges(q).await;
        }
        if seen.iter().zip(&want).all(|(s, w)| s >= w) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(seen, want, "purges applied per instance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_on_one_of_three_sidecars_removes_the_url_and_its_variants_from_all() {
    let redis = herdguard_testkit::RedisServer::start().unwrap();
    let o = origin().await;
    let mut p = Vec::new();
    for _ in 0..3 {
        let url = redis.url();
        p.push(
            proxy(o.addr, move |a| {
                a.redis = Some(url);
                a.redis_op_timeout_ms = Some(2000);
            })
            .await,
        );
    }
    // en through p0 and p1 (one origin call, shared through Redis); de only
    // through p2, so the purging instance p1 has never seen that variant.
    assert_eq!(get(&p[0], "en").await, "en v1");
    assert_eq!(get(&p[1], "en").await, "en v1");
    assert_eq!(get(&p[2], "de").await, "de v1");
    assert_eq!(get(&p[2], "en").await, "en v1");
    assert_eq!((o.calls("en"), o.calls("de")), (1, 1));

    let (status, body) = purge(
        &p[1],
        Some(TOKEN),
        "",
        r#"{"url": "http://api.example/item"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""fleet":"broadcast""#), "{body}");
    // Every instance applies it once: p1 itself, the others from its broadcast
    // (p1 ignores its own broadcast coming back).
    wait_purges(&p, [1, 1, 1]).await;
    // A second purge, from p0: each instance's change feed delivers in order,
    // so once p1 applied p0's broadcast, its own first one has come and gone.
    let (status, body) = purge(
        &p[0],
        Some(TOKEN),
        "?url=http%3A%2F%2Fapi.example%2Fitem",
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    wait_purges(&p, [2, 2, 2]).await;
    // The next request on each: one origin call in total per variant.
    for q in &p {
        assert_eq!(get(q, "en").await, "en v2");
    }
    for q in &p {
        assert_eq!(get(q, "de").await, "de v2");
    }
    assert_eq!((o.calls("en"), o.calls("de")), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_a_purge_still_applies_here_and_says_the_fleet_was_not_reached() {
    let mut redis = herdguard_testkit::RedisServer::start().unwrap();
    let o = origin().await;
    let url = redis.url();
    let p = proxy(o.addr, move |a| {
        a.redis = Some(url);
        a.redis_op_timeout_ms = Some(200);
    })
    .await;
    assert_eq!(get(&p, "en").await, "en v1");
    assert_eq!(get(&p, "en").await, "en v1");
    redis.kill();
    let (status, body) = purge(&p, Some(TOKEN), "?url=http%3A%2F%2Fapi.example%2Fitem", "").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("purged on this instance only"), "{body}");
    assert_eq!(purges(&p).await, 1);
    // Gone from this instance's memory: the next request calls the origin.
    assert_eq!(get(&p, "en").await, "en v2");
}

/// Runs one inline command on the Redis at `addr`; its first reply line.
async fn redis_command(addr: SocketAddr, command: &str) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("{command}\r\n").as_bytes())
        .await
        .unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).await.unwrap();
    line.trim().to_string()
}

/// Redis takes the purge's broadcast but refuses its invalidation (scripts
/// denied by ACL): the URL may still be in Redis, so the answer is 503, not
/// "purged", though the fleet was told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_purge_whose_redis_invalidation_failed_answers_503() {
    let redis = herdguard_testkit::RedisServer::start().unwrap();
    let o = origin().await;
    let url = redis.url();
    let p = proxy(o.addr, move |a| {
        a.redis = Some(url);
        a.redis_op_timeout_ms = Some(2000);
    })
    .await;
    assert_eq!(get(&p, "en").await, "en v1");
    assert_eq!(
        redis_command(redis.addr(), "ACL SETUSER default -eval -evalsha").await,
        "+OK"
    );
    let (status, body) = purge(&p, Some(TOKEN), "?url=http%3A%2F%2Fapi.example%2Fitem", "").await;
    eprintln!("URL purge, Redis refusing the invalidation: {status} {body}");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("this instance only"), "{body}");
    // Gone from this instance's memory regardless (the next GET may find
    // the copy Redis kept, as the answer said, or load anew while this
    // instance counts Redis as degraded: either is true to the 503).
    assert_eq!(entries(&p).await, 0);
}

/// The entries this instance holds in memory.
async fn entries(p: &Proxy) -> u64 {
    let (_, metrics, _) = send("GET", format!("http://{}/metrics", p.admin), &[], "").await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("herdguard_cache_entries "))
        .map_or(u64::MAX, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn purge_needs_the_right_token_and_a_url() {
    let o = origin().await;
    let p = proxy(o.addr, |_| {}).await;
    assert_eq!(get(&p, "en").await, "en v1");
    let url = r#"{"url": "/item"}"#;
    let (status, body) = purge(&p, None, "", url).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = purge(&p, Some("purge-token-for-tests-0124"), "", url).await;
    assert_eq!(status, 401, "{body}");
    let (status, _, headers) = send("GET", format!("http://{}/purge", p.admin), &[], "").await;
    assert_eq!(
        (status, headers.get("allow").unwrap().to_str().unwrap()),
        (405, "POST")
    );
    for (query, body) in [
        ("", ""),
        ("", "{\"uri\": \"/item\"}"),
        ("", "not json"),
        ("", "{\"url\": \"ftp://x/item\"}"),
        ("?url=%2Fitem", url),
    ] {
        let (status, text) = purge(&p, Some(TOKEN), query, body).await;
        assert_eq!(status, 400, "{query} {body}: {text}");
        assert!(text.starts_with("herdguard: "), "{text}");
    }
    let big = format!("{{\"url\": \"/{}\"}}", "x".repeat(9000));
    assert_eq!(purge(&p, Some(TOKEN), "", &big).await.0, 413);
    // Nothing refused purged anything.
    assert_eq!(purges(&p).await, 0);
    assert_eq!(get(&p, "en").await, "en v1");
    // A path names the URL on the origin's host (the key host of requests
    // without a Host, or with the origin's own).
    let origin_host = o.addr.to_string();
    let fr = [("accept-language", "fr"), ("host", origin_host.as_str())];
    send("GET", format!("http://{}/item?x=1", p.addr), &fr, "").await;
    send("GET", format!("http://{}/item?x=1", p.addr), &fr, "").await;
    assert_eq!(o.calls("fr"), 1);
    let (status, body) = purge(&p, Some(TOKEN), "?url=%2Fitem%3Fx%3D1", "").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""fleet":"none""#), "{body}");
    send("GET", format!("http://{}/item?x=1", p.addr), &fr, "").await;
    assert_eq!(o.calls("fr"), 2);
    // The other URL stayed.
    assert_eq!(get(&p, "en").await, "en v1");
}

#[tokio::test]
async fn without_a_token_purge_is_disabled() {
    let o = origin().await;
    let p = proxy(o.addr, |a| a.purge_token = None).await;
    let (status, body) = purge(&p, Some(TOKEN), "", r#"{"url": "/item"}"#).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("purge is disabled"), "{body}");
    let e = ServeArgs {
        listen: Some("127.0.0.1:0".into()),
        origin: Some(format!("http://{}", o.addr)),
        purge_token: Some("short".into()),
        ..ServeArgs::default()
    }
    .resolve()
    .unwrap_err();
    assert_eq!(e.field, "purge_token");
}
