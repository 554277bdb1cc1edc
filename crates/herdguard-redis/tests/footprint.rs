//! What the fleet leaves in Redis, against a real redis-server: every key
//! lives no longer than what it guards. The adversary is a key space that
//! only grows — a crawler's distinct URLs, each loaded once — and tags that
//! are added to forever.
//!
//! `cargo test -p herdguard-redis --test footprint -- --nocapture` prints the
//! figures: Redis keys and bytes per cached key, against a plain `SET … PX`
//! of the same bytes under the same names in the same run.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::wait_gone;
use herdguard::{Cache, PutOutcome, Remote};
use herdguard_redis::{RedisConfig, RedisRemote, MAX_TAGGED_KEYS};
use herdguard_testkit::RedisServer;

/// Distinct keys loaded once each.
const KEYS: usize = 1000;
/// A cached value's size (an HTTP answer's body and head are a few hundred
/// bytes and up); `HERDGUARD_FOOTPRINT_VALUE_BYTES` sets another for the figures.
fn value_bytes() -> usize {
    std::env::var("HERDGUARD_FOOTPRINT_VALUE_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}
/// The entry's TTL, as `max-age=60`.
const TTL: Duration = Duration::from_secs(60);

fn conn(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Every key in the database, with its PTTL and `MEMORY USAGE`.
fn keys(conn: &mut redis::Connection) -> Vec<(String, i64, u64)> {
    let names: Vec<String> = redis::cmd("KEYS").arg("*").query(conn).unwrap();
    names
        .into_iter()
        .map(|name| {
            let pttl: i64 = redis::cmd("PTTL").arg(&name).query(conn).unwrap();
            let bytes: u64 = redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(&name)
                .arg("SAMPLES")
                .arg(0)
                .query(conn)
                .unwrap();
            (name, pttl, bytes)
        })
        .collect()
}

/// The Redis key of `tag`'s set (found by name: its naming is not this test's).
fn tag_key(conn: &mut redis::Connection, tag: &str) -> String {
    let names: Vec<String> = redis::cmd("KEYS")
        .arg(format!("*{tag}"))
        .query(conn)
        .unwrap();
    assert_eq!(names.len(), 1, "one set for {tag}: {names:?}");
    names.into_iter().next().unwrap()
}

fn used_memory(conn: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("memory").query(conn).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory in INFO memory")
}

#[test]
fn distinct_keys_loaded_once_leave_one_redis_key_each_living_no_longer_than_its_value() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let mut c = conn(&url);
    let rt = runtime();
    let before = used_memory(&mut c);
    rt.block_on(async {
        let remote = RedisRemote::<String, String>::connect(RedisConfig::new(url.clone()))
            .await
            .unwrap();
        let cache: Cache<String, String> = Cache::builder()
            .ttl(TTL)
            .shared_store(remote)
            .build()
            .unwrap();
        let value = "x".repeat(value_bytes());
        for chunk in (0..KEYS).collect::<Vec<_>>().chunks(50) {
            let loads: Vec<_> = chunk
                .iter()
                .map(|&i| {
                    let (cache, value) = (cache.clone(), value.clone());
                    tokio::spawn(async move {
                        cache
                            .get_or_load(
                                format!("https://example.test/page/{i}"),
                                move || async move { Ok::<_, std::io::Error>(value) },
                            )
                            .await
                    })
                })
                .collect();
            for l in loads {
                l.await.unwrap().unwrap();
            }
        }
    });
    // The cache's connections gone (their buffers are not the keys' bytes).
    for _ in 0..200 {
        let clients: String = redis::cmd("CLIENT").arg("LIST").query(&mut c).unwrap();
        if clients.lines().count() == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let after = used_memory(&mut c);
    let ours = keys(&mut c);

    // The baseline: the entries' own bytes under the same names, plain `SET … PX`.
    let mut plain_bytes = 0;
    let mut values = Vec::new();
    for (name, pttl, _) in ours.iter().filter(|(n, _, _)| n.ends_with(":v")) {
        let bytes: Vec<u8> = redis::cmd("GET").arg(name).query(&mut c).unwrap();
        values.push((name.clone(), *pttl, bytes));
    }
    let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    for (name, pttl, _) in &values {
        let plain = "x".repeat(value_bytes());
        let _: () = redis::cmd("SET")
            .arg(name)
            .arg(plain)
            .arg("PX")
            .arg(*pttl)
            .query(&mut c)
            .unwrap();
        let bytes: u64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(name)
            .arg("SAMPLES")
            .arg(0)
            .query(&mut c)
            .unwrap();
        plain_bytes += bytes;
    }
    // From the same empty server: what is left of ours after FLUSHALL (the
    // script cache, this connection's buffers) counts for the plain keys too.
    let plain_used = used_memory(&mut c) - before;

    let our_bytes: u64 = ours.iter().map(|(_, _, b)| b).sum();
    let per_key = ours.len() as f64 / KEYS as f64;
    let bytes_ratio = our_bytes as f64 / plain_bytes as f64;
    let used_ratio = (after - before) as f64 / plain_used as f64;
    let longest = ours.iter().map(|(_, p, _)| *p).max().unwrap_or(0);
    println!(
        "footprint: {KEYS} distinct keys loaded once ({}-byte values, TTL {TTL:?}): \
         {} Redis keys ({per_key:.2} per cached key); MEMORY USAGE {} bytes per cached key \
         against {} for a plain SET … PX of the same value ({bytes_ratio:.2}×); INFO used_memory \
         grew {} bytes per cached key against {} ({used_ratio:.2}×); longest PTTL {longest} ms",
        value_bytes(),
        ours.len(),
        our_bytes / KEYS as u64,
        plain_bytes / KEYS as u64,
        (after - before) / KEYS as u64,
        plain_used / KEYS as u64,
    );
    assert!(per_key <= 1.1, "{per_key} Redis keys per cached key");
    assert!(
        bytes_ratio <= 1.3,
        "{bytes_ratio}× the bytes of a plain SET"
    );
    // Nothing without an expiry, nothing past what it guards: the entry
    // itself lives its TTL (no stale windows configured).
    for (name, pttl, _) in &ours {
        assert!(
            *pttl > 0 && *pttl <= TTL.as_millis() as i64,
            "{name} lives {pttl} ms"
        );
    }
}

#[test]
fn what_a_load_or_an_invalidation_leaves_expires_within_the_lease_and_its_margin() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let mut c = conn(&url);
    runtime().block_on(async {
        let lease = Duration::from_millis(200);
        // The margin: one more lease, at least 1 s.
        let held = lease + Duration::from_secs(1);
        let remote =
            RedisRemote::<String, String>::connect(RedisConfig::new(url.clone()).lease_ttl(lease))
                .await
                .unwrap();
        let cache: Cache<String, String> = Cache::builder()
            .ttl(TTL)
            .shared_store(remote.clone())
            .build()
            .unwrap();
        for i in 0..100 {
            let key = format!("k{i}");
            cache
                .get_or_load(key.clone(), || async {
                    Ok::<_, std::io::Error>("v".into())
                })
                .await
                .unwrap();
            cache.invalidate(&key).await.unwrap();
        }
        // A lease granted and given back, and one whose holder vanished.
        let given = remote
            .try_lease(&"given".to_string())
            .await
            .unwrap()
            .unwrap();
        remote
            .release(&"given".to_string(), &given, None)
            .await
            .unwrap();
        let _vanished = remote
            .try_lease(&"vanished".to_string())
            .await
            .unwrap()
            .unwrap();
        // Tombstones and marks only: each for the held time at most.
        for (name, pttl, _) in keys(&mut c) {
            assert!(
                pttl > 0 && pttl <= held.as_millis() as i64,
                "{name} lives {pttl} ms"
            );
        }
        let started = Instant::now();
        loop {
            let left: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
            if left == 0 {
                break;
            }
            assert!(
                started.elapsed() < held + Duration::from_millis(500),
                "{left} keys outlive the held time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

#[test]
fn an_invalidation_voids_a_load_in_flight_even_after_its_tombstone_expired() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let mut c = conn(&url);
    runtime().block_on(async {
        let remote = RedisRemote::<String, String>::connect(
            RedisConfig::new(url.clone()).lease_ttl(Duration::from_millis(100)),
        )
        .await
        .unwrap();
        let key = "voided".to_string();
        // Invalidated while the load runs; its write comes after every trace
        // of the key is gone from Redis.
        let lease = remote.try_lease(&key).await.unwrap().unwrap();
        remote.invalidate(&key).await.unwrap();
        wait_gone(&mut c, "hg:{voided}:ver", Duration::from_secs(5));
        let late = remote
            .put(&key, Some(&lease), &common::entry("old"), TTL)
            .await
            .unwrap();
        assert_eq!(late, PutOutcome::Superseded);
        assert!(remote.get(&key).await.unwrap().entry.is_none());

        // Both write orders once the version records are the only ones left
        // to decide: the holder whose lease lapsed is refused, first or last.
        for first_writes_first in [true, false] {
            let key = format!("orders-{first_writes_first}");
            let first = remote.try_lease(&key).await.unwrap().unwrap();
            wait_gone(
                &mut c,
                &format!("hg:{{{key}}}:lease"),
                Duration::from_secs(5),
            );
            let taker = remote.try_lease(&key).await.unwrap().unwrap();
            assert!(taker.version > first.version);
            let (old, new) = if first_writes_first {
                let old = remote
                    .put(&key, Some(&first), &common::entry("old"), TTL)
                    .await;
                let new = remote
                    .put(&key, Some(&taker), &common::entry("new"), TTL)
                    .await;
                (old, new)
            } else {
                let new = remote
                    .put(&key, Some(&taker), &common::entry("new"), TTL)
                    .await;
                let old = remote
                    .put(&key, Some(&first), &common::entry("old"), TTL)
                    .await;
                (old, new)
            };
            assert_eq!(old.unwrap(), PutOutcome::Superseded);
            assert!(matches!(new.unwrap(), PutOutcome::Stored { .. }));
            let stored = remote.get(&key).await.unwrap().entry.unwrap();
            assert_eq!(stored.value(), "new");
        }
    });
}

#[test]
fn versions_keep_growing_when_their_records_expire_or_redis_restarts_empty() {
    let mut server = RedisServer::start().unwrap();
    let url = server.url();
    let mut c = conn(&url);
    let rt = runtime();
    let remote = rt.block_on(async {
        RedisRemote::<String, String>::connect(
            RedisConfig::new(url.clone()).lease_ttl(Duration::from_millis(100)),
        )
        .await
        .unwrap()
    });
    let key = "grows".to_string();
    let mut last = 0;
    let mut step = |remote: &Arc<RedisRemote<String, String>>| {
        rt.block_on(async {
            let v = remote.invalidate(&key).await.unwrap();
            assert!(v > last, "version {v} after {last}");
            last = v;
            let lease = remote.try_lease(&key).await.unwrap().unwrap();
            assert!(lease.version > last);
            let PutOutcome::Stored { version } = remote
                .put(
                    &key,
                    Some(&lease),
                    &common::entry("v"),
                    Duration::from_millis(50),
                )
                .await
                .unwrap()
            else {
                panic!("the holder's write is refused");
            };
            assert!(version > lease.version);
            last = version;
        })
    };
    step(&remote);
    // The entry and every record expire: the key has no version left.
    wait_gone(&mut c, "hg:{grows}:v", Duration::from_secs(5));
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 0);
    step(&remote);
    server.restart().unwrap();
    let remote = rt.block_on(async {
        RedisRemote::<String, String>::connect(RedisConfig::new(server.url()))
            .await
            .unwrap()
    });
    step(&remote);
}

#[test]
fn a_tag_set_forgets_expired_keys_stays_bounded_and_lives_as_long_as_its_longest_key() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let mut c = conn(&url);
    runtime().block_on(async {
        let remote = RedisRemote::<String, String>::connect(RedisConfig::new(url.clone()))
            .await
            .unwrap();
        for i in 0..200 {
            remote
                .tag("crawl", &format!("short{i}"), Duration::from_millis(300))
                .await
                .unwrap();
        }
        let name = tag_key(&mut c, "crawl");
        let pttl: i64 = redis::cmd("PTTL").arg(&name).query(&mut c).unwrap();
        assert!((1..=300).contains(&pttl), "the set lives {pttl} ms");
        tokio::time::sleep(Duration::from_millis(400)).await;
        // Added to forever: the short-lived keys are forgotten, not kept.
        remote
            .tag("crawl", "long", Duration::from_secs(30))
            .await
            .unwrap();
        let members: i64 = redis::cmd("ZCARD").arg(&name).query(&mut c).unwrap();
        assert_eq!(members, 1);
        let pttl: i64 = redis::cmd("PTTL").arg(&name).query(&mut c).unwrap();
        assert!((29_000..=30_000).contains(&pttl), "the set lives {pttl} ms");
        assert_eq!(remote.take_tagged("crawl").await.unwrap(), vec!["long"]);

        // An origin that tags everything it serves with one tag: the set
        // keeps the longest-lived keys and never more than the bound.
        let added = MAX_TAGGED_KEYS + 100;
        let remote = &remote;
        let mut batch = Vec::new();
        for i in 0..added {
            batch.push(async move {
                remote
                    .tag(
                        "all",
                        &format!("key{i}"),
                        Duration::from_secs(60 + i as u64),
                    )
                    .await
            });
            if batch.len() == 256 || i + 1 == added {
                for r in futures_util::future::join_all(batch.drain(..)).await {
                    r.unwrap();
                }
            }
        }
        let name = tag_key(&mut c, "all");
        let members: i64 = redis::cmd("ZCARD").arg(&name).query(&mut c).unwrap();
        assert_eq!(members, MAX_TAGGED_KEYS as i64);
        let kept: Vec<String> = redis::cmd("ZRANGE")
            .arg(&name)
            .arg(0)
            .arg(0)
            .query(&mut c)
            .unwrap();
        assert_eq!(kept, vec!["key100"], "the soonest to expire went first");
    });
}

/// `cmdstat_<name>` calls, script-internal ones included.
fn calls(conn: &mut redis::Connection, name: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_fleet_view_reads_a_bounded_sample_and_forgets_stale_records() {
    let server = RedisServer::start().unwrap();
    let rt = runtime();
    let remote = rt
        .block_on(RedisRemote::<String, String>::connect(RedisConfig::new(
            server.url(),
        )))
        .unwrap();
    let mut c = conn(&server.url());
    let max_age = Duration::from_secs(5);
    // A small fleet: every fresh record, this one's included.
    for i in 0..5 {
        rt.block_on(remote.exchange_instance_record(&format!("i{i}"), &format!("r{i}"), max_age))
            .unwrap();
    }
    let mut all = rt
        .block_on(remote.exchange_instance_record("i0", "r0", max_age))
        .unwrap();
    all.sort();
    assert_eq!(all, ["r0", "r1", "r2", "r3", "r4"]);
    // The adversary: 2,000 records of instances long gone, and 1,000 live ones.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    for i in 0..2000 {
        let _: () = redis::cmd("HSET")
            .arg("hginstances")
            .arg(format!("gone{i}"))
            .arg(format!("{} old", now_ms - 60_000))
            .query(&mut c)
            .unwrap();
    }
    for i in 0..1000 {
        let _: () = redis::cmd("HSET")
            .arg("hginstances")
            .arg(format!("live{i}"))
            .arg(format!("{now_ms} live{i}"))
            .query(&mut c)
            .unwrap();
    }
    let (full0, sampled0) = (calls(&mut c, "hgetall"), calls(&mut c, "hrandfield"));
    let got = rt
        .block_on(remote.exchange_instance_record("i0", "r0", max_age))
        .unwrap();
    // A sample of twice the limit, two thirds of it stale: the live part only.
    assert!(
        (1..=herdguard_redis::MAX_INSTANCES).contains(&got.len()),
        "{} records returned",
        got.len()
    );
    assert!(got.iter().all(|r| r != "old"), "a stale record returned");
    assert_eq!(
        (
            calls(&mut c, "hgetall") - full0,
            calls(&mut c, "hrandfield") - sampled0
        ),
        (0, 1),
        "a call reads a sample, not every record"
    );
    // Each call removes the stale records it reads: they are soon gone.
    let mut rounds = 0;
    loop {
        let held: usize = redis::cmd("HLEN").arg("hginstances").query(&mut c).unwrap();
        if held <= 1005 {
            break;
        }
        rounds += 1;
        assert!(rounds <= 500, "{held} records left after {rounds} calls");
        rt.block_on(remote.exchange_instance_record("i0", "r0", max_age))
            .unwrap();
    }
    // Once the stale records are gone, a sample fills the limit again.
    let got = rt
        .block_on(remote.exchange_instance_record("i0", "r0", max_age))
        .unwrap();
    assert_eq!(got.len(), herdguard_redis::MAX_INSTANCES);
    println!("fleet view: 2,000 stale records forgotten in {rounds} calls");
}
