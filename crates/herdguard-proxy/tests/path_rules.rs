//! Per-path rules (`[[rule]]`), reload while serving, and keeping the client's
//! `Host`, against a real origin (the recording origin of `support`).

mod support;

use std::time::Duration;

use support::{get, origin, proxy, raw, request, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An origin whose answers state no freshness at all (no `Cache-Control`,
/// `Expires` or `Last-Modified`): without a rule, nothing of it is stored.
async fn silent_origin() -> support::Origin {
    origin(|_, n| Reply::ok(&[], format!("body {n}"))).await
}

#[tokio::test]
async fn a_rule_ttl_stores_what_states_no_lifetime_and_only_under_its_path() {
    let o = silent_origin().await;
    let p = proxy(
        &format!("http://{}", o.addr),
        &["[[rule]]", "prefix = \"/static/\"", "ttl_secs = 60"],
    )
    .await;
    for _ in 0..3 {
        assert_eq!(get(p.addr, "/static/app.js", &[]).await.text(), "body 1");
    }
    assert_eq!(o.calls(), 1, "one origin call under the rule");
    let hit = get(p.addr, "/static/app.js", &[]).await;
    assert!(hit.cache_status().contains("hit"), "{}", hit.cache_status());
    for _ in 0..3 {
        get(p.addr, "/api/x", &[]).await;
    }
    assert_eq!(
        o.calls(),
        4,
        "outside the rule every request goes to the origin"
    );
}

#[tokio::test]
async fn a_rule_ttl_never_overrides_a_lifetime_the_origin_states() {
    let o = origin(|_, n| Reply::ok(&[("cache-control", "max-age=0")], format!("body {n}"))).await;
    let p = proxy(
        &format!("http://{}", o.addr),
        &["[[rule]]", "prefix = \"/\"", "ttl_secs = 60"],
    )
    .await;
    get(p.addr, "/r", &[]).await;
    get(p.addr, "/r", &[]).await;
    assert_eq!(o.calls(), 2, "max-age=0 stands");
}

#[tokio::test]
async fn globs_match_within_a_segment_and_the_first_rule_wins() {
    let o = silent_origin().await;
    let p = proxy(
        &format!("http://{}", o.addr),
        &[
            "[[rule]]",
            "glob = \"/api/*/price\"",
            "ttl_secs = 60",
            "[[rule]]",
            "prefix = \"/api/\"",
            "bypass = true",
        ],
    )
    .await;
    get(p.addr, "/api/eu/price", &[]).await;
    get(p.addr, "/api/eu/price", &[]).await;
    assert_eq!(o.calls(), 1);
    // `*` does not cross `/`: the bypass rule applies.
    get(p.addr, "/api/eu/de/price", &[]).await;
    get(p.addr, "/api/eu/de/price", &[]).await;
    assert_eq!(o.calls(), 3);
}

#[tokio::test]
async fn a_bypassed_path_is_never_stored_or_coalesced_however_it_is_spelled() {
    let o = origin(|_, n| {
        Reply::ok(&[("cache-control", "max-age=60")], format!("body {n}")).delay(100)
    })
    .await;
    let p = proxy(
        &format!("http://{}", o.addr),
        &["[[rule]]", "prefix = \"/live/\"", "bypass = true"],
    )
    .await;
    let r = get(p.addr, "/live/feed", &[]).await;
    assert!(
        r.cache_status().contains("detail=rule-bypass"),
        "{}",
        r.cache_status()
    );
    // Concurrent requests each go to the origin: a bypass is no shared load.
    let answers = futures_join(
        (0..4)
            .map(|_| tokio::spawn(get(p.addr, "/live/feed", &[])))
            .collect(),
    )
    .await;
    assert!(answers.iter().all(|a| a.status == 200));
    assert_eq!(o.calls(), 5);
    // The adversary's spellings of the same path: a dot-segment, an encoded
    // unreserved character. Each is the path the origin gets, so each is bypassed.
    for path in ["/x/../live/feed", "/%6Cive/feed", "/live/./feed"] {
        let before = o.calls();
        get(p.addr, path, &[]).await;
        get(p.addr, path, &[]).await;
        assert_eq!(o.calls(), before + 2, "{path} must be bypassed");
    }
    // Other paths are cached as usual.
    get(p.addr, "/other", &[]).await;
    get(p.addr, "/other", &[]).await;
    assert_eq!(o.seen().iter().filter(|s| s.target == "/other").count(), 1);
}

async fn futures_join(
    handles: Vec<tokio::task::JoinHandle<support::Answer>>,
) -> Vec<support::Answer> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn an_ignored_set_cookie_is_stored_without_it_and_no_client_gets_another_ones_cookie() {
    let o = origin(|_, n| {
        Reply::ok(
            &[
                ("cache-control", "max-age=60"),
                ("set-cookie", &format!("session=secret-{n}")),
            ],
            format!("body {n}"),
        )
    })
    .await;
    let p = proxy(
        &format!("http://{}", o.addr),
        &[
            "[[rule]]",
            "prefix = \"/public/\"",
            "ignore_set_cookie = true",
        ],
    )
    .await;
    // Without the rule: never stored (a session-bearing answer is not shared).
    get(p.addr, "/private", &[]).await;
    let own = get(p.addr, "/private", &[]).await;
    assert_eq!(o.calls(), 2);
    assert!(
        own.header("set-cookie").is_some(),
        "its own answer keeps it"
    );
    // With it: one origin call, and the cookie reaches nobody — not even the first caller.
    for _ in 0..3 {
        let r = get(p.addr, "/public/page", &[]).await;
        assert_eq!(r.text(), "body 3");
        assert_eq!(
            r.header("set-cookie"),
            None,
            "a stored cookie was handed out"
        );
    }
    assert_eq!(o.calls(), 3);
}

#[tokio::test]
async fn ignoring_cache_control_stores_what_the_origin_forbids_and_passes_its_fields_on() {
    let o = origin(|_, n| {
        Reply::ok(
            &[("cache-control", "private, no-store"), ("expires", "0")],
            format!("body {n}"),
        )
    })
    .await;
    let p = proxy(
        &format!("http://{}", o.addr),
        &[
            "[[rule]]",
            "prefix = \"/catalog/\"",
            "ttl_secs = 60",
            "ignore_cache_control = true",
        ],
    )
    .await;
    for _ in 0..3 {
        let r = get(p.addr, "/catalog/1", &[]).await;
        assert_eq!(r.text(), "body 1");
        assert_eq!(r.header("cache-control"), Some("private, no-store"));
    }
    assert_eq!(o.calls(), 1);
    get(p.addr, "/elsewhere", &[]).await;
    get(p.addr, "/elsewhere", &[]).await;
    assert_eq!(o.calls(), 3, "outside the rule no-store is obeyed");
}

#[tokio::test]
async fn a_rules_max_object_size_streams_larger_answers_through_uncached() {
    let o = origin(|_, _| Reply::ok(&[("cache-control", "max-age=60")], vec![b'x'; 4096])).await;
    let p = proxy(
        &format!("http://{}", o.addr),
        &[
            "[[rule]]",
            "prefix = \"/small/\"",
            "max_object_bytes = \"1KiB\"",
        ],
    )
    .await;
    for _ in 0..2 {
        let r = get(p.addr, "/small/blob", &[]).await;
        assert_eq!(r.body.len(), 4096, "the whole body, streamed");
    }
    assert_eq!(o.calls(), 2, "too large under the rule: not stored");
    get(p.addr, "/large/blob", &[]).await;
    get(p.addr, "/large/blob", &[]).await;
    assert_eq!(o.calls(), 3, "outside the rule the global limit applies");
}

#[tokio::test]
async fn a_reload_changes_rules_for_the_next_request_and_names_what_needs_a_restart() {
    let o = silent_origin().await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    get(p.addr, "/r", &[]).await;
    get(p.addr, "/r", &[]).await;
    assert_eq!(o.calls(), 2);
    let done = p
        .reload(&["[[rule]]", "prefix = \"/\"", "ttl_secs = 60"])
        .unwrap();
    assert_eq!(done.applied, vec!["rule"]);
    assert!(done.need_restart.is_empty());
    get(p.addr, "/n", &[]).await;
    get(p.addr, "/n", &[]).await;
    assert_eq!(o.calls(), 3, "stored under the reloaded rule");
    // A URL found uncacheable before stays hit-for-miss for its period (as
    // documented: purge it to apply the rule at once).
    get(p.addr, "/r", &[]).await;
    assert_eq!(o.calls(), 4);
    // An invalid file changes nothing: the rule stays in force.
    let e = p
        .reload(&["[[rule]]", "prefix = \"/\"", "ttl_secs = 0"])
        .unwrap_err();
    assert_eq!(e.field, "rule[0].ttl_secs");
    get(p.addr, "/n", &[]).await;
    assert_eq!(o.calls(), 4);
    // What only a restart changes keeps its running value, and is named.
    let done = p
        .reload(&[
            "threads = 3",
            "origin_timeout_ms = 1000",
            "[[rule]]",
            "prefix = \"/\"",
            "bypass = true",
        ])
        .unwrap();
    assert_eq!(done.need_restart, vec!["origin_timeout_ms", "threads"]);
    assert_eq!(done.applied, vec!["rule"]);
    get(p.addr, "/n", &[]).await;
    assert_eq!(
        o.calls(),
        5,
        "bypassed after the reload, on the same listener"
    );
}

#[tokio::test]
async fn a_reload_drops_no_connection_and_applies_limits_to_the_next_request() {
    let o = origin(|s, n| {
        let delay = if s.target == "/slow" { 600 } else { 0 };
        Reply::ok(&[], format!("body {n}")).delay(delay)
    })
    .await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    // A request in flight while the reload happens, on a keep-alive connection.
    let mut conn = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    conn.write_all(b"GET /slow HTTP/1.1\r\nhost: api.example\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let done = p.reload(&["max_request_body_bytes = 10"]).unwrap();
    assert_eq!(done.applied, vec!["max_request_body_bytes"]);
    let slow = support::read_answer(&mut conn, false)
        .await
        .expect("answered");
    assert_eq!(slow.status, 200, "the request in flight completed");
    // The same connection carries on, under the new limit.
    conn.write_all(
        b"POST /upload HTTP/1.1\r\nhost: api.example\r\ncontent-length: 11\r\n\r\nhello world",
    )
    .await
    .unwrap();
    let refused = support::read_answer(&mut conn, false)
        .await
        .expect("answered");
    assert_eq!(refused.status, 413);
    let posts = o.seen().iter().filter(|s| s.method == "POST").count();
    assert_eq!(posts, 0);
    let small = request(p.addr, "DELETE", "/item", &[]).await;
    assert_eq!(small.status, 200);
}

#[tokio::test]
async fn the_clients_host_is_kept_only_when_configured_and_keys_stay_apart() {
    let o = origin(|s, _| {
        let host = s.header("host").unwrap_or("").to_string();
        Reply::ok(&[("cache-control", "max-age=60")], host)
    })
    .await;
    let origin_url = format!("http://{}", o.addr);
    let ask = |addr, host: &'static str| async move {
        let text = format!("GET /site HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
        raw(addr, text.as_bytes(), Duration::from_secs(5))
            .await
            .expect("answered")
    };
    // By default the origin gets its own host.
    let p = proxy(&origin_url, &[]).await;
    assert_eq!(ask(p.addr, "shop.example").await.text(), o.addr.to_string());
    let p = proxy(&origin_url, &["keep_client_host = true"]).await;
    assert_eq!(ask(p.addr, "Shop.Example").await.text(), "shop.example");
    assert_eq!(ask(p.addr, "blog.example:80").await.text(), "blog.example");
    // Each host its own entry: one host's answer never serves another.
    assert_eq!(ask(p.addr, "shop.example").await.text(), "shop.example");
    assert_eq!(ask(p.addr, "blog.example").await.text(), "blog.example");
    assert_eq!(o.calls(), 3);
    // A client cannot smuggle a second Host past the key.
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET /site HTTP/1.1\r\nhost: shop.example\r\nhost: evil.example\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0; 64];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 400"));
}

#[tokio::test]
async fn keeping_the_clients_host_needs_it_in_the_key() {
    let args = herdguard_proxy::ServeArgs {
        listen: Some("127.0.0.1:0".into()),
        origin: Some("http://127.0.0.1:9".into()),
        keep_client_host: true,
        cache_key: Some("path,query".into()),
        ..Default::default()
    };
    assert_eq!(args.resolve().unwrap_err().field, "keep_client_host");
}
