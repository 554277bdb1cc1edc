//! Issue 9's attacks, each tried as a hostile client would, against a real
//! origin (raw TCP) that records exactly what it receives. Each test prints
//! the figure it measured, so a run shows what the attack achieved.

mod support;

use std::time::{Duration, Instant};

use support::{get, origin, proxy, raw, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn base(o: &support::Origin) -> String {
    format!("http://{}", o.addr)
}

/// 1. A body on a GET must never reach the origin with framing that does not
/// match the bytes sent (the origin would read the next pooled request as this
/// one's body, or hang).
#[tokio::test]
async fn attack_1_get_with_a_body_never_desyncs_the_origin() {
    let o = origin(|s, n| {
        Reply::ok(
            &[("cache-control", "max-age=60")],
            format!("answer {n} to {}", s.target),
        )
    })
    .await;
    let p = proxy(&base(&o), &["origin_timeout_ms = 1500"]).await;
    let attacks: [&[u8]; 2] = [
        b"GET /x HTTP/1.1\r\nhost: api.example\r\ncontent-length: 20\r\n\r\n01234567890123456789",
        b"GET /z HTTP/1.1\r\nhost: api.example\r\ntransfer-encoding: chunked\r\n\r\n14\r\n01234567890123456789\r\n0\r\n\r\n",
    ];
    let mut answers = Vec::new();
    for attack in attacks {
        let started = Instant::now();
        let a = raw(p.addr, attack, Duration::from_secs(5)).await;
        answers.push((a.map(|a| a.status), started.elapsed()));
    }
    // An honest client afterwards must get its own answer, promptly.
    let honest = get(p.addr, "/y", &[]).await;
    let seen = o.seen();
    let mismatched: Vec<String> = seen
        .iter()
        .filter(|s| {
            !s.complete
                || !s.body.is_empty()
                || s.header("content-length").is_some_and(|v| v != "0")
                || s.header("transfer-encoding").is_some()
        })
        .map(|s| {
            format!(
                "{} {} content-length={:?} te={:?} body={}B complete={}",
                s.method,
                s.target,
                s.header("content-length"),
                s.header("transfer-encoding"),
                s.body.len(),
                s.complete
            )
        })
        .collect();
    eprintln!(
        "attack 1: answers {answers:?}; origin requests with framing not matching their bytes: {} {mismatched:?}",
        mismatched.len()
    );
    assert!(mismatched.is_empty(), "{mismatched:?}");
    for (status, took) in &answers {
        assert_eq!(*status, Some(400), "{answers:?}");
        assert!(*took < Duration::from_secs(1), "{answers:?}");
    }
    assert_eq!(honest.status, 200);
    assert!(honest.text().ends_with("to /y"), "{}", honest.text());
}

/// 2. One request with `Authorization` on a cold key must not make the key
/// hit-for-miss for everybody else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_2_one_authorized_request_does_not_switch_off_coalescing() {
    let o =
        origin(|_, n| Reply::ok(&[("cache-control", "max-age=60")], format!("v{n}")).delay(200))
            .await;
    let p = proxy(&base(&o), &[]).await;
    let authorized = get(p.addr, "/k", &[("authorization", "Bearer alice")]).await;
    assert_eq!(authorized.status, 200);
    let before = o.calls();
    let plain: Vec<_> = (0..30)
        .map(|_| tokio::spawn(get(p.addr, "/k", &[])))
        .collect();
    for c in plain {
        assert_eq!(c.await.unwrap().status, 200);
    }
    let calls = o.calls() - before;
    eprintln!("attack 2: 30 concurrent plain requests after one authorized request made {calls} origin calls");
    assert_eq!(calls, 1);
    // The authorized request's answer was not handed to the others either.
    assert_eq!(get(p.addr, "/k", &[]).await.text(), "v2");
}

/// 3. `Pragma: no-cache` / `Cache-Control: no-cache` / `max-age=0` (a browser
/// reload) on a warm key: coalesced into one revalidation whose result is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_3_reloads_are_coalesced_and_their_result_stored() {
    let o = origin(|s, n| {
        if s.header("if-none-match") == Some("\"v1\"") {
            return Reply::ok(
                &[
                    ("etag", "\"v1\""),
                    ("cache-control", "max-age=60"),
                    ("x-validated", &n.to_string()),
                ],
                "",
            )
            .status(304)
            .delay(200);
        }
        Reply::ok(
            &[("etag", "\"v1\""), ("cache-control", "max-age=60")],
            format!("v{n}"),
        )
        .delay(200)
    })
    .await;
    let p = proxy(&base(&o), &[]).await;
    assert_eq!(get(p.addr, "/r", &[]).await.text(), "v1");
    let reloads = [
        ("pragma", "no-cache"),
        ("cache-control", "no-cache"),
        ("cache-control", "max-age=0"),
    ];
    let calls: Vec<_> = (0..100)
        .map(|i| {
            let reload = reloads[i % 3];
            tokio::spawn(async move { get(p.addr, "/r", &[reload]).await })
        })
        .collect();
    let mut answers = Vec::new();
    for c in calls {
        let a = c.await.unwrap();
        answers.push((a.status, a.text()));
    }
    let made = o.calls() - 1;
    let wrong: Vec<_> = answers
        .iter()
        .filter(|a| **a != (200, "v1".to_string()))
        .collect();
    let after = get(p.addr, "/r", &[]).await;
    eprintln!(
        "attack 3: 100 concurrent reloads of a warm key made {made} origin calls; next plain request: {}",
        after.cache_status()
    );
    assert!(made <= 1, "{made} origin calls");
    assert!(wrong.is_empty(), "{wrong:?}");
    // The revalidation's result was stored: the next request is a hit on it.
    assert!(
        after.cache_status().contains("; hit"),
        "{}",
        after.cache_status()
    );
    assert_eq!(after.header("x-validated"), Some("2"));
}

/// 3 (who waits). A reload wave neither holds up the other clients of the key
/// (they keep getting the stored answer while the one revalidation runs) nor
/// multiplies across a fleet: sidecars sharing Redis revalidate once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_3_reloads_hold_up_nobody_else_and_a_fleet_revalidates_once() {
    let redis = herdguard_testkit::RedisServer::start().unwrap();
    let o = origin(|_, n| {
        Reply::ok(
            &[
                ("etag", &format!("\"v{n}\"")),
                ("cache-control", "max-age=60"),
            ],
            format!("v{n}"),
        )
        .delay(300)
    })
    .await;
    let redis_line = format!("redis = \"{}\"", redis.url());
    let fleet = [
        proxy(&base(&o), &[&redis_line]).await,
        proxy(&base(&o), &[&redis_line]).await,
    ];
    assert_eq!(get(fleet[0].addr, "/w", &[]).await.text(), "v1");
    assert_eq!(get(fleet[1].addr, "/w", &[]).await.text(), "v1");
    assert_eq!(o.calls(), 1, "the second sidecar shared the first's load");
    let reloads: Vec<_> = (0..40)
        .map(|i| {
            let addr = fleet[i % 2].addr;
            tokio::spawn(async move { get(addr, "/w", &[("cache-control", "no-cache")]).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Mid-revalidation, a plain client gets the stored answer at once, on both.
    for p in &fleet {
        let started = std::time::Instant::now();
        let plain = get(p.addr, "/w", &[]).await;
        assert_eq!(plain.text(), "v1");
        assert!(
            plain.cache_status().contains("; hit"),
            "{}",
            plain.cache_status()
        );
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "{:?}",
            started.elapsed()
        );
    }
    for r in reloads {
        assert_eq!(
            r.await.unwrap().text(),
            "v2",
            "every reload gets the revalidated answer"
        );
    }
    eprintln!(
        "attack 3 (fleet): 40 reloads on 2 sidecars made {} origin call(s)",
        o.calls() - 1
    );
    assert_eq!(o.calls(), 2, "one revalidation for the fleet");
}

/// 3 (stale-while-revalidate). A reload is answered by a revalidation, even
/// when the stored response is inside its stale-while-revalidate window (where a
/// plain request is answered stale at once).
#[tokio::test]
async fn attack_3_a_reload_is_never_answered_stale() {
    let o = origin(|_, n| {
        Reply::ok(
            &[
                ("cache-control", "max-age=1, stale-while-revalidate=60"),
                ("age", "1"),
            ],
            format!("v{n}"),
        )
    })
    .await;
    let p = proxy(&base(&o), &[]).await;
    assert_eq!(get(p.addr, "/swr", &[]).await.text(), "v1");
    let reload = get(p.addr, "/swr", &[("cache-control", "no-cache")]).await;
    eprintln!(
        "attack 3 (swr): a reload of an entry in its SWR window got {:?} ({})",
        reload.text(),
        reload.cache_status()
    );
    assert_eq!(reload.text(), "v2");
    assert!(
        reload.cache_status().contains("fwd=request"),
        "{}",
        reload.cache_status()
    );
}

/// 3 (ignore). With `request_cache_control = "ignore"`, reloads are answered
/// from the cache, as nginx and Varnish do by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_3_reloads_are_hits_when_request_directives_are_ignored() {
    let o =
        origin(|_, n| Reply::ok(&[("cache-control", "max-age=60")], format!("v{n}")).delay(200))
            .await;
    let p = proxy(&base(&o), &["request_cache_control = \"ignore\""]).await;
    assert_eq!(get(p.addr, "/r", &[]).await.text(), "v1");
    let calls: Vec<_> = (0..100)
        .map(|_| tokio::spawn(async move { get(p.addr, "/r", &[("pragma", "no-cache")]).await }))
        .collect();
    let mut hits = 0;
    for c in calls {
        let a = c.await.unwrap();
        assert_eq!(a.text(), "v1");
        hits += usize::from(a.cache_status().contains("; hit"));
    }
    eprintln!(
        "attack 3 (ignore): 100 concurrent reloads made {} origin calls, {hits} hits",
        o.calls() - 1
    );
    assert_eq!((o.calls(), hits), (1, 100));
}

/// 2 (shareable). A request with `Authorization` is answered from the cache only
/// with an answer the origin marked shareable (RFC 9111 §3.5); otherwise it goes
/// to the origin alone, and what others get does not change.
#[tokio::test]
async fn attack_2_authorized_requests_use_only_answers_marked_shareable() {
    let o = origin(|s, n| {
        let cc = if s.target == "/pub" {
            "public, max-age=60"
        } else {
            "max-age=60"
        };
        Reply::ok(&[("cache-control", cc)], format!("v{n}"))
    })
    .await;
    let p = proxy(&base(&o), &[]).await;
    let pub1 = get(p.addr, "/pub", &[]).await.text();
    let plain1 = get(p.addr, "/plain", &[]).await.text();
    let auth = ("authorization", "Bearer alice");
    let a = get(p.addr, "/pub", &[auth]).await;
    assert_eq!(a.text(), pub1);
    assert!(a.cache_status().contains("; hit"), "{}", a.cache_status());
    assert_eq!(o.calls(), 2);
    let b = get(p.addr, "/plain", &[auth]).await;
    assert_eq!(o.calls(), 3);
    assert!(
        b.cache_status().contains("fwd=request") && b.cache_status().contains("authorization"),
        "{}",
        b.cache_status()
    );
    let c = get(p.addr, "/plain", &[]).await;
    assert_eq!(c.text(), plain1);
    assert!(c.cache_status().contains("; hit"), "{}", c.cache_status());
}

/// 4. `Connection: Accept` must not let a client store an answer under a
/// variant the origin did not produce it for.
#[tokio::test]
async fn attack_4_connection_nominated_fields_cannot_poison_a_variant() {
    let o = origin(|s, _| {
        let json = s.header("accept").is_some_and(|a| a.contains("json"));
        let body = if json { "{\"json\":true}" } else { "<html>" };
        Reply::ok(&[("cache-control", "max-age=60"), ("vary", "Accept")], body)
    })
    .await;
    let p = proxy(&base(&o), &[]).await;
    let attacker = get(
        p.addr,
        "/v",
        &[("accept", "application/json"), ("connection", "Accept")],
    )
    .await;
    let victim = get(p.addr, "/v", &[("accept", "application/json")]).await;
    let browser = get(p.addr, "/v", &[]).await;
    eprintln!(
        "attack 4: attacker got {:?}, later JSON client got {:?}, client without Accept got {:?}",
        attacker.text(),
        victim.text(),
        browser.text()
    );
    assert_eq!(victim.text(), "{\"json\":true}");
    assert_eq!(browser.text(), "<html>");
}

/// 5. Dot-segments (plain or percent-encoded) and backslashes cannot take the
/// forwarded path out of the origin's base path.
#[tokio::test]
async fn attack_5_request_targets_stay_under_the_origin_base_path() {
    let o = origin(|s, _| Reply::ok(&[("cache-control", "no-store")], s.target.clone())).await;
    let p = proxy(&format!("http://{}/pub", o.addr), &[]).await;
    let targets = [
        "/../etc/passwd",
        "/a/../../etc/passwd",
        "/./../etc/passwd",
        "/%2e%2e/etc/passwd",
        "/%2E%2E/%2e%2e/etc/passwd",
        "/..%2fetc/passwd",
        "/a/..%5c..%5cetc/passwd",
        "/a/.%2e/x",
    ];
    let mut answers = Vec::new();
    for t in targets {
        let req = format!("GET {t} HTTP/1.1\r\nhost: api.example\r\nconnection: close\r\n\r\n");
        let a = raw(p.addr, req.as_bytes(), Duration::from_secs(5)).await;
        answers.push((t, a.map(|a| a.status)));
    }
    let seen: Vec<String> = o.seen().iter().map(|s| s.target.clone()).collect();
    let escaped: Vec<&String> = seen
        .iter()
        .filter(|t| {
            let lower = t.to_ascii_lowercase();
            !t.starts_with("/pub/")
                || t.split(['/', '?']).any(|seg| seg == "..")
                || lower.contains("%2e")
                || lower.contains("%5c")
        })
        .collect();
    eprintln!("attack 5: answers {answers:?}; origin saw {seen:?}; outside /pub/ or with dot-segments: {}", escaped.len());
    assert!(escaped.is_empty(), "{escaped:?}");
    for (t, status) in &answers {
        let encoded = t.to_ascii_lowercase().contains('%');
        if encoded {
            assert_eq!(*status, Some(400), "{t}");
        } else {
            assert_eq!(*status, Some(200), "{t}");
        }
    }
    assert!(seen.contains(&"/pub/etc/passwd".to_string()), "{seen:?}");
}

/// 6. The origin trusts the proxy, so forwarding fields must be the proxy's:
/// client-sent ones are dropped, and `X-Forwarded-*` / `Via` are set
/// (`X-Forwarded-Host` only with `forward_host`, which keys by the host).
#[tokio::test]
async fn attack_6_forwarding_fields_are_set_by_the_proxy() {
    let o = origin(|_, n| Reply::ok(&[("cache-control", "no-store")], format!("{n}"))).await;
    let p = proxy(&base(&o), &[]).await;
    let forwarding = proxy(&base(&o), &["forward_host = true"]).await;
    let spoofed = [
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-host", "admin.internal"),
        ("x-forwarded-proto", "https"),
        ("forwarded", "for=6.6.6.6;host=admin.internal;proto=https"),
        ("x-real-ip", "6.6.6.6"),
    ];
    get(forwarding.addr, "/f", &spoofed).await;
    assert_eq!(
        o.seen().pop().unwrap().all("x-forwarded-host"),
        ["api.example"]
    );
    get(p.addr, "/f", &spoofed).await;
    let s = o.seen().pop().unwrap();
    let view = |n: &str| s.all(n).join(" | ");
    eprintln!(
        "attack 6: origin saw forwarded={:?} x-forwarded-for={:?} x-forwarded-host={:?} x-forwarded-proto={:?} via={:?} x-real-ip={:?}",
        view("forwarded"),
        view("x-forwarded-for"),
        view("x-forwarded-host"),
        view("x-forwarded-proto"),
        view("via"),
        view("x-real-ip")
    );
    assert_eq!(view("forwarded"), "");
    assert_eq!(view("x-real-ip"), "");
    assert_eq!(view("x-forwarded-for"), "127.0.0.1");
    assert_eq!(view("x-forwarded-host"), "");
    assert_eq!(view("x-forwarded-proto"), "http");
    assert!(view("via").contains("herdguard"), "{}", view("via"));
}

/// 6 (trusted). Behind a configured trusted proxy, its forwarding fields are kept
/// and extended; its `X-Forwarded-Host` only with `forward_host` (then it is the
/// key's host).
#[tokio::test]
async fn attack_6_trusted_proxies_keep_their_forwarding_fields() {
    let o = origin(|_, n| Reply::ok(&[("cache-control", "no-store")], format!("{n}"))).await;
    let trusted = "trusted_proxies = [\"127.0.0.0/8\"]";
    let p = proxy(&base(&o), &[trusted, "forward_host = true"]).await;
    let fields = [
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-host", "www.example"),
        ("x-forwarded-proto", "https"),
        ("via", "1.1 edge"),
    ];
    get(proxy(&base(&o), &[trusted]).await.addr, "/f", &fields).await;
    assert_eq!(o.seen().pop().unwrap().header("x-forwarded-host"), None);
    get(p.addr, "/f", &fields).await;
    let s = o.seen().pop().unwrap();
    assert_eq!(s.header("x-forwarded-for"), Some("203.0.113.7, 127.0.0.1"));
    assert_eq!(s.header("x-forwarded-host"), Some("www.example"));
    assert_eq!(s.header("x-forwarded-proto"), Some("https"));
    assert_eq!(s.all("via").join(", "), "1.1 edge, 1.1 herdguard");
}

/// 7. An answer that may not be shared (private, Set-Cookie, no-store, or a
/// server error carrying a session) is never handed to the requests that waited
/// on the load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_7_waiters_never_get_an_answer_meant_for_the_leader() {
    let o = origin(|s, n| {
        let token = format!("token-{n}");
        let cookie = format!("session={token}");
        match s.target.as_str() {
            "/private" => Reply::ok(&[("cache-control", "private, max-age=60")], token),
            "/cookie" => Reply::ok(
                &[("cache-control", "max-age=60"), ("set-cookie", &cookie)],
                token,
            ),
            "/nostore" => Reply::ok(&[("cache-control", "no-store")], token),
            _ => Reply::ok(&[("set-cookie", &cookie)], token).status(500),
        }
        .delay(300)
    })
    .await;
    let p = proxy(&base(&o), &[]).await;
    let mut leaked = Vec::new();
    for path in ["/private", "/cookie", "/nostore", "/error"] {
        let calls: Vec<_> = (0..10)
            .map(|_| tokio::spawn(get(p.addr, path, &[])))
            .collect();
        // Each answer's origin-made tokens (its body and its cookie name the same request).
        let mut answers: Vec<Vec<String>> = Vec::new();
        for c in calls {
            let a = c.await.unwrap();
            let mut tokens = Vec::new();
            let text = a.text();
            if text.starts_with("token-") {
                tokens.push(text);
            }
            if let Some(c) = a.header("set-cookie") {
                tokens.push(c.trim_start_matches("session=").to_string());
            }
            answers.push(tokens);
        }
        // Answers carrying a token another answer carries too.
        let shared = (0..answers.len())
            .filter(|&i| {
                answers[i].iter().any(|t| {
                    answers
                        .iter()
                        .enumerate()
                        .any(|(j, other)| j != i && other.contains(t))
                })
            })
            .count();
        leaked.push((path, shared));
    }
    eprintln!("attack 7: answers carrying another request's private body or cookie, per 10 concurrent: {leaked:?}");
    assert!(leaked.iter().all(|(_, n)| *n == 0), "{leaked:?}");
}

/// 9. Two sidecars for different APIs on one Redis never serve each other's
/// answers, and header values never appear in Redis key names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_9_services_sharing_redis_stay_apart_and_keys_hold_no_header_values() {
    let redis = herdguard_testkit::RedisServer::start().unwrap();
    let a = origin(|_, _| {
        Reply::ok(
            &[("cache-control", "max-age=60"), ("vary", "Cookie")],
            "from API A",
        )
    })
    .await;
    let b = origin(|_, _| {
        Reply::ok(
            &[("cache-control", "max-age=60"), ("vary", "Cookie")],
            "from API B",
        )
    })
    .await;
    let redis_line = format!("redis = \"{}\"", redis.url());
    let pa = proxy(&base(&a), &[&redis_line, "redis_op_timeout_ms = 2000"]).await;
    let pb = proxy(&base(&b), &[&redis_line, "redis_op_timeout_ms = 2000"]).await;
    let secret = ("cookie", "session=SECRET-4242");
    assert_eq!(get(pa.addr, "/x", &[]).await.text(), "from API A");
    assert_eq!(get(pa.addr, "/x", &[secret]).await.text(), "from API A");
    let from_b = get(pb.addr, "/x", &[]).await;
    let keys = redis_keys(redis.addr()).await;
    let leaking: Vec<&String> = keys.iter().filter(|k| k.contains("SECRET")).collect();
    eprintln!(
        "attack 9: API B's sidecar answered {:?}; Redis key names holding the cookie value: {} of {} {keys:?}",
        from_b.text(),
        leaking.len(),
        keys.len()
    );
    assert_eq!(from_b.text(), "from API B");
    assert!(leaking.is_empty(), "{leaking:?}");
}

/// `KEYS *` over RESP.
async fn redis_keys(addr: std::net::SocketAddr) -> Vec<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"*2\r\n$4\r\nKEYS\r\n$1\r\n*\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    // The reply is small: read until it parses.
    loop {
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        let mut lines = text.split("\r\n");
        let Some(count) = lines
            .next()
            .and_then(|l| l.strip_prefix('*'))
            .and_then(|c| c.parse::<usize>().ok())
        else {
            continue;
        };
        let items: Vec<String> = lines
            .skip(1)
            .step_by(2)
            .take(count)
            .map(str::to_string)
            .collect();
        if items.len() == count && text.ends_with("\r\n") {
            return items;
        }
    }
}
