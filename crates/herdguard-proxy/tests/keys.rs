//! Cache keys against a real origin (and a real Redis): every spelling of a URL
//! that a request, a purge and an unsafe method's invalidation can use finds
//! the one entry; a fleet reached under several names makes one origin call
//! with the default key; and wherever the origin can see the client's host,
//! one host's answer never serves another.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{origin, proxy, raw, request, Answer, Reply};

const TOKEN: &str = "purge-token-for-tests-0123";

/// `method target` with `Host: host` on a new connection (5 s limit).
async fn send_as(addr: SocketAddr, method: &str, host: &str, target: &str) -> Answer {
    let text = format!(
        "{method} {target} HTTP/1.1\r\nhost: {host}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    raw(addr, text.as_bytes(), Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("no answer to {method} {target} (host {host})"))
}

async fn purge_url(admin: SocketAddr, url: &str) -> Answer {
    let auth = format!("Bearer {TOKEN}");
    let body = serde_json::json!({ "url": url }).to_string();
    let length = body.len().to_string();
    let text = format!(
        "POST /purge HTTP/1.1\r\nhost: admin\r\nauthorization: {auth}\r\ncontent-type: application/json\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n{body}"
    );
    raw(admin, text.as_bytes(), Duration::from_secs(5))
        .await
        .expect("an answer to the purge")
}

fn json(a: &Answer) -> serde_json::Value {
    serde_json::from_slice(&a.body).unwrap_or_else(|e| panic!("{e}: {}", a.text()))
}

/// The adversary's spellings of one resource, in pairs: a GET stores under the
/// first, a purge or an invalidation names the second.
const SPELLINGS: &[(&str, &str)] = &[
    ("/q?x=%3d", "/q?x=%3D"),
    ("/q?x=%3D", "/q?x=%3d"),
    ("/%7Euser?v=%7e", "/~user?v=~"),
    ("/~user2?v=~", "/%7euser2?v=%7E"),
    ("/g%2fp?x=%2f", "/g%2Fp?x=%2F"),
    ("/a/./b/../c?k", "/a/c?k"),
];

#[tokio::test]
async fn a_purge_of_any_spelling_removes_what_a_get_of_another_stored() {
    let o = origin(|seen, n| {
        Reply::ok(
            &[("cache-control", "max-age=60")],
            format!("{} #{n}", seen.target),
        )
    })
    .await;
    let p = proxy(
        &format!("http://{}", o.addr),
        &[&format!("purge_token = \"{TOKEN}\"")],
    )
    .await;
    for (stored, purged) in SPELLINGS {
        let first = request(p.addr, "GET", stored, &[]).await;
        assert_eq!(first.status, 200, "{stored}");
        let calls = o.calls();
        let again = request(p.addr, "GET", stored, &[]).await;
        assert!(
            again.cache_status().contains("hit"),
            "{stored}: {}",
            again.cache_status()
        );
        for url in [purged.to_string(), format!("http://api.example{purged}")] {
            let answer = purge_url(p.admin, &url).await;
            assert_eq!(answer.status, 200, "{}", answer.text());
            assert_eq!(
                json(&answer)["keys"],
                1,
                "purge {url} after GET {stored}: {}",
                answer.text()
            );
            let next = request(p.addr, "GET", stored, &[]).await;
            assert!(
                next.cache_status().contains("fwd=miss"),
                "GET {stored} after purge {url}: {}",
                next.cache_status()
            );
        }
        assert_eq!(
            o.calls(),
            calls + 2,
            "{stored}: one origin call after each purge"
        );
    }
}

#[tokio::test]
async fn an_unsafe_method_on_any_spelling_invalidates_what_a_get_of_another_stored() {
    // `/submit?location=N` (or `content-location=N`) answers with that field naming the Nth
    // resource in its second spelling, byte for byte.
    let o = origin(|seen, n| {
        if seen.method == "GET" {
            return Reply::ok(
                &[("cache-control", "max-age=60")],
                format!("{} #{n}", seen.target),
            );
        }
        match seen.target.trim_start_matches("/submit?").split_once('=') {
            Some((field, i)) if seen.target.starts_with("/submit?") => {
                let named = SPELLINGS[i.parse::<usize>().unwrap()].1;
                Reply::ok(&[(field, named)], "").status(201)
            }
            _ => Reply::ok(&[], "").status(204),
        }
    })
    .await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    for (i, (stored, named)) in SPELLINGS.iter().enumerate() {
        for how in ["POST", "PUT", "DELETE", "location", "content-location"] {
            request(p.addr, "GET", stored, &[]).await;
            let hit = request(p.addr, "GET", stored, &[]).await;
            assert!(
                hit.cache_status().contains("hit"),
                "{stored}: {}",
                hit.cache_status()
            );
            let answer = match how {
                field @ ("location" | "content-location") => {
                    request(p.addr, "POST", &format!("/submit?{field}={i}"), &[]).await
                }
                method => request(p.addr, method, named, &[]).await,
            };
            assert!(answer.status < 300, "{how} {named}: {}", answer.status);
            let next = request(p.addr, "GET", stored, &[]).await;
            assert!(
                next.cache_status().contains("fwd=miss"),
                "GET {stored} after {how} {named}: {}",
                next.cache_status()
            );
        }
    }
}

#[tokio::test]
async fn a_purge_that_found_nothing_says_so() {
    let o = origin(|_, n| Reply::ok(&[("cache-control", "max-age=60")], format!("#{n}"))).await;
    let p = proxy(
        &format!("http://{}", o.addr),
        &[&format!("purge_token = \"{TOKEN}\"")],
    )
    .await;
    let answer = purge_url(p.admin, "/never-stored").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let body = json(&answer);
    assert_eq!(body["keys"], 0, "{body}");
    assert!(!answer.text().contains("purged"), "{}", answer.text());
    // Stored, then purged: one key; purged again: none.
    request(p.addr, "GET", "/x", &[]).await;
    assert_eq!(json(&purge_url(p.admin, "/x").await)["keys"], 1);
    assert_eq!(json(&purge_url(p.admin, "/x").await)["keys"], 0);
}

/// An origin that takes 200 ms and answers `#n`, fresh for a minute.
async fn slow_origin() -> support::Origin {
    origin(|_, n| Reply::ok(&[("cache-control", "max-age=60")], format!("#{n}")).delay(200)).await
}

/// Three sidecars of one origin on one shared store (`store` is the TOML line naming it),
/// with the default key.
async fn fleet(o: &support::Origin, store: &str) -> Vec<support::Proxy> {
    let mut proxies = Vec::new();
    for _ in 0..3 {
        // A generous Redis timeout: the test machine is busy running the other tests.
        proxies.push(
            proxy(
                &format!("http://{}", o.addr),
                &[store, "redis_op_timeout_ms = 2000"],
            )
            .await,
        );
    }
    proxies
}

/// How clients name each instance: by address, by `localhost`, by a DNS name —
/// another `Host` (and another port) each.
fn names(proxies: &[support::Proxy]) -> Vec<(SocketAddr, String)> {
    proxies
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let port = p.addr.port();
            let host = match i {
                0 => format!("127.0.0.1:{port}"),
                1 => format!("localhost:{port}"),
                _ => format!("sidecar-{i}.internal:{port}"),
            };
            (p.addr, host)
        })
        .collect()
}

/// `n` concurrent cold GETs of `path`, spread over the instances under their names; every
/// answer must be the same 200.
async fn stampede(names: &[(SocketAddr, String)], path: &str, n: usize) {
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let (addr, host) = names[i % names.len()].clone();
            let path = path.to_string();
            tokio::spawn(async move { send_as(addr, "GET", &host, &path).await })
        })
        .collect();
    let mut bodies = Vec::new();
    for c in calls {
        let a = c.await.unwrap();
        assert_eq!(a.status, 200, "{}", a.text());
        bodies.push(a.text());
    }
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 1, "one answer for all, not {bodies:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_reached_under_three_names_make_one_origin_call_for_300() {
    let redis = herdguard_testkit::RedisServer::start().unwrap();
    let o = slow_origin().await;
    let proxies = fleet(&o, &format!("redis = \"{}\"", redis.url())).await;
    stampede(&names(&proxies), "/headline", 300).await;
    assert_eq!(o.calls(), 1, "one origin call for the fleet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_under_three_names_make_one_origin_call_after_a_redis_outage() {
    let mut redis = herdguard_testkit::RedisServer::start().unwrap();
    let o = slow_origin().await;
    let proxies = fleet(&o, &format!("redis = \"{}\"", redis.url())).await;
    let names = names(&proxies);
    redis.kill();
    // Each instance finds Redis gone (and goes on serving, coalescing in process).
    for (addr, host) in &names {
        assert_eq!(send_as(*addr, "GET", host, "/during").await.status, 200);
    }
    redis.restart().unwrap();
    // Bounded: every instance's probe sees Redis again.
    let mut ready = Vec::new();
    for _ in 0..300 {
        ready.clear();
        for p in &proxies {
            ready.push(request(p.admin, "GET", "/readyz", &[]).await.text());
        }
        if ready.iter().all(|r| r.contains("shared_store: ok")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        ready.iter().all(|r| r.contains("shared_store: ok")),
        "{ready:?}"
    );
    let before = o.calls();
    stampede(&names, "/after", 300).await;
    assert_eq!(
        o.calls() - before,
        1,
        "one origin call for the fleet after the outage"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_under_three_names_on_a_redis_cluster_make_one_origin_call_per_key() {
    let cluster = herdguard_testkit::RedisCluster::start().unwrap();
    let o = slow_origin().await;
    let seeds = cluster.urls().join(",");
    let proxies = fleet(&o, &format!("redis_cluster = \"{seeds}\"")).await;
    let names = names(&proxies);
    // Keys spread over the shards, each through every instance under its name.
    const KEYS: [&str; 4] = ["/shard/0", "/shard/1", "/shard/2", "/shard/3"];
    let runs: Vec<_> = KEYS
        .iter()
        .map(|k| {
            let names = names.clone();
            tokio::spawn(async move { stampede(&names, k, 75).await })
        })
        .collect();
    for r in runs {
        r.await.unwrap();
    }
    assert_eq!(
        o.calls(),
        KEYS.len(),
        "one origin call per key for the fleet"
    );
}

/// An origin whose answer depends on the client's host as it sees it: its `Host`
/// and `X-Forwarded-Host`.
async fn host_origin() -> support::Origin {
    origin(|seen, n| {
        let body = format!(
            "host={} xfh={} #{n}",
            seen.header("host").unwrap_or("-"),
            seen.header("x-forwarded-host").unwrap_or("-")
        );
        Reply::ok(&[("cache-control", "max-age=60")], body).delay(100)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_the_origin_sees_the_clients_host_two_hosts_never_get_each_others_answer() {
    let redis = herdguard_testkit::RedisServer::start().unwrap();
    for (setting, seen_as) in [
        ("keep_client_host = true", "host="),
        ("forward_host = true", "xfh="),
    ] {
        let o = host_origin().await;
        let store = format!("redis = \"{}\"", redis.url());
        let prefix = format!("redis_prefix = \"{}:\"", &setting[..4]);
        let mut proxies = Vec::new();
        for _ in 0..3 {
            let settings = [
                store.as_str(),
                setting,
                prefix.as_str(),
                "redis_op_timeout_ms = 2000",
            ];
            proxies.push(proxy(&format!("http://{}", o.addr), &settings).await);
        }
        // Two hosts at once, through every instance.
        let hosts = ["shop.example", "blog.example"];
        let calls: Vec<_> = (0..120)
            .map(|i| {
                let addr = proxies[i % 3].addr;
                let host = hosts[(i / 3) % 2];
                tokio::spawn(async move { (host, send_as(addr, "GET", host, "/page").await) })
            })
            .collect();
        for c in calls {
            let (host, a) = c.await.unwrap();
            assert_eq!(a.status, 200);
            assert!(
                a.text().contains(&format!("{seen_as}{host} ")),
                "{setting}: {host} got {:?}",
                a.text()
            );
        }
        assert_eq!(o.calls(), 2, "{setting}: one origin call per host");
    }
}

#[tokio::test]
async fn by_default_the_origin_never_sees_the_clients_host() {
    let o = host_origin().await;
    // Not even a trusted peer's X-Forwarded-Host passes.
    let p = proxy(
        &format!("http://{}", o.addr),
        &["trusted_proxies = [\"127.0.0.1\"]"],
    )
    .await;
    let own = format!("host={} xfh=- #1", o.addr);
    for host in ["shop.example", "blog.example", "127.0.0.1"] {
        let text = format!(
            "GET /page HTTP/1.1\r\nhost: {host}\r\nx-forwarded-host: {host}\r\nconnection: close\r\n\r\n"
        );
        let a = raw(p.addr, text.as_bytes(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(a.text(), own, "{host}");
    }
    assert_eq!(o.calls(), 1);
    assert!(o
        .seen()
        .iter()
        .all(|s| s.header("x-forwarded-host").is_none()));
    // Asking for the host in the key without showing it to the origin only splits the cache.
    let o = host_origin().await;
    let p = proxy(
        &format!("http://{}", o.addr),
        &["cache_key = \"host,path,query\""],
    )
    .await;
    for host in ["shop.example", "blog.example", "shop.example"] {
        let a = send_as(p.addr, "GET", host, "/page").await;
        assert!(a.text().contains("xfh=- "), "{}", a.text());
    }
    assert_eq!(o.calls(), 2);
}

#[tokio::test]
async fn with_forward_host_a_trusted_peers_forwarded_host_is_the_key_host() {
    let o = host_origin().await;
    let p = proxy(
        &format!("http://{}", o.addr),
        &["forward_host = true", "trusted_proxies = [\"127.0.0.1\"]"],
    )
    .await;
    // A load balancer that names every request `lb.internal` and the client's host in
    // X-Forwarded-Host: each client host its own entry, named to the origin as it is keyed.
    let ask = |xfh: &'static str| {
        let text = format!(
            "GET /page HTTP/1.1\r\nhost: lb.internal\r\nx-forwarded-host: {xfh}\r\nconnection: close\r\n\r\n"
        );
        async move {
            raw(p.addr, text.as_bytes(), Duration::from_secs(5))
                .await
                .unwrap()
        }
    };
    assert!(ask("Shop.Example")
        .await
        .text()
        .contains("xfh=shop.example "));
    assert!(ask("blog.example")
        .await
        .text()
        .contains("xfh=blog.example "));
    assert!(ask("shop.example:80")
        .await
        .text()
        .contains("xfh=shop.example #1"));
    assert_eq!(o.calls(), 2);
    assert_eq!(ask("u@evil").await.status, 400);
}

#[test]
fn the_key_leaves_the_host_out_unless_the_origin_sees_it() {
    let args = |f: fn(&mut herdguard_proxy::ServeArgs)| {
        let mut a = herdguard_proxy::ServeArgs {
            listen: Some("127.0.0.1:0".into()),
            origin: Some("http://127.0.0.1:9".into()),
            ..Default::default()
        };
        f(&mut a);
        a.resolve()
    };
    assert!(!args(|_| {}).unwrap().cache_key.host);
    assert!(args(|a| a.forward_host = true).unwrap().cache_key.host);
    assert!(args(|a| a.keep_client_host = true).unwrap().cache_key.host);
    assert!(
        args(|a| a.cache_key = Some("host,path".into()))
            .unwrap()
            .cache_key
            .host
    );
    let refused = args(|a| {
        a.forward_host = true;
        a.cache_key = Some("path,query".into());
    });
    assert_eq!(refused.unwrap_err().field, "forward_host");
    let refused = args(|a| {
        a.keep_client_host = true;
        a.cache_key = Some("path".into());
    });
    assert_eq!(refused.unwrap_err().field, "keep_client_host");
}
