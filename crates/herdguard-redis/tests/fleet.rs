//! A fleet of worker processes against one real redis-server.

mod common;

use std::time::Duration;

use common::{count, entry, redis_conn, u, wait_count, wait_gone, Worker};
use herdguard::{Cache, Remote};
use herdguard_redis::{RedisConfig, RedisRemote};
use herdguard_testkit::RedisServer;

#[test]
fn eight_processes_one_cold_key_make_one_load() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let mut workers: Vec<Worker> = (0..8)
        .map(|_| Worker::start(&url, &["--callers", "64", "--loader-ms", "100"]))
        .collect();
    for w in &mut workers {
        w.go("cold");
    }
    let results: Vec<_> = workers.iter_mut().map(Worker::result).collect();
    let mut values = std::collections::BTreeSet::new();
    for r in &results {
        assert_eq!(u(r, "ok"), 64, "{r}");
        assert_eq!(u(r, "errors"), 0, "{r}");
        for v in r["values"].as_array().unwrap() {
            values.insert(v.as_str().unwrap().to_string());
        }
    }
    assert_eq!(
        values.len(),
        1,
        "every caller got the one value: {values:?}"
    );
    assert_eq!(
        count(&mut redis_conn(&url), "cold"),
        1,
        "exactly one origin call: {results:?}"
    );
    let local: u64 = results.iter().map(|r| u(r, "local_loads")).sum();
    assert_eq!(local, 1);
    // The lock metrics of a healthy fleet: one lease, nothing duplicated,
    // every wait answered by the holder's value.
    let lease = |name: &str| results.iter().map(|r| u(&r["lease"], name)).sum::<u64>();
    assert_eq!(lease("leases_acquired"), 1, "{results:?}");
    assert_eq!(lease("lease_takeovers"), 0);
    assert_eq!(lease("duplicate_loads"), 0);
    assert_eq!(lease("lease_wait_limits"), 0);
    assert!(lease("lease_waits") >= 1, "the others waited on the lease");
    assert_eq!(lease("lease_wait_answers"), lease("lease_waits"));
    assert_eq!(lease("lease_wait_time_count"), lease("lease_waits"));
}

#[test]
fn killed_lease_holder_is_taken_over_after_the_lease_expires() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let mut conn = redis_conn(&url);
    let flags = [
        "--callers",
        "16",
        "--lease-ttl-ms",
        "600",
        "--poll-ms",
        "100",
    ];
    let mut holder = Worker::start(&url, &[&flags[..], &["--loader-ms", "20000"]].concat());
    let mut others: Vec<Worker> = (0..2)
        .map(|_| Worker::start(&url, &[&flags[..], &["--loader-ms", "100"]].concat()))
        .collect();
    holder.go("crash");
    wait_count(&mut conn, "crash", 1);
    for w in &mut others {
        w.go("crash");
    }
    std::thread::sleep(Duration::from_millis(100));
    holder.kill();
    for w in &mut others {
        let r = w.result();
        assert_eq!(u(&r, "ok"), 16, "{r}");
        assert_eq!(u(&r, "errors"), 0, "{r}");
    }
    assert_eq!(
        count(&mut conn, "crash"),
        2,
        "the dead holder's load and one takeover"
    );
}

#[test]
fn a_takeover_after_sigkill_moves_the_lease_metrics() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let mut conn = redis_conn(&url);
    let flags = [
        "--callers",
        "4",
        "--lease-ttl-ms",
        "600",
        "--poll-ms",
        "100",
    ];
    let mut holder = Worker::start(&url, &[&flags[..], &["--loader-ms", "20000"]].concat());
    let mut others: Vec<Worker> = (0..2)
        .map(|_| Worker::start(&url, &[&flags[..], &["--loader-ms", "100"]].concat()))
        .collect();
    holder.go("takeover");
    wait_count(&mut conn, "takeover", 1);
    for w in &mut others {
        w.go("takeover");
    }
    std::thread::sleep(Duration::from_millis(100));
    holder.kill();
    let results: Vec<_> = others.iter_mut().map(Worker::result).collect();
    let lease = |name: &str| results.iter().map(|r| u(&r["lease"], name)).sum::<u64>();
    assert_eq!(lease("lease_takeovers"), 1, "{results:?}");
    assert_eq!(lease("duplicate_loads"), 1, "{results:?}");
    assert_eq!(lease("lease_waits"), 2, "both waited on the dead holder");
    assert_eq!(lease("lease_wait_time_count"), 2);
    // They waited until the dead holder's lease expired: 600 ms after its
    // last renewal, at most 200 ms (a third of the TTL) before the kill,
    // which came 100 ms after they began: about 500 ms; the bound leaves room
    // for a slow machine.
    for r in &results {
        assert!(u(&r["lease"], "lease_wait_time_sum_ms") >= 300, "{r}");
    }
    // The one that did not take over got the taker's value.
    assert_eq!(lease("lease_wait_answers"), 1, "{results:?}");
    assert_eq!(lease("lease_wait_limits"), 0);
    assert_eq!(count(&mut conn, "takeover"), 2);
}

#[test]
fn a_wait_that_reaches_its_limit_is_counted_and_loads_itself() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let mut conn = redis_conn(&url);
    // The holder renews its lease but takes far longer than the waiter waits.
    let mut holder = Worker::start(&url, &["--callers", "1", "--loader-ms", "3000"]);
    let mut waiter = Worker::start(
        &url,
        &[
            "--callers",
            "4",
            "--loader-ms",
            "50",
            "--wait-limit-ms",
            "300",
        ],
    );
    holder.go("slow");
    wait_count(&mut conn, "slow", 1);
    waiter.go("slow");
    let r = waiter.result();
    assert_eq!(u(&r, "ok"), 4, "{r}");
    assert_eq!(u(&r["lease"], "lease_waits"), 1, "{r}");
    assert_eq!(u(&r["lease"], "lease_wait_limits"), 1, "{r}");
    assert_eq!(u(&r["lease"], "duplicate_loads"), 1, "{r}");
    assert_eq!(u(&r["lease"], "leases_acquired"), 0, "{r}");
    assert_eq!(u(&r["lease"], "lease_wait_answers"), 0, "{r}");
    assert_eq!(u(&r, "local_loads"), 1, "{r}");
    let h = holder.result();
    assert_eq!(u(&h["lease"], "leases_acquired"), 1, "{h}");
    assert_eq!(u(&h["lease"], "duplicate_loads"), 0, "{h}");
}

#[test]
fn redis_killed_mid_run_degrades_then_coordination_resumes() {
    let mut redis = RedisServer::start().unwrap();
    let url = redis.url();
    let mut workers: Vec<Worker> = (0..3)
        .map(|_| {
            Worker::start(
                &url,
                &["--callers", "16", "--loader-ms", "100", "--poll-ms", "100"],
            )
        })
        .collect();
    let round = |name: &str, workers: &mut Vec<Worker>| -> Vec<serde_json::Value> {
        for w in workers.iter_mut() {
            w.go(name);
        }
        let results: Vec<_> = workers.iter_mut().map(Worker::result).collect();
        for r in &results {
            assert_eq!(u(r, "errors"), 0, "no caller error: {r}");
            assert_eq!(u(r, "ok"), 16, "{r}");
            assert!(
                u(r, "local_loads") <= 1,
                "at most one load per process per key: {r}"
            );
        }
        results
    };
    let total = |rs: &[serde_json::Value]| rs.iter().map(|r| u(r, "local_loads")).sum::<u64>();
    assert_eq!(total(&round("before", &mut workers)), 1);

    redis.kill();
    for i in 0..3 {
        round(&format!("down{i}"), &mut workers);
    }

    redis.restart().unwrap();
    // Reconnection and the core's back-off take a moment: within a bounded
    // number of rounds, two in a row must make exactly one load fleet-wide.
    let mut in_a_row = 0;
    for i in 0..40 {
        if total(&round(&format!("after{i}"), &mut workers)) == 1 {
            in_a_row += 1;
            if in_a_row == 2 {
                return;
            }
        } else {
            in_a_row = 0;
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    panic!("coordination did not resume after the restart");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn invalidation_during_a_load_voids_its_result() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let mut conn = redis_conn(&url);
    let mut loader = Worker::start(
        &url,
        &["--callers", "4", "--loader-ms", "800", "--value", "old"],
    );
    loader.go("inv");
    wait_count(&mut conn, "inv", 1);

    let rt = runtime();
    rt.block_on(async {
        let remote = RedisRemote::<String, String>::connect(RedisConfig::new(url.clone()))
            .await
            .unwrap();
        let cache: Cache<String, String> = Cache::builder()
            .shared_store(remote.clone())
            .build()
            .unwrap();
        cache.invalidate(&"inv".to_string()).await.unwrap();

        let r = tokio::task::spawn_blocking(move || loader.result())
            .await
            .unwrap();
        assert_eq!(u(&r, "ok"), 4, "its own callers still get the value: {r}");
        assert_eq!(u(&r, "superseded"), 1, "the write was refused: {r}");
        assert!(
            remote
                .get(&"inv".to_string())
                .await
                .unwrap()
                .entry
                .is_none(),
            "not stored in Redis"
        );

        let v = cache
            .get_or_load("inv".to_string(), || async {
                Ok::<_, std::io::Error>("new".to_string())
            })
            .await
            .unwrap();
        assert_eq!(*v, "new", "the next get reloads");
        assert_eq!(
            remote
                .get(&"inv".to_string())
                .await
                .unwrap()
                .entry
                .unwrap()
                .value(),
            "new"
        );
    });
}

#[test]
fn late_writer_without_renewal_does_not_overwrite_the_newer_value() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let mut conn = redis_conn(&url);
    let common = [
        "--callers",
        "4",
        "--lease-ttl-ms",
        "300",
        "--no-renew",
        "--poll-ms",
        "50",
    ];
    let mut slow = Worker::start(
        &url,
        &[&common[..], &["--loader-ms", "1500", "--value", "late"]].concat(),
    );
    let mut fast = Worker::start(
        &url,
        &[&common[..], &["--loader-ms", "50", "--value", "newer"]].concat(),
    );
    slow.go("late");
    wait_count(&mut conn, "late", 1);
    fast.go("late");
    let f = fast.result();
    assert_eq!(f["values"][0], "newer", "{f}");
    let s = slow.result();
    assert_eq!(u(&s, "superseded"), 1, "the late write was refused: {s}");
    assert_eq!(count(&mut conn, "late"), 2);

    runtime().block_on(async {
        let remote = RedisRemote::<String, String>::connect(RedisConfig::new(url.clone()))
            .await
            .unwrap();
        let stored = remote
            .get(&"late".to_string())
            .await
            .unwrap()
            .entry
            .expect("a stored value");
        assert_eq!(stored.value(), "newer");
    });
}

#[test]
fn after_a_redis_restart_coordination_resumes_before_any_request_pays() {
    let mut redis = RedisServer::start().unwrap();
    let url = redis.url();
    let mut workers: Vec<Worker> = (0..3)
        .map(|_| Worker::start(&url, &["--callers", "8", "--loader-ms", "100"]))
        .collect();
    for w in &mut workers {
        w.go("warm");
    }
    for w in &mut workers {
        assert_eq!(u(&w.result(), "errors"), 0);
    }
    redis.kill();
    // Every worker finds out by itself (its change feed drops), with no request.
    let lost = std::time::Instant::now();
    while workers.iter_mut().any(Worker::healthy) {
        assert!(
            lost.elapsed() < Duration::from_secs(3),
            "the outage went unnoticed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let noticed = lost.elapsed();
    redis.restart().unwrap();
    // Recovery is the background probe's job: within 1 s of Redis answering.
    let back = std::time::Instant::now();
    while !workers.iter_mut().all(Worker::healthy) {
        assert!(
            back.elapsed() < Duration::from_secs(1),
            "not recovered within 1 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    println!(
        "all 3 workers degraded {noticed:?} after the kill, and recovered {:?} after Redis answered",
        back.elapsed()
    );
    for w in &mut workers {
        w.go("cold");
    }
    let results: Vec<_> = workers.iter_mut().map(Worker::result).collect();
    for r in &results {
        assert_eq!(u(r, "errors"), 0, "{r}");
        assert_eq!(
            u(r, "remote_errors"),
            0,
            "no request found Redis broken: {r}"
        );
    }
    let loads: u64 = results.iter().map(|r| u(r, "local_loads")).sum();
    assert_eq!(loads, 1, "one origin call for the fleet: {results:?}");
    assert_eq!(count(&mut redis_conn(&url), "cold"), 1);
}

#[test]
fn garbage_under_one_key_costs_that_key_a_miss_and_nothing_else() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let mut conn = redis_conn(&url);
    // Bytes another release (or program) left under one key, and a lease key
    // without an expiry, which no lease of ours ever is.
    let _: () = redis::cmd("SET")
        .arg("hg:{bad}:v")
        .arg(b"\x09not an entry".as_slice())
        .query(&mut conn)
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg("hg:{odd}:v")
        .arg("field")
        .arg("a hash, not a string")
        .query(&mut conn)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("hg:{stuck}:lease")
        .arg("nobody")
        .query(&mut conn)
        .unwrap();
    let mut workers: Vec<Worker> = (0..4)
        .map(|_| Worker::start(&url, &["--callers", "16", "--loader-ms", "100"]))
        .collect();
    for key in ["bad", "odd", "stuck", "good"] {
        for w in &mut workers {
            w.go(key);
        }
        for w in &mut workers {
            let r = w.result();
            assert_eq!(u(&r, "errors"), 0, "{r}");
            assert_eq!(u(&r, "remote_errors"), 0, "not an outage: {r}");
        }
        assert_eq!(count(&mut conn, key), 1, "one origin call for {key}");
    }
}

/// A remote whose leases last `lease_ms` (renewed only when a test says so).
async fn leasing(url: &str, lease_ms: u64) -> std::sync::Arc<RedisRemote<String, String>> {
    RedisRemote::connect(
        RedisConfig::new(url.to_string()).lease_ttl(Duration::from_millis(lease_ms)),
    )
    .await
    .unwrap()
}

#[test]
fn a_grant_after_the_lease_was_given_back_is_no_takeover() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    runtime().block_on(async {
        let remote = leasing(&url, 5000).await;
        let key = "given".to_string();
        let first = remote.try_lease(&key).await.unwrap().expect("free");
        assert!(!first.taken_over);
        remote.release(&key, &first, None).await.unwrap();
        let second = remote.try_lease(&key).await.unwrap().expect("given back");
        assert!(!second.taken_over, "after a release");
        let stored = remote
            .put(&key, Some(&second), &entry("v"), Duration::from_secs(60))
            .await
            .unwrap();
        assert!(matches!(stored, herdguard::PutOutcome::Stored { .. }));
        let third = remote.try_lease(&key).await.unwrap().expect("given back");
        assert!(!third.taken_over, "after a fenced write");
    });
}

#[test]
fn a_holder_that_finishes_after_its_lease_lapsed_leaves_no_takeover_behind() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let mut conn = redis_conn(&url);
    runtime().block_on(async {
        let remote = leasing(&url, 100).await;
        // The load outlives its lease (no renewal), nobody else wants the key,
        // and the holder's write still lands: no load was duplicated.
        let key = "late-put".to_string();
        let lease = remote.try_lease(&key).await.unwrap().expect("free");
        wait_gone(&mut conn, "hg:{late-put}:lease", Duration::from_secs(5));
        let stored = remote
            .put(&key, Some(&lease), &entry("v"), Duration::from_secs(60))
            .await
            .unwrap();
        assert!(matches!(stored, herdguard::PutOutcome::Stored { .. }));
        let next = remote.try_lease(&key).await.unwrap().expect("free");
        assert!(!next.taken_over, "the late write gave its mark back");
        // The same with a load that stored nothing.
        let key = "late-release".to_string();
        let lease = remote.try_lease(&key).await.unwrap().expect("free");
        wait_gone(&mut conn, "hg:{late-release}:lease", Duration::from_secs(5));
        remote.release(&key, &lease, None).await.unwrap();
        let next = remote.try_lease(&key).await.unwrap().expect("free");
        assert!(!next.taken_over, "the late release gave its mark back");
    });
}

#[test]
fn a_lapsed_lease_counts_as_taken_over_only_while_its_mark_lasts() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let mut conn = redis_conn(&url);
    runtime().block_on(async {
        let remote = leasing(&url, 100).await;
        // Granted as soon as the holder's lease lapsed: a take-over.
        let key = "soon".to_string();
        let dead = remote.try_lease(&key).await.unwrap().expect("free");
        wait_gone(&mut conn, "hg:{soon}:lease", Duration::from_secs(5));
        let taker = remote.try_lease(&key).await.unwrap().expect("lapsed");
        assert!(taker.taken_over);
        // The first holder comes back late: fenced, and it cannot clear the
        // taker's mark, so the taker's own lapse is a take-over too.
        let late = remote
            .put(&key, Some(&dead), &entry("old"), Duration::from_secs(60))
            .await;
        assert_eq!(late.unwrap(), herdguard::PutOutcome::Superseded);
        remote.release(&key, &dead, None).await.unwrap();
        wait_gone(&mut conn, "hg:{soon}:lease", Duration::from_secs(5));
        let third = remote.try_lease(&key).await.unwrap().expect("lapsed");
        assert!(third.taken_over, "the taker's mark is the taker's");

        // A holder that vanished: its mark outlives the lease by a bounded
        // margin (one more lease TTL, at least 1 s), not for a day.
        let key = "long-after".to_string();
        let _vanished = remote.try_lease(&key).await.unwrap().expect("free");
        let pttl: i64 = redis::cmd("PTTL")
            .arg("hg:{long-after}:held")
            .query(&mut conn)
            .unwrap();
        assert!((1..=1100).contains(&pttl), "the mark lasts {pttl} ms");
        wait_gone(&mut conn, "hg:{long-after}:held", Duration::from_secs(5));
        let next = remote.try_lease(&key).await.unwrap().expect("free");
        assert!(
            !next.taken_over,
            "a grant long after the lapse is a new load"
        );
    });
}

#[test]
fn a_renewed_lease_keeps_its_mark_past_the_first_ttl() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let mut conn = redis_conn(&url);
    runtime().block_on(async {
        // A 400 ms lease renewed every 40 ms: a renewal may come up to 360 ms
        // late on a loaded machine and still find the lease its own.
        let remote = leasing(&url, 400).await;
        let key = "renewed".to_string();
        let lease = remote.try_lease(&key).await.unwrap().expect("free");
        // Renewed for well past the mark's first expiry (1.4 s), then dies.
        for _ in 0..50 {
            assert!(remote.renew(&key, &lease).await.unwrap());
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        wait_gone(&mut conn, "hg:{renewed}:lease", Duration::from_secs(5));
        let taker = remote.try_lease(&key).await.unwrap().expect("lapsed");
        assert!(taker.taken_over, "the holder was loading until it died");
    });
}

#[test]
fn a_load_that_outlived_its_lease_does_not_count_a_takeover_in_the_next_process() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let mut conn = redis_conn(&url);
    runtime().block_on(async {
        let slow_remote = RedisRemote::<String, String>::connect(
            RedisConfig::new(url.clone())
                .lease_ttl(Duration::from_millis(150))
                .renew(false),
        )
        .await
        .unwrap();
        let slow: Cache<String, String> =
            Cache::builder().shared_store(slow_remote).build().unwrap();
        let v = slow
            .get_or_load("outlived".to_string(), || async {
                tokio::time::sleep(Duration::from_millis(600)).await;
                Ok::<_, std::io::Error>("v".to_string())
            })
            .await
            .unwrap();
        assert_eq!(*v, "v");
        // Its write landed (nobody took over); later Redis evicts the value.
        let _: i64 = redis::cmd("DEL")
            .arg("hg:{outlived}:v")
            .query(&mut conn)
            .unwrap();
        let next: Cache<String, String> = Cache::builder()
            .shared_store(leasing(&url, 5000).await)
            .build()
            .unwrap();
        next.get_or_load("outlived".to_string(), || async {
            Ok::<_, std::io::Error>("v2".to_string())
        })
        .await
        .unwrap();
        let m = next.metrics();
        assert_eq!(m.leases_acquired, 1);
        assert_eq!(m.lease_takeovers, 0, "no holder was taken over");
        assert_eq!(m.duplicate_loads, 0, "no load was duplicated");
    });
}

/// A mixed fleet on one server: the per-key feed and the broadcast feed
/// (`broadcast_feed(true)`, or a release without tracking). Off a cluster
/// every process announces its changes on the change channel, so each hears
/// the other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_key_and_a_broadcast_feed_process_hear_each_other_on_one_server() {
    let redis = RedisServer::start().unwrap();
    let cache = |broadcast: bool| {
        let config = RedisConfig::new(redis.url()).broadcast_feed(broadcast);
        async move {
            let remote = RedisRemote::<String, String>::connect(config)
                .await
                .expect("connect");
            assert_eq!(remote.feed_per_key(), !broadcast);
            Cache::builder()
                .ttl(Duration::from_secs(60))
                .shared_store(remote)
                .build()
                .expect("build")
        }
    };
    let (per_key, broadcast) = (cache(false).await, cache(true).await);
    let keys = |side: &str| (0..6).map(|i| format!("{side}{i}")).collect::<Vec<_>>();
    common::changes_reach(&per_key, &broadcast, &keys("heard")).await;
    common::changes_reach(&broadcast, &per_key, &keys("told")).await;
}
