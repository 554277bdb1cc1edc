//! The proxy against a real origin server each test starts on a free loopback
//! port, over real sockets.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herdguard_proxy::ServeArgs;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod support;
use support::Proxy;

/// What the test origin answers: status, headers, body, delay before answering.
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

fn ok(headers: &[(&'static str, &str)], body: &str) -> Answer {
    Answer {
        status: 200,
        headers: headers.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        body: body.to_string(),
        delay: Duration::ZERO,
    }
}

type Handler = dyn Fn(&http::request::Parts, usize) -> Answer + Send + Sync;

/// A counting origin: `hits` counts requests; the handler sees each request and its number.
struct Origin {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

async fn origin(
    handler: impl Fn(&http::request::Parts, usize) -> Answer + Send + Sync + 'static,
) -> Origin {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let handler: Arc<Handler> = Arc::new(handler);
    let counter = Arc::clone(&hits);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (handler, counter) = (Arc::clone(&handler), Arc::clone(&counter));
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let (handler, counter) = (Arc::clone(&handler), Arc::clone(&counter));
                async move {
                    let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                    let (parts, _) = req.into_parts();
                    let a = handler(&parts, n);
                    tokio::time::sleep(a.delay).await;
                    let mut r = Response::new(Full::new(Bytes::from(a.body)));
                    *r.status_mut() = http::StatusCode::from_u16(a.status).unwrap();
                    for (k, v) in a.headers {
                        r.headers_mut().append(k, v.parse().unwrap());
                    }
                    Ok::<_, Infallible>(r)
                }
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    Origin { addr, hits }
}

async fn proxy_to(origin: SocketAddr, tweak: impl FnOnce(&mut ServeArgs)) -> Proxy {
    let mut args = ServeArgs {
        origin: Some(format!("http://{origin}")),
        ..ServeArgs::default()
    };
    tweak(&mut args);
    support::start(args).await
}

struct Got {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Got {
    fn cache_status(&self) -> String {
        self.headers
            .get("cache-status")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }
}

async fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Got {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Got {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

async fn get(addr: SocketAddr, path: &str) -> Got {
    send(addr, "GET", path, &[]).await
}

/// A GET with the service's `Host`, as a fleet behind one load balancer receives it
/// (the host is part of the cache key).
async fn get_service(addr: SocketAddr, path: &str) -> Got {
    send(addr, "GET", path, &[("host", "api.example")]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stampede_of_300_makes_one_origin_request() {
    let o = origin(|_, n| Answer {
        delay: Duration::from_millis(200),
        ..ok(&[("cache-control", "max-age=60")], &format!("body {n}"))
    })
    .await;
    let p = proxy_to(o.addr, |_| {}).await;
    let calls: Vec<_> = (0..300)
        .map(|_| tokio::spawn(get(p.addr, "/cold")))
        .collect();
    let mut statuses = std::collections::HashMap::new();
    for c in calls {
        let g = c.await.unwrap();
        assert_eq!((g.status, g.body.as_str()), (200, "body 1"));
        *statuses
            .entry(
                g.cache_status()
                    .split(';')
                    .nth(1)
                    .unwrap_or("")
                    .trim()
                    .to_string(),
            )
            .or_insert(0) += 1;
    }
    assert_eq!(o.hits.load(Ordering::SeqCst), 1, "{statuses:?}");
    assert!(get(p.addr, "/cold").await.cache_status().contains("; hit"));
}

/// Thread-per-core serving: three threads, each with its own listening socket
/// on one port, share one cache (300 connections → 1 origin request) and all
/// stop listening when the server stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_threads_share_one_cache_and_all_stop() {
    let o = origin(|_, n| Answer {
        delay: Duration::from_millis(200),
        ..ok(&[("cache-control", "max-age=60")], &format!("body {n}"))
    })
    .await;
    let p = proxy_to(o.addr, |a| a.threads = Some(3)).await;
    let addr = p.addr;
    let calls: Vec<_> = (0..300).map(|_| tokio::spawn(get(addr, "/cold"))).collect();
    for c in calls {
        let g = c.await.unwrap();
        assert_eq!((g.status, g.body.as_str()), (200, "body 1"));
    }
    assert_eq!(o.hits.load(Ordering::SeqCst), 1);
    drop(p);
    // Every thread's listener closes: connections are refused soon after.
    let started = std::time::Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a serving thread still accepts after the stop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn fresh_responses_are_hits_and_stale_ones_reload() {
    let o = origin(|parts, n| match parts.uri.path() {
        "/fresh" => ok(&[("cache-control", "max-age=60")], &format!("f{n}")),
        // Already as old as its lifetime when it arrives: stale at once.
        _ => ok(
            &[("cache-control", "max-age=5"), ("age", "5")],
            &format!("s{n}"),
        ),
    })
    .await;
    let p = proxy_to(o.addr, |_| {}).await;
    let first = get(p.addr, "/fresh").await;
    assert!(
        first.cache_status().contains("fwd=miss"),
        "{}",
        first.cache_status()
    );
    let second = get(p.addr, "/fresh").await;
    assert_eq!(second.body, first.body);
    assert!(
        second.cache_status().contains("; hit; ttl="),
        "{}",
        second.cache_status()
    );
    assert!(second.headers.contains_key("age"));
    get(p.addr, "/stale").await;
    get(p.addr, "/stale").await;
    assert_eq!(o.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn vary_keeps_one_variant_per_header_value() {
    let o = origin(|parts, _| {
        let lang = parts
            .headers
            .get("accept-language")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        ok(
            &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
            &format!("hello in {lang}"),
        )
    })
    .await;
    let p = proxy_to(o.addr, |_| {}).await;
    for (lang, n) in [("en", 1), ("fr", 2), ("en", 2), ("fr", 2)] {
        let g = send(p.addr, "GET", "/v", &[("accept-language", lang)]).await;
        assert_eq!(g.body, format!("hello in {lang}"));
        assert_eq!(o.hits.load(Ordering::SeqCst), n, "after {lang}");
    }
}

#[tokio::test]
async fn stale_responses_revalidate_with_304_and_take_its_headers() {
    let o = origin(|parts, n| {
        if parts
            .headers
            .get("if-none-match")
            .is_some_and(|v| v == "\"v1\"")
        {
            Answer {
                status: 304,
                ..ok(
                    &[
                        ("etag", "\"v1\""),
                        ("x-revalidated", &n.to_string()),
                        ("cache-control", "max-age=0"),
                    ],
                    "",
                )
            }
        } else {
            ok(
                &[("etag", "\"v1\""), ("cache-control", "max-age=0")],
                "the body",
            )
        }
    })
    .await;
    let p = proxy_to(o.addr, |_| {}).await;
    assert_eq!(get(p.addr, "/r").await.body, "the body");
    let g = get(p.addr, "/r").await;
    assert_eq!((g.status, g.body.as_str()), (200, "the body"));
    assert_eq!(g.headers.get("x-revalidated").unwrap(), "2");
    assert!(
        g.cache_status().contains("fwd=stale; fwd-status=304"),
        "{}",
        g.cache_status()
    );
    // The client's own validator is answered by the proxy.
    let g = send(p.addr, "GET", "/r", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(g.status, 304);
}

#[tokio::test]
async fn no_store_and_private_are_never_stored() {
    let o = origin(|parts, n| match parts.uri.path() {
        "/ns" => ok(&[("cache-control", "no-store")], &format!("{n}")),
        _ => ok(&[("cache-control", "private, max-age=60")], &format!("{n}")),
    })
    .await;
    let p = proxy_to(o.addr, |_| {}).await;
    for path in ["/ns", "/pv"] {
        let a = get(p.addr, path).await;
        let b = get(p.addr, path).await;
        assert_ne!(a.body, b.body, "{path}");
        let why = if path == "/ns" { "no-store" } else { "private" };
        assert!(b.cache_status().contains(why), "{}", b.cache_status());
    }
    assert_eq!(o.hits.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn stale_while_revalidate_serves_stale_and_refreshes_in_background() {
    let o = origin(|_, n| {
        ok(
            &[
                ("cache-control", "max-age=1, stale-while-revalidate=60"),
                ("age", "1"),
            ],
            &format!("v{n}"),
        )
    })
    .await;
    let p = proxy_to(o.addr, |_| {}).await;
    assert_eq!(get(p.addr, "/swr").await.body, "v1");
    let g = get(p.addr, "/swr").await;
    assert_eq!(g.body, "v1");
    assert!(
        g.cache_status().contains("stale-while-revalidate"),
        "{}",
        g.cache_status()
    );
    // The background refresh lands; bounded wait.
    for _ in 0..100 {
        if o.hits.load(Ordering::SeqCst) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(get(p.addr, "/swr").await.body, "v2");
}

#[tokio::test]
async fn stale_if_error_stands_in_for_a_failing_origin() {
    let o = origin(|_, n| match n {
        1 => ok(
            &[
                ("cache-control", "max-age=1, stale-if-error=60"),
                ("age", "1"),
            ],
            "good",
        ),
        _ => Answer {
            status: 503,
            ..ok(&[], "down")
        },
    })
    .await;
    let p = proxy_to(o.addr, |_| {}).await;
    assert_eq!(get(p.addr, "/sie").await.body, "good");
    let g = get(p.addr, "/sie").await;
    assert_eq!((g.status, g.body.as_str()), (200, "good"));
    assert!(
        g.cache_status().contains("stale-if-error"),
        "{}",
        g.cache_status()
    );
}

#[tokio::test]
async fn targeted_cache_control_wins_and_its_name_is_configurable() {
    let o = origin(|parts, n| match parts.uri.path() {
        "/cdn" => ok(
            &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=60"),
            ],
            &format!("{n}"),
        ),
        _ => ok(
            &[
                ("cache-control", "max-age=60"),
                ("cdn-cache-control", "no-store"),
            ],
            &format!("{n}"),
        ),
    })
    .await;
    let p = proxy_to(o.addr, |_| {}).await;
    get(p.addr, "/cdn").await;
    assert!(get(p.addr, "/cdn").await.cache_status().contains("; hit"));
    get(p.addr, "/cc").await;
    assert!(get(p.addr, "/cc").await.cache_status().contains("no-store"));
    assert_eq!(o.hits.load(Ordering::SeqCst), 3);
    // With another target the CDN field is ignored and Cache-Control rules.
    let p = proxy_to(o.addr, |a| {
        a.cache_target = Some("Herdguard-Cache-Control".into())
    })
    .await;
    get(p.addr, "/cc").await;
    assert!(get(p.addr, "/cc").await.cache_status().contains("; hit"));
}

#[tokio::test]
async fn post_invalidates_the_url() {
    let o = origin(|_, n| ok(&[("cache-control", "max-age=60")], &format!("{n}"))).await;
    let p = proxy_to(o.addr, |_| {}).await;
    assert_eq!(get(p.addr, "/item").await.body, "1");
    assert_eq!(get(p.addr, "/item").await.body, "1");
    let post = send(p.addr, "POST", "/item", &[]).await;
    assert!(post.cache_status().contains("fwd=method"));
    assert_eq!(get(p.addr, "/item").await.body, "3");
}

#[tokio::test]
async fn origin_down_or_hanging_gives_a_clear_502_or_504() {
    let dead = herdguard_testkit::free_port().unwrap();
    let p = proxy_to(format!("127.0.0.1:{dead}").parse().unwrap(), |_| {}).await;
    let g = get(p.addr, "/x").await;
    assert_eq!(g.status, 502);
    assert!(
        g.body.starts_with("herdguard: origin unreachable"),
        "{}",
        g.body
    );
    let o = origin(|_, _| Answer {
        delay: Duration::from_secs(5),
        ..ok(&[], "late")
    })
    .await;
    let p = proxy_to(o.addr, |a| a.origin_timeout_ms = Some(300)).await;
    let g = get(p.addr, "/slow").await;
    assert_eq!(g.status, 504);
    assert!(g.body.contains("did not answer within"), "{}", g.body);
}

#[tokio::test]
async fn malformed_requests_get_400_and_the_proxy_keeps_serving() {
    let o = origin(|_, _| ok(&[("cache-control", "max-age=60")], "fine")).await;
    let p = proxy_to(o.addr, |_| {}).await;
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"\x00\x01\x02\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        s.write_all(garbage).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 400"), "{text:?}");
    }
    let big = "a".repeat(100_000);
    let g = send(p.addr, "GET", "/", &[("x-big", &big)]).await;
    assert_eq!(g.status, 431);
    assert_eq!(get(p.addr, "/").await.body, "fine");
}

#[tokio::test]
async fn admin_serves_metrics_health_and_readiness() {
    let o = origin(|_, _| ok(&[("cache-control", "max-age=60")], "m")).await;
    let p = proxy_to(o.addr, |_| {}).await;
    get(p.addr, "/m").await;
    get(p.addr, "/m").await;
    let m = get(p.admin, "/metrics").await;
    assert!(
        m.body
            .contains("herdguard_proxy_requests_total{result=\"hit\"} 1"),
        "{}",
        m.body
    );
    assert!(
        m.body.contains("herdguard_proxy_origin_requests_total 1"),
        "{}",
        m.body
    );
    assert!(
        m.body.contains("herdguard_cache_loads_total 1"),
        "{}",
        m.body
    );
    assert_eq!(get(p.admin, "/healthz").await.status, 200);
    let r = get(p.admin, "/readyz").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "ready\nshared_store: none\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_proxies_sharing_redis_make_one_origin_request_for_300() {
    let redis = herdguard_testkit::RedisServer::start().unwrap();
    let o = origin(|_, n| Answer {
        delay: Duration::from_millis(200),
        ..ok(
            &[("cache-control", "max-age=60")],
            &format!("fleet body {n}"),
        )
    })
    .await;
    let mut proxies = Vec::new();
    for _ in 0..3 {
        let url = redis.url();
        // A generous Redis timeout: the test machine is busy running the other tests.
        proxies.push(
            proxy_to(o.addr, move |a| {
                a.redis = Some(url);
                a.redis_op_timeout_ms = Some(2000);
            })
            .await,
        );
    }
    let calls: Vec<_> = (0..300)
        .map(|i| tokio::spawn(get_service(proxies[i % 3].addr, "/fleet")))
        .collect();
    let mut bodies = Vec::new();
    for c in calls {
        let g = c.await.unwrap();
        bodies.push((g.status, g.body));
    }
    let mut metrics = String::new();
    for p in &proxies {
        let m = get(p.admin, "/metrics").await.body;
        metrics += &m
            .lines()
            .filter(|l| l.contains("remote_errors_total") || l.contains("cache_loads_total"))
            .collect::<Vec<_>>()
            .join(" ");
    }
    assert!(
        bodies
            .iter()
            .all(|b| *b == (200, "fleet body 1".to_string())),
        "{metrics}"
    );
    assert_eq!(o.hits.load(Ordering::SeqCst), 1);
    let r = get(proxies[0].admin, "/readyz").await;
    assert_eq!(r.body, "ready\nshared_store: ok\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_still_serves_and_coalesces_per_instance() {
    let mut redis = herdguard_testkit::RedisServer::start().unwrap();
    let o = origin(|_, n| Answer {
        delay: Duration::from_millis(100),
        ..ok(&[("cache-control", "max-age=60")], &format!("b{n}"))
    })
    .await;
    let url = redis.url();
    let p = proxy_to(o.addr, move |a| a.redis = Some(url)).await;
    assert_eq!(get(p.addr, "/before").await.status, 200);
    redis.kill();
    let calls: Vec<_> = (0..50)
        .map(|_| tokio::spawn(get(p.addr, "/after")))
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap().status, 200);
    }
    // One origin request for /before, one for the 50 concurrent /after.
    assert_eq!(o.hits.load(Ordering::SeqCst), 2);
    let m = get(p.admin, "/metrics").await;
    assert!(
        m.body.contains("herdguard_shared_store_healthy 0"),
        "{}",
        m.body
    );
}

#[tokio::test]
async fn request_max_age_min_fresh_max_stale_and_only_if_cached_are_honoured() {
    let o = origin(|parts, n| match parts.uri.path() {
        // 30 s old on arrival, 30 s of freshness left.
        "/aged" => ok(
            &[("cache-control", "max-age=60"), ("age", "30")],
            &format!("a{n}"),
        ),
        // Stale by 5 s on arrival, with a validator so it is kept.
        _ => ok(
            &[
                ("cache-control", "max-age=5"),
                ("age", "10"),
                ("etag", "\"old\""),
            ],
            &format!("o{n}"),
        ),
    })
    .await;
    let p = proxy_to(o.addr, |_| {}).await;
    let cc = |v: &'static str| [("cache-control", v)];

    get(p.addr, "/aged").await;
    assert!(get(p.addr, "/aged").await.cache_status().contains("; hit"));
    assert_eq!(o.hits.load(Ordering::SeqCst), 1);
    let younger = send(p.addr, "GET", "/aged", &cc("max-age=10")).await;
    assert!(
        younger.cache_status().contains("fwd=request"),
        "{}",
        younger.cache_status()
    );
    assert_eq!(o.hits.load(Ordering::SeqCst), 2);
    let fresher = send(p.addr, "GET", "/aged", &cc("min-fresh=40")).await;
    assert!(fresher.cache_status().contains("fwd=request"));
    assert_eq!(o.hits.load(Ordering::SeqCst), 3);
    let lenient = send(p.addr, "GET", "/aged", &cc("max-age=100, min-fresh=5")).await;
    assert!(
        lenient.cache_status().contains("; hit"),
        "{}",
        lenient.cache_status()
    );
    assert_eq!(o.hits.load(Ordering::SeqCst), 3);

    get(p.addr, "/old").await;
    assert_eq!(o.hits.load(Ordering::SeqCst), 4);
    let stale = send(p.addr, "GET", "/old", &cc("max-stale=60")).await;
    assert_eq!(stale.body, "o4");
    assert!(
        stale.cache_status().contains("detail=max-stale"),
        "{}",
        stale.cache_status()
    );
    assert_eq!(o.hits.load(Ordering::SeqCst), 4);
    send(p.addr, "GET", "/old", &cc("max-stale=1")).await;
    assert_eq!(o.hits.load(Ordering::SeqCst), 5);

    let missing = send(p.addr, "GET", "/never", &cc("only-if-cached")).await;
    assert_eq!(missing.status, 504);
    assert_eq!(o.hits.load(Ordering::SeqCst), 5);
}

/// The same fleet on a Redis Cluster (three primaries, three replicas) and with
/// quorum leases on three independent lock servers: `--redis-cluster` and
/// `--redis-lock-servers`, one origin call for 300 concurrent cold requests on
/// each of several keys, the keys spread over the shards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_proxies_on_a_redis_cluster_with_quorum_leases_make_one_origin_request_per_key() {
    let cluster = herdguard_testkit::RedisCluster::start().unwrap();
    let locks: Vec<_> = (0..3)
        .map(|_| herdguard_testkit::RedisServer::start().unwrap())
        .collect();
    let o = origin(|_, n| Answer {
        delay: Duration::from_millis(200),
        ..ok(&[("cache-control", "max-age=60")], &format!("body {n}"))
    })
    .await;
    let seeds = cluster.urls().join(",");
    let lock_urls = locks.iter().map(|l| l.url()).collect::<Vec<_>>().join(",");
    let mut proxies = Vec::new();
    for _ in 0..3 {
        let (seeds, lock_urls) = (seeds.clone(), lock_urls.clone());
        proxies.push(
            proxy_to(o.addr, move |a| {
                a.redis_cluster = Some(seeds);
                a.redis_lock_servers = Some(lock_urls);
                a.redis_op_timeout_ms = Some(2000);
            })
            .await,
        );
    }
    const KEYS: usize = 6;
    let calls: Vec<_> = (0..300)
        .map(|i| {
            // Every key through every proxy: key i % KEYS, proxy (i / KEYS) % 3.
            let addr = proxies[(i / KEYS) % 3].addr;
            tokio::spawn(async move { get_service(addr, &format!("/shard/{}", i % KEYS)).await })
        })
        .collect();
    for c in calls {
        let g = c.await.unwrap();
        assert_eq!(g.status, 200, "{}", g.body);
    }
    assert_eq!(
        o.hits.load(Ordering::SeqCst),
        KEYS,
        "one origin call per key across three proxies"
    );
    // /metrics counts the quorum leases: one grant per cold key fleet-wide
    // (a split vote retried may add none), every lock server answering.
    let mut grants = 0;
    for p in &proxies {
        let m = get(p.admin, "/metrics").await.body;
        let value = |line: &str| -> u64 {
            m.lines()
                .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
                .unwrap_or_else(|| panic!("{line} in {m}"))
        };
        grants += value("herdguard_quorum_grants_total ");
        for l in &locks {
            let series = format!(
                "herdguard_quorum_lock_server_failures_total{{server=\"{}\"}} ",
                l.url()
            );
            assert_eq!(value(&series), 0, "{m}");
        }
    }
    assert_eq!(grants, KEYS as u64, "one lease per key");
}
