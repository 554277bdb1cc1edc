//! Surrogate-key purge: `POST /purge {"tag": ...}` removes every stored answer
//! whose origin tagged it (`Surrogate-Key` / `Cache-Tag`), on one instance and
//! across a fleet on a real Redis — including answers stored by an instance
//! that has gone since.

mod support;

use support::{get, origin, proxy, request, Reply};

const TOKEN: &str = "purge-token-for-tests-0123";

/// `/p/N` tagged `product-N list` (Fastly's field), `/c` tagged `list, cat`
/// (Cloudflare's), `/plain` untagged; each body names its path and the call.
async fn tagged_origin() -> support::Origin {
    origin(|seen, n| {
        let mut fields = vec![("cache-control", "max-age=60".to_string())];
        match seen.target.as_str() {
            "/c" => fields.push(("cache-tag", "list, cat".into())),
            "/plain" => {}
            p => fields.push((
                "surrogate-key",
                format!("product-{} list", p.trim_start_matches("/p/")),
            )),
        }
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Reply::ok(&fields, format!("{} #{n}", seen.target))
    })
    .await
}

fn calls_of(o: &support::Origin, path: &str) -> usize {
    o.seen().iter().filter(|s| s.target == path).count()
}

/// The purges `admin`'s instance has applied (its own and the fleet's).
async fn purges_applied(admin: std::net::SocketAddr) -> u64 {
    support::metrics(admin)
        .await
        .lines()
        .find_map(|l| l.strip_prefix("herdguard_proxy_purges_total "))
        .map_or(0, |v| v.trim().parse().unwrap_or(0))
}

async fn purge_tag(admin: std::net::SocketAddr, tag: &str) -> support::Answer {
    let auth = format!("Bearer {TOKEN}");
    request(
        admin,
        "POST",
        &format!("/purge?tag={tag}"),
        &[("authorization", auth.as_str())],
    )
    .await
}

#[tokio::test]
async fn a_tag_purge_removes_every_answer_carrying_it_and_no_other() {
    let o = tagged_origin().await;
    let p = proxy(
        &format!("http://{}", o.addr),
        &[&format!("purge_token = \"{TOKEN}\"")],
    )
    .await;
    for path in ["/p/1", "/p/2", "/c", "/plain"] {
        let r = get(p.addr, path, &[]).await;
        assert_eq!(r.status, 200);
        // The tags are this cache's: no client sees them.
        assert_eq!(r.header("surrogate-key"), None, "{path}");
        assert_eq!(r.header("cache-tag"), None, "{path}");
        get(p.addr, path, &[]).await;
    }
    assert_eq!(o.calls(), 4);
    let r = purge_tag(p.admin, "product-1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("\"keys\":1"), "{}", r.text());
    get(p.addr, "/p/1", &[]).await;
    get(p.addr, "/p/2", &[]).await;
    assert_eq!((calls_of(&o, "/p/1"), calls_of(&o, "/p/2")), (2, 1));
    // Both fields' tags: "list" is on /p/1 (again, stored anew), /p/2 and /c.
    let r = purge_tag(p.admin, "list").await;
    assert!(r.text().contains("\"keys\":3"), "{}", r.text());
    for path in ["/p/1", "/p/2", "/c", "/plain"] {
        get(p.addr, path, &[]).await;
    }
    assert_eq!(
        ["/p/1", "/p/2", "/c", "/plain"].map(|path| calls_of(&o, path)),
        [3, 2, 2, 1]
    );
    // A tag nobody carries purges nothing; a malformed one is refused.
    assert!(purge_tag(p.admin, "nothing")
        .await
        .text()
        .contains("\"keys\":0"));
    assert_eq!(purge_tag(p.admin, "a,b").await.status, 400);
    let unauthorized = request(p.admin, "POST", "/purge?tag=list", &[]).await;
    assert_eq!(unauthorized.status, 401);
}

#[tokio::test]
async fn a_tag_purge_on_one_instance_reaches_the_fleet_and_what_a_gone_instance_stored() {
    let redis = herdguard_testkit::RedisServer::start().unwrap();
    let o = tagged_origin().await;
    let settings = [
        format!("redis = \"{}\"", redis.url()),
        format!("purge_token = \"{TOKEN}\""),
    ];
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let url = format!("http://{}", o.addr);
    // An instance stores /p/1 in Redis, and goes.
    let gone = proxy(&url, &settings).await;
    assert_eq!(get(gone.addr, "/p/1", &[]).await.text(), "/p/1 #1");
    drop(gone);
    // A new instance, which never saw /p/1, purges its tag: found in Redis's set.
    let c = proxy(&url, &settings).await;
    let r = purge_tag(c.admin, "product-1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("\"keys\":1"), "{}", r.text());
    assert!(r.text().contains("\"fleet\":\"broadcast\""), "{}", r.text());
    assert_eq!(get(c.addr, "/p/1", &[]).await.text(), "/p/1 #2");
    // Two more instances serve it from Redis (copies of their own, indexed).
    let (a, b) = (proxy(&url, &settings).await, proxy(&url, &settings).await);
    for p in [&a, &b] {
        assert_eq!(get(p.addr, "/p/1", &[]).await.text(), "/p/1 #2");
    }
    assert_eq!(o.calls(), 2);
    // A purge on any instance empties every one: one new origin call in all.
    let r = purge_tag(a.admin, "product-1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for p in [&b, &c, &a] {
        assert_eq!(get(p.addr, "/p/1", &[]).await.text(), "/p/1 #3");
    }
    assert_eq!(o.calls(), 3);
}

/// `POST /purge {"tag": tag}` (any bytes a JSON string can hold).
async fn purge_tag_json(admin: std::net::SocketAddr, tag: &str) -> support::Answer {
    let body = serde_json::json!({ "tag": tag }).to_string();
    let text = format!(
        "POST /purge HTTP/1.1\r\nhost: admin\r\nauthorization: Bearer {TOKEN}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    support::raw(admin, text.as_bytes(), std::time::Duration::from_secs(5))
        .await
        .expect("an answer to the purge")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adversarys_tags_are_judged_by_one_rule_from_origin_to_redis_to_purge() {
    let longest = "t".repeat(herdguard_redis::MAX_TAG_BYTES);
    let too_long = "t".repeat(herdguard_redis::MAX_TAG_BYTES + 1);
    let surrogate = format!("ok-1 a,b {{x}} {longest} {too_long} %41");
    let o = origin(move |_, n| {
        let fields = [
            ("cache-control", "max-age=60"),
            ("surrogate-key", surrogate.as_str()),
            ("cache-tag", "c-1, a b,;"),
        ];
        Reply::ok(&fields, format!("#{n}"))
    })
    .await;
    let redis = herdguard_testkit::RedisServer::start().unwrap();
    let settings = [
        format!("redis = \"{}\"", redis.url()),
        format!("purge_token = \"{TOKEN}\""),
    ];
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let url = format!("http://{}", o.addr);
    let (loader, purger) = (proxy(&url, &settings).await, proxy(&url, &settings).await);
    // The purger never stores the answer: what it finds, it finds in Redis's sets.
    let valid = ["ok-1", "{x}", longest.as_str(), "%41", "c-1", ";"];
    for (n, tag) in valid.into_iter().enumerate() {
        get(loader.addr, "/adv", &[]).await;
        assert_eq!(
            o.calls(),
            n + 1,
            "{tag:?}: the purge before reached the loader"
        );
        let r = purge_tag_json(purger.admin, tag).await;
        assert_eq!(r.status, 200, "{tag:?}: {}", r.text());
        assert!(r.text().contains("\"keys\":1"), "{tag:?}: {}", r.text());
        assert!(herdguard_redis::valid_tag(tag));
        // The fleet applies a purge after its answer: wait until the loader
        // has (applied late, it would remove the next iteration's answer).
        for _ in 0..1_000 {
            if purges_applied(loader.admin).await > n as u64 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        assert!(purges_applied(loader.admin).await > n as u64, "{tag:?}");
    }
    for tag in ["a,b", too_long.as_str(), "a b", "", "caf\u{e9}", "a\tb"] {
        let r = purge_tag_json(purger.admin, tag).await;
        assert_eq!(r.status, 400, "{tag:?}: {}", r.text());
        assert!(!herdguard_redis::valid_tag(tag));
    }
    // Once per valid tag, and none for the others.
    assert_eq!(o.calls(), valid.len());
}

/// The calls Redis at `addr` has served of `command` (`INFO commandstats`).
async fn redis_calls(addr: std::net::SocketAddr, command: &str) -> u64 {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let mut s = BufReader::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    s.write_all(b"INFO commandstats\r\n").await.unwrap();
    let mut head = String::new();
    s.read_line(&mut head).await.unwrap();
    let len: usize = head.trim().trim_start_matches('$').parse().unwrap();
    let mut info = vec![0; len];
    s.read_exact(&mut info).await.unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    String::from_utf8(info)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

/// A purge on an instance that holds none of the keys counts those Redis
/// stores — exactly: a key its tag's set still names but whose entry is gone
/// is not counted — with one existence check, never a read of each value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_of_keys_only_in_redis_counts_them_with_one_existence_check() {
    let redis = herdguard_testkit::RedisServer::start().unwrap();
    let o = tagged_origin().await;
    let (loader, settings) = storing(&redis, &o, 20).await;
    // An unsafe method removes /p/3's entry; its tag's set still names it.
    assert_eq!(request(loader.addr, "POST", "/p/3", &[]).await.status, 200);
    drop(loader);
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let purger = proxy(&format!("http://{}", o.addr), &settings).await;
    let reads = redis_calls(redis.addr(), "mget").await;
    let r = purge_tag(purger.admin, "list").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("\"keys\":19"), "{}", r.text());
    let reads = redis_calls(redis.addr(), "mget").await - reads;
    assert_eq!(reads, 0, "values read to count them");
    assert!(redis_calls(redis.addr(), "exists").await >= 1);
}

/// The adversary of the count: Redis refuses the existence check (here by
/// ACL) while removals still work. The answer must not claim a confirmed
/// purge of fewer keys than were stored: it says what was not counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_whose_keys_redis_cannot_count_is_not_confirmed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let redis = herdguard_testkit::RedisServer::start().unwrap();
    let o = tagged_origin().await;
    let (loader, settings) = storing(&redis, &o, 5).await;
    drop(loader);
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let purger = proxy(&format!("http://{}", o.addr), &settings).await;
    let mut s = tokio::net::TcpStream::connect(redis.addr()).await.unwrap();
    s.write_all(b"ACL SETUSER default -exists\r\n")
        .await
        .unwrap();
    let mut ok = [0; 5];
    s.read_exact(&mut ok).await.unwrap();
    assert_eq!(&ok, b"+OK\r\n");
    let r = purge_tag(purger.admin, "list").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("5 keys not counted"), "{}", r.text());
}

/// An instance on `redis` with a purge token that has stored `/p/0` .. `/p/{n-1}`
/// (tagged by `origin`), and the settings another instance joins it with.
async fn storing(
    redis: &herdguard_testkit::RedisServer,
    origin: &support::Origin,
    n: usize,
) -> (support::Proxy, Vec<String>) {
    let settings = vec![
        format!("redis = \"{}\"", redis.url()),
        format!("purge_token = \"{TOKEN}\""),
    ];
    let named: Vec<&str> = settings.iter().map(String::as_str).collect();
    let loader = proxy(&format!("http://{}", origin.addr), &named).await;
    for n in 0..n {
        let path = format!("/p/{n}");
        assert_eq!(get(loader.addr, &path, &[]).await.status, 200, "{path}");
    }
    (loader, settings)
}
