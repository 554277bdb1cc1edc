//! Bounded under hostile load: what a client, an origin or a key space could
//! grow, tried the way an attacker or a crawler would — a client that grants
//! no HTTP/2 window, hundreds of concurrent uncacheable requests, dashboards
//! holding the admin listener, purges while Redis is down, answers with many
//! surrogate keys.

mod support;

use base64::Engine as _;
use std::time::{Duration, Instant};

use support::h2raw as raw;
use support::{origin, proxy, Reply, ReplyBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn base(o: &support::Origin) -> String {
    format!("http://{}", o.addr)
}

/// Reads frames off `tcp`, answering every PING (as a live client does),
/// until the server closes it or `limit` passes: whether a GOAWAY came, and
/// when the connection closed (`None`: still open).
async fn pinging_until_closed(tcp: &mut TcpStream, limit: Duration) -> (bool, Option<Duration>) {
    let started = Instant::now();
    let mut goaway = false;
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, raw::read(tcp)).await {
            Err(_) => return (goaway, None),
            Ok(None) => return (goaway, Some(started.elapsed())),
            Ok(Some((kind, flags, _, payload))) => {
                goaway |= kind == raw::GOAWAY;
                if kind == raw::PING && flags & 1 == 0 {
                    // A write error means the server closed: the next read says so.
                    let _ = tcp.write_all(&raw::frame(raw::PING, 1, 0, &payload)).await;
                }
            }
        }
    }
}

/// 50 streams on a connection that grants no flow-control window
/// (`SETTINGS_INITIAL_WINDOW_SIZE = 0`, never a `WINDOW_UPDATE`) and answers
/// every ping: no answer can make progress, so the connection is closed
/// (GOAWAY, then close) once the write limit passes, and the origin
/// connections its pass-through streams held are let go.
#[tokio::test]
async fn an_h2_client_that_grants_no_window_is_closed_after_the_write_limit() {
    let o = origin(|seen, _| {
        if seen.target.starts_with("/pass/") {
            // Uncacheable and larger than any window: streamed through, holding
            // its origin connection.
            Reply {
                status: 200,
                headers: vec![("cache-control".into(), "no-store".into())],
                body: ReplyBody::Generated(8 << 20),
                delay: Duration::ZERO,
            }
        } else {
            Reply::ok(&[("cache-control", "max-age=60")], "cached")
        }
    })
    .await;
    let p = proxy(
        &base(&o),
        &["write_timeout_ms = 500", "idle_timeout_ms = 500"],
    )
    .await;
    let mut tcp = raw::connect_with(p.addr, &[(raw::INITIAL_WINDOW_SIZE, 0)]).await;
    let mut burst = Vec::new();
    for i in 0..50u32 {
        let path = if i % 2 == 0 {
            format!("/pass/{i}")
        } else {
            format!("/cached/{i}")
        };
        burst.extend(raw::get(2 * i + 1, &path));
    }
    tcp.write_all(&burst).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        o.answering() > 0,
        "no pass-through stream holds its origin request"
    );
    let (goaway, closed) = pinging_until_closed(&mut tcp, Duration::from_secs(6)).await;
    eprintln!(
        "window 0, 50 streams, write limit 500 ms: GOAWAY {goaway}, closed after {closed:?}; origin calls {}",
        o.calls()
    );
    assert!(o.calls() > 0, "the streams never reached the origin");
    closed.expect("a connection that made no progress was still open after 6 s");
    assert!(goaway, "closed without a GOAWAY");
    // The pass-through streams' origin requests are let go with it.
    let deadline = Instant::now() + Duration::from_secs(3);
    while o.answering() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(o.answering(), 0, "origin requests still held");
}

/// The same client asking only for a stored answer: hits are answered on the
/// connection's own task, at once where the window allows, and must still
/// wait for window here rather than be handed to `h2`'s buffers (where the
/// progress rule would not see them). With an idle limit far off, only the
/// progress rule can close the connection.
#[tokio::test]
async fn an_h2_client_that_grants_no_window_for_its_hits_is_closed_after_the_write_limit() {
    let o = origin(|_, _| Reply::ok(&[("cache-control", "max-age=60")], "cached")).await;
    let p = proxy(
        &base(&o),
        &["write_timeout_ms = 500", "idle_timeout_ms = 60000"],
    )
    .await;
    assert_eq!(support::get(p.addr, "/hot", &[]).await.status, 200);
    let mut tcp = raw::connect_with(p.addr, &[(raw::INITIAL_WINDOW_SIZE, 0)]).await;
    let burst: Vec<u8> = (0..50u32)
        .flat_map(|i| raw::get(2 * i + 1, "/hot"))
        .collect();
    tcp.write_all(&burst).await.unwrap();
    let (goaway, closed) = pinging_until_closed(&mut tcp, Duration::from_secs(6)).await;
    assert_eq!(o.calls(), 1, "the streams were not hits");
    closed.expect("a connection whose hits made no progress was still open after 6 s");
    assert!(goaway, "closed without a GOAWAY");
}

/// HTTP/1.1's version of the same client: it sends a request and never reads
/// the answer. Closed within the write limit, its origin request let go.
#[tokio::test]
async fn an_http1_client_that_never_reads_is_closed_after_the_write_limit() {
    let o = origin(|_, _| Reply {
        status: 200,
        headers: vec![("cache-control".into(), "no-store".into())],
        body: ReplyBody::Generated(64 << 20),
        delay: Duration::ZERO,
    })
    .await;
    let p = proxy(&base(&o), &["write_timeout_ms = 500"]).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(p.addr).await.unwrap();
    s.write_all(b"GET /pass HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(o.answering(), 1, "the origin request is not under way");
    // Not read for 2 s: then the server must have given up on it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let let_go = o.answering();
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    eprintln!("HTTP/1.1 client that stopped reading: origin requests after 2 s {let_go}; then read {got} bytes before the close");
    assert_eq!(let_go, 0, "origin request still held");
    assert!(drained.is_ok() && got < 64 << 20, "the connection was kept");
}

/// The progress rule spares what is slow but moving: a slow origin (nothing
/// owed to the client yet) and a large answer a client takes as it comes, both
/// far longer than the write limit, on one HTTP/2 connection.
#[tokio::test]
async fn slow_origins_and_long_downloads_are_not_stalls() {
    const BIG: u64 = 24 << 20;
    let o = origin(|seen, _| match seen.target.as_str() {
        "/slow" => Reply::ok(&[("cache-control", "no-store")], "late").delay(1200),
        _ => Reply {
            status: 200,
            headers: vec![("cache-control".into(), "no-store".into())],
            body: ReplyBody::Generated(BIG),
            delay: Duration::ZERO,
        },
    })
    .await;
    let p = proxy(&base(&o), &["write_timeout_ms = 300"]).await;
    let tcp = TcpStream::connect(p.addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let get = |path: &'static str| {
        let mut sender = sender.clone();
        async move {
            use http_body_util::BodyExt;
            let req = http::Request::get(format!("http://api.example{path}"))
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            let resp = sender.send_request(req).await.expect("answer");
            let mut body = resp.into_body();
            let mut got = 0u64;
            while let Some(frame) = body.frame().await {
                let frame = frame.expect("body");
                if let Some(data) = frame.data_ref() {
                    got += data.len() as u64;
                    // A slow reader: the whole answer takes well over the limit.
                    tokio::time::sleep(Duration::from_micros(50)).await;
                }
            }
            got
        }
    };
    let started = Instant::now();
    let (slow, big) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(get("/slow"), get("/big"))
    })
    .await
    .expect("answers within 30 s");
    eprintln!(
        "write limit 300 ms: a 1.2 s origin and a {} MiB download on one h2 connection took {:?}",
        BIG >> 20,
        started.elapsed()
    );
    assert_eq!((slow, big), (4, BIG));
}

/// `n` concurrent GETs, each on its own connection, of `path(i)`: status and
/// `Retry-After` of each answer.
async fn concurrent_gets(
    addr: std::net::SocketAddr,
    n: usize,
    path: impl Fn(usize) -> String,
) -> Vec<(u16, Option<String>)> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let path = path(i);
            tokio::spawn(async move {
                let a = support::get(addr, &path, &[]).await;
                (a.status, a.header("retry-after").map(str::to_string))
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    answers
}

/// A metric's value in the admin text (`None`: not exported).
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// 200 concurrent uncacheable requests, as a crawler or one HTTP/2 client
/// with 256 streams sends them, with no settings: the origin never has more
/// than `max_origin_requests` (its default) at once; the rest wait their turn.
#[tokio::test]
async fn two_hundred_concurrent_uncacheable_requests_reach_the_origin_at_most_the_cap_at_once() {
    let o =
        origin(|_, n| Reply::ok(&[("cache-control", "no-store")], format!("{n}")).delay(200)).await;
    let cap = herdguard_proxy::ServeArgs {
        listen: Some("127.0.0.1:0".into()),
        origin: Some(base(&o)),
        ..herdguard_proxy::ServeArgs::default()
    }
    .resolve()
    .unwrap()
    .max_origin_requests;
    let p = proxy(&base(&o), &[]).await;
    let answers = concurrent_gets(p.addr, 200, |i| format!("/uncacheable/{i}")).await;
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    eprintln!(
        "200 concurrent uncacheable requests, default cap {cap}: origin saw at most {} at once, {ok} answered 200",
        o.most_concurrent()
    );
    assert!(cap < 200, "the default cap {cap} does not bound this load");
    assert!(
        o.most_concurrent() <= cap,
        "the origin had {} requests at once, past the cap of {cap}",
        o.most_concurrent()
    );
    // Within the default queue wait every one gets its turn.
    assert_eq!(ok, 200, "{answers:?}");
    assert_eq!(o.calls(), 200);
}

/// Past the cap and the queue wait: 503 with Retry-After, counted, and the
/// slots in use on `/metrics`.
#[tokio::test]
async fn requests_past_the_origin_cap_and_its_wait_get_503_with_retry_after() {
    let o = origin(|_, n| Reply::ok(&[("cache-control", "no-store")], format!("{n}")).delay(1500))
        .await;
    let p = proxy(
        &base(&o),
        &["max_origin_requests = 4", "origin_queue_timeout_ms = 300"],
    )
    .await;
    let flood = tokio::spawn(concurrent_gets(p.addr, 40, |i| format!("/pass/{i}")));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let during = support::metrics(p.admin).await;
    let answers = flood.await.unwrap();
    let after = support::metrics(p.admin).await;
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    let refused: Vec<_> = answers.iter().filter(|(s, _)| *s == 503).collect();
    eprintln!(
        "cap 4, wait 300 ms, 40 at once: origin at most {} at once; {ok} answered, {} refused; in flight while full {:?}",
        o.most_concurrent(),
        refused.len(),
        metric(&during, "herdguard_proxy_origin_requests_in_flight")
    );
    assert!(o.most_concurrent() <= 4, "{}", o.most_concurrent());
    assert_eq!((ok, refused.len()), (4, 36), "{answers:?}");
    assert!(refused
        .iter()
        .all(|(_, retry)| retry.as_deref() == Some("1")));
    assert_eq!(o.calls(), 4, "refused requests must not reach the origin");
    assert_eq!(
        metric(&during, "herdguard_proxy_origin_requests_in_flight"),
        Some(4.0)
    );
    assert_eq!(
        metric(&after, "herdguard_proxy_origin_requests_in_flight"),
        Some(0.0)
    );
    assert_eq!(
        metric(&after, "herdguard_proxy_origin_requests_refused_total"),
        Some(36.0)
    );
}

/// A cold stampede of one key is one origin request, and takes one slot: with
/// a single slot, 50 callers of one key are all answered by one load.
#[tokio::test]
async fn a_cold_stampede_of_one_key_takes_one_origin_slot() {
    let o = origin(|_, n| Reply::ok(&[("cache-control", "max-age=60")], format!("{n}")).delay(300))
        .await;
    let p = proxy(
        &base(&o),
        &["max_origin_requests = 1", "origin_queue_timeout_ms = 100"],
    )
    .await;
    let answers = concurrent_gets(p.addr, 50, |_| "/hot".to_string()).await;
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    assert_eq!(o.calls(), 1);
    let text = support::metrics(p.admin).await;
    assert_eq!(
        metric(&text, "herdguard_proxy_origin_requests_refused_total"),
        Some(0.0)
    );
}

/// An origin (or whoever controls its answers) tags every answer with 64
/// distinct 100-byte surrogate keys and a shared one, over 1,500 URLs: the tag
/// index stays within its share of `max_memory` (1/16), and a purge of the
/// shared tag still removes every answer this instance holds.
#[tokio::test]
async fn the_tag_index_stays_within_its_share_of_max_memory_and_purges_stay_complete() {
    const URLS: usize = 1500;
    let o = origin(|seen, n| {
        let id = seen.target.trim_start_matches("/t/");
        let tags: Vec<String> = (0..64)
            .map(|i| format!("{id}-{i}-{}", "x".repeat(90)))
            .collect();
        let tags = format!("all {}", tags.join(" "));
        Reply::ok(
            &[("cache-control", "max-age=600"), ("surrogate-key", &tags)],
            format!("{} #{n}", seen.target),
        )
    })
    .await;
    o.stop_recording();
    let token = "purge-token-for-tests-0123";
    let p = proxy(
        &base(&o),
        &[
            "max_memory = \"8MiB\"",
            &format!("purge_token = \"{token}\""),
        ],
    )
    .await;
    let share = (8u64 << 20) / 16;
    let mut most = 0.0f64;
    for batch in 0..URLS / 50 {
        let answers = concurrent_gets(p.addr, 50, |i| format!("/t/{}", batch * 50 + i)).await;
        assert!(answers.iter().all(|(s, _)| *s == 200));
        let text = support::metrics(p.admin).await;
        let bytes = metric(&text, "herdguard_proxy_tag_index_bytes").expect("the tag index gauge");
        most = most.max(bytes);
    }
    let text = support::metrics(p.admin).await;
    eprintln!(
        "{URLS} answers x 65 tags, max_memory 8 MiB: tag index at most {most} bytes (share {share}); cache {:?} bytes in {:?} entries",
        metric(&text, "herdguard_cache_bytes"),
        metric(&text, "herdguard_cache_entries")
    );
    assert!(
        most <= share as f64,
        "tag index {most} bytes, share {share}"
    );
    // Every answer still held is found by the shared tag.
    let auth = format!("Bearer {token}");
    let purged = support::request(
        p.admin,
        "POST",
        "/purge?tag=all",
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(purged.status, 200, "{}", purged.text());
    let before = o.calls();
    let answers = concurrent_gets(p.addr, 50, |i| format!("/t/{}", URLS - 1 - i)).await;
    assert!(answers.iter().all(|(s, _)| *s == 200));
    assert_eq!(
        o.calls() - before,
        50,
        "answers served from the cache after their tag was purged"
    );
}

/// Opens a dashboard's event stream on the admin listener: `Some(stream)`
/// once its first event came, `None` if it was refused (any status but 200),
/// within 5 s.
async fn open_dashboard(admin: std::net::SocketAddr) -> Option<TcpStream> {
    let mut s = TcpStream::connect(admin).await.ok()?;
    s.write_all(b"GET /events HTTP/1.1\r\nhost: admin\r\n\r\n")
        .await
        .ok()?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let first = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let n = s.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen);
            if !text.starts_with("HTTP/1.1 200") && text.contains("\r\n\r\n") {
                return None;
            }
            if text.contains("data: ") {
                return Some(());
            }
        }
    })
    .await;
    matches!(first, Ok(Some(()))).then_some(s)
}

/// 70 dashboards open at once, more than the admin listener's connection
/// slots (64): the event streams have a cap of their own, so `/metrics` and a
/// purge still get an answer at once.
#[tokio::test]
async fn dashboards_cannot_starve_metrics_and_purge() {
    let o = origin(|_, _| Reply::ok(&[("cache-control", "max-age=60")], "ok")).await;
    let token = "purge-token-for-tests-0123";
    let p = proxy(&base(&o), &[&format!("purge_token = \"{token}\"")]).await;
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..70 {
        match open_dashboard(p.admin).await {
            Some(s) => open.push(s),
            None => refused += 1,
        }
    }
    let started = Instant::now();
    let metrics = tokio::time::timeout(Duration::from_secs(3), support::metrics(p.admin)).await;
    let auth = format!("Bearer {token}");
    let purge = tokio::time::timeout(
        Duration::from_secs(3),
        support::request(
            p.admin,
            "POST",
            "/purge?url=/x",
            &[("authorization", &auth)],
        ),
    )
    .await;
    eprintln!(
        "70 dashboards: {} streaming, {refused} refused; /metrics answered: {}, purge: {:?}, in {:?}",
        open.len(),
        metrics.is_ok(),
        purge.as_ref().map(|a| a.status),
        started.elapsed()
    );
    assert!(
        metrics.is_ok_and(|m| m.contains("herdguard_proxy_requests_total")),
        "no /metrics answer"
    );
    assert_eq!(purge.map(|a| a.status).ok(), Some(200), "no purge answer");
    let cap = herdguard_proxy::ServeArgs {
        listen: Some("127.0.0.1:0".into()),
        origin: Some(base(&o)),
        ..herdguard_proxy::ServeArgs::default()
    }
    .resolve()
    .unwrap()
    .admin_max_event_streams;
    assert_eq!(
        (open.len(), refused),
        (cap, 70 - cap),
        "streams open and refused, default cap {cap}"
    );
    let past = support::request(p.admin, "GET", "/events", &[]).await;
    assert_eq!(past.status, 503, "a dashboard past the cap");
    assert!(
        past.header("retry-after").is_some(),
        "503 without Retry-After"
    );
    // Closed dashboards give their place back, once the stream notices (its
    // next event, a second apart).
    open.clear();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut again = Vec::new();
    while again.len() < cap && Instant::now() < deadline {
        match open_dashboard(p.admin).await {
            Some(s) => again.push(s),
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(again.len(), cap, "streams open again after others closed");
    // 70 streams really open (a cap above the 64 connection slots): still answered.
    let wide = proxy(&base(&o), &["admin_max_event_streams = 100"]).await;
    let mut streams = Vec::new();
    for _ in 0..70 {
        streams.push(
            open_dashboard(wide.admin)
                .await
                .expect("a stream within the cap"),
        );
    }
    let metrics = tokio::time::timeout(Duration::from_secs(3), support::metrics(wide.admin)).await;
    assert!(metrics.is_ok(), "no /metrics answer with 70 streams open");
}

/// With `admin_auth = "all"` the dashboard and `/metrics` need the purge
/// token (Bearer, or as the password of Basic, which a browser sends);
/// `/healthz` and `/readyz` stay open for probes.
#[tokio::test]
async fn admin_auth_all_puts_metrics_and_the_dashboard_behind_the_token() {
    let o = origin(|_, _| Reply::ok(&[("cache-control", "max-age=60")], "ok")).await;
    let token = "purge-token-for-tests-0123";
    let p = proxy(
        &base(&o),
        &[
            &format!("purge_token = \"{token}\""),
            "admin_auth = \"all\"",
        ],
    )
    .await;
    let bearer = format!("Bearer {token}");
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("ops:{token}"))
    );
    for path in [
        "/",
        "/metrics",
        "/dashboard.json",
        "/events",
        "/assets/chart.js",
    ] {
        let none = support::request(p.admin, "GET", path, &[]).await;
        assert_eq!(none.status, 401, "{path} without the token");
        assert!(none.header("www-authenticate").is_some(), "{path}");
        let wrong = support::request(
            p.admin,
            "GET",
            path,
            &[("authorization", "Bearer wrong-token-0123456789")],
        )
        .await;
        assert_eq!(wrong.status, 401, "{path} with a wrong token");
    }
    for path in ["/", "/metrics", "/dashboard.json"] {
        for auth in [&bearer, &basic] {
            let ok = support::request(p.admin, "GET", path, &[("authorization", auth)]).await;
            assert_eq!(ok.status, 200, "{path} with {auth}");
        }
    }
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            support::request(p.admin, "GET", path, &[]).await.status,
            200,
            "{path}"
        );
    }
    // By default only purge needs it.
    let open = proxy(&base(&o), &[&format!("purge_token = \"{token}\"")]).await;
    assert_eq!(
        support::request(open.admin, "GET", "/metrics", &[])
            .await
            .status,
        200
    );
    // "all" without a token to check is a configuration error.
    let args = herdguard_proxy::ServeArgs {
        listen: Some("127.0.0.1:0".into()),
        origin: Some(base(&o)),
        admin_auth: Some("all".into()),
        ..herdguard_proxy::ServeArgs::default()
    };
    let e = args.resolve().unwrap_err();
    assert_eq!(e.field, "admin_auth", "{e:?}");
}
