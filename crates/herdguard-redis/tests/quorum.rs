//! Quorum leases (Redlock) against real servers: one data store and five
//! independent lock servers, each a `redis-server` of its own. Each "node" is a
//! `Cache` with its own `RedisRemote` (its own connections), as in `faults.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use herdguard::{Cache, PutOutcome, Remote};
use herdguard_redis::{RedisConfig, RedisRemote, RedisSetupError};
use herdguard_testkit::RedisServer;

type Node = Cache<String, String>;

mod common;
use common::{entry, stampede, wait_gone};

struct Servers {
    data: RedisServer,
    locks: Vec<RedisServer>,
}

impl Servers {
    fn start() -> Servers {
        Servers {
            data: RedisServer::start().expect("redis-server"),
            locks: (0..5)
                .map(|_| RedisServer::start().expect("redis-server"))
                .collect(),
        }
    }

    fn config(&self) -> RedisConfig {
        RedisConfig::new(self.data.url())
            .lease_quorum(self.locks.iter().map(RedisServer::url))
            .lease_ttl(Duration::from_secs(2))
    }
}

async fn remote(config: RedisConfig) -> Arc<RedisRemote<String, String>> {
    RedisRemote::connect(config).await.expect("connect")
}

async fn node(config: RedisConfig) -> Node {
    Cache::builder()
        .ttl(Duration::from_secs(60))
        .shared_store(remote(config).await)
        .fleet_poll_interval(Duration::from_millis(200))
        .shared_store_probe_interval(Duration::from_millis(100))
        .build()
        .expect("build")
}

fn lock_keys(server: &RedisServer) -> Vec<String> {
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    redis::cmd("KEYS").arg("*").query(&mut conn).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_of_five_lock_servers_killed_concurrent_callers_make_one_origin_call() {
    let mut servers = Servers::start();
    let nodes = [
        node(servers.config()).await,
        node(servers.config()).await,
        node(servers.config()).await,
    ];
    let (calls, errors) = stampede(&nodes, "all-up", 32).await;
    assert_eq!((calls, errors), (1, 0), "all five up");

    servers.locks[0].kill();
    servers.locks[3].kill();
    for round in 0..5 {
        let (calls, errors) = stampede(&nodes, &format!("two-down{round}"), 32).await;
        assert_eq!(errors, 0, "round {round}");
        assert_eq!(calls, 1, "round {round}: one origin call for 96 callers");
    }
    for n in &nodes {
        assert!(n.shared_store_healthy(), "three of five is a majority");
        assert_eq!(n.metrics().degradations, 0);
    }
    // Every lease was given back on every live lock server.
    for (i, s) in servers.locks.iter().enumerate() {
        if s.pid().is_some() {
            assert_eq!(lock_keys(s), Vec::<String>::new(), "lock server {i}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_three_of_five_killed_the_cache_degrades_fails_no_caller_and_recovers() {
    let mut servers = Servers::start();
    let nodes = [node(servers.config()).await, node(servers.config()).await];
    assert_eq!(stampede(&nodes, "before", 32).await, (1, 0));

    for i in [1, 2, 4] {
        servers.locks[i].kill();
    }
    for round in 0..3 {
        let (calls, errors) = stampede(&nodes, &format!("down{round}"), 32).await;
        assert_eq!(errors, 0, "round {round}: no caller fails");
        assert!(
            calls <= nodes.len(),
            "round {round}: in-process single flight, at most one load per node: {calls}"
        );
    }
    for n in &nodes {
        assert!(!n.shared_store_healthy(), "a minority cannot grant leases");
        assert!(n.metrics().degradations >= 1, "{:?}", n.metrics());
    }
    // A hit while degraded says it could not be confirmed.
    let copy = nodes[0]
        .get_or_load("down0".to_string(), || async {
            Ok::<_, std::io::Error>("unused".to_string())
        })
        .await
        .unwrap();
    assert_eq!(copy.served(), herdguard::Served::Unconfirmed);

    // Restarted (empty) on the same ports: the probe finds a majority again.
    for i in [1, 2, 4] {
        servers.locks[i].restart().unwrap();
    }
    let back = Instant::now();
    while !nodes.iter().all(Node::shared_store_healthy) {
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "coordination did not resume"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("quorum back: nodes healthy after {:?}", back.elapsed());
    assert_eq!(stampede(&nodes, "after", 32).await, (1, 0));
}

/// The Kleppmann scenario: holder A's lock is lost on a majority without A
/// knowing (three lock servers restart empty, as after a crash without
/// persistence); B takes the lease. Fencing in the data store refuses A's
/// write in both orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_lost_its_majority_cannot_write_over_a_newer_value() {
    for a_writes_first in [true, false] {
        let mut servers = Servers::start();
        let a = remote(servers.config().renew(false)).await;
        let b = remote(servers.config().renew(false)).await;
        let key = "fenced".to_string();
        let lease_a = a.try_lease(&key).await.unwrap().expect("A takes the lease");
        assert_eq!(
            b.try_lease(&key).await.unwrap(),
            None,
            "B cannot while A holds a majority"
        );
        for i in [0, 1, 2] {
            servers.locks[i].restart().unwrap();
        }
        // The first command on each restarted server finds its connection
        // broken (and reconnects): that attempt fails as unavailable.
        let mut lease_b = None;
        for _ in 0..20 {
            match b.try_lease(&key).await {
                Ok(lease) => {
                    lease_b = lease;
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let lease_b = lease_b.expect("B takes the lease on the restarted majority");
        assert!(lease_b.version > lease_a.version);
        assert!(
            !a.renew(&key, &lease_a).await.unwrap(),
            "A finds out at its next renewal, if it renews at all"
        );

        let retain = Duration::from_secs(60);
        if a_writes_first {
            let late = a.put(&key, Some(&lease_a), &entry("old"), retain).await;
            assert_eq!(late.unwrap(), PutOutcome::Superseded, "A writes first");
            let fresh = b.put(&key, Some(&lease_b), &entry("new"), retain).await;
            assert!(matches!(fresh.unwrap(), PutOutcome::Stored { .. }));
        } else {
            let fresh = b.put(&key, Some(&lease_b), &entry("new"), retain).await;
            assert!(matches!(fresh.unwrap(), PutOutcome::Stored { .. }));
            let late = a.put(&key, Some(&lease_a), &entry("old"), retain).await;
            assert_eq!(late.unwrap(), PutOutcome::Superseded, "A writes last");
        }
        let stored = a.get(&key).await.unwrap().entry.expect("an entry");
        assert_eq!(stored.value(), "new", "a_writes_first = {a_writes_first}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_needs_a_majority_of_the_lock_servers() {
    let mut servers = Servers::start();
    servers.locks[0].kill();
    servers.locks[1].kill();
    let r = remote(servers.config()).await;
    assert_eq!(r.lease_quorum(), Some((5, 3)));
    let key = "late".to_string();
    let lease = r.try_lease(&key).await.unwrap().expect("3 of 5 grant");
    r.release(&key, &lease, None).await.unwrap();
    // The two that were down at start come back, and two others go: the
    // majority now needs the late two, connected at their next use.
    servers.locks[0].restart().unwrap();
    servers.locks[1].restart().unwrap();
    servers.locks[2].kill();
    servers.locks[3].kill();
    let again = r
        .try_lease(&key)
        .await
        .unwrap()
        .expect("granted by the late two and the fifth");
    for i in [0, 1, 4] {
        assert_eq!(lock_keys(&servers.locks[i]).len(), 1, "lock server {i}");
    }
    r.release(&key, &again, None).await.unwrap();
    for i in [0, 1, 4] {
        assert!(lock_keys(&servers.locks[i]).is_empty(), "released on {i}");
    }

    servers.locks[4].kill();
    match RedisRemote::<String, String>::connect(servers.config()).await {
        Err(RedisSetupError::QuorumUnreachable { reason }) => {
            assert!(reason.contains("2 of 5"), "{reason}")
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("connected with 2 of 5 lock servers"),
    }
}

/// The counters of quorum leases: a split vote made deterministic — two lock
/// servers hold the lock for someone else and a third is frozen, so the two
/// free ones grant and the vote waits for the frozen one's timeout before it
/// can tell there is no majority.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_votes_and_lock_server_failures_are_counted() {
    let mut servers = Servers::start();
    let r = remote(servers.config()).await;
    let key = "split".to_string();
    let lock = format!("hg:{{{key}}}:lock");
    let zero = r.quorum_stats().expect("quorum leases");
    assert_eq!(
        (zero.granted, zero.split_votes, zero.unavailable),
        (0, 0, 0)
    );
    assert!(
        zero.server_failures.iter().all(|(_, n)| *n == 0),
        "{zero:?}"
    );

    for s in &servers.locks[..2] {
        let mut conn = redis::Client::open(s.url())
            .unwrap()
            .get_connection()
            .unwrap();
        redis::cmd("SET")
            .arg(&lock)
            .arg("someone-else")
            .arg("PX")
            .arg(60_000)
            .query::<()>(&mut conn)
            .unwrap();
    }
    servers.locks[2].pause().unwrap();
    assert_eq!(r.try_lease(&key).await.unwrap(), None, "2 of 5 granted");
    let split = r.quorum_stats().unwrap();
    assert_eq!(
        split.split_votes, 3,
        "the vote and its two retries: {split:?}"
    );
    assert_eq!((split.granted, split.unavailable), (0, 0), "{split:?}");
    let failures: Vec<u64> = split.server_failures.iter().map(|(_, n)| *n).collect();
    assert!(
        failures[2] >= 3,
        "the frozen server failed each vote: {split:?}"
    );
    for i in [0, 1, 3, 4] {
        assert_eq!(failures[i], 0, "lock server {i} answered: {split:?}");
    }
    assert_eq!(split.server_failures[2].0, servers.locks[2].url());
    // Nothing was left behind on the two that granted.
    for i in [3, 4] {
        assert!(lock_keys(&servers.locks[i]).is_empty(), "given back on {i}");
    }

    servers.locks[2].resume().unwrap();
    for s in &servers.locks[..2] {
        let mut conn = redis::Client::open(s.url())
            .unwrap()
            .get_connection()
            .unwrap();
        redis::cmd("DEL").arg(&lock).query::<()>(&mut conn).unwrap();
    }
    let lease = r.try_lease(&key).await.unwrap().expect("a majority grants");
    r.release(&key, &lease, None).await.unwrap();
    assert_eq!(r.quorum_stats().unwrap().granted, 1);

    for i in [0, 1, 2] {
        servers.locks[i].kill();
    }
    assert!(r.try_lease(&key).await.is_err(), "no majority answers");
    let down = r.quorum_stats().unwrap();
    assert_eq!((down.unavailable, down.split_votes), (1, 3), "{down:?}");
}

/// The held mark of quorum leases, as of single-server ones (see `fleet.rs`):
/// a holder that wrote after its lease lapsed, with nobody taking over, leaves
/// no take-over for the next grant; a grant right after a lapse is one; a
/// grant after the mark's bounded margin is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_lease_counts_a_takeover_only_after_a_lapse_nobody_gave_back() {
    let servers = Servers::start();
    let r = remote(servers.config().lease_ttl(Duration::from_millis(100))).await;
    let mut conn = redis::Client::open(servers.data.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let lapse = Duration::from_secs(5);
    let key = "q-late".to_string();
    let lease = r.try_lease(&key).await.unwrap().expect("free");
    wait_gone(&mut conn, "hg:{q-late}:lease", lapse);
    let late = r
        .put(&key, Some(&lease), &entry("v"), Duration::from_secs(60))
        .await
        .unwrap();
    assert!(matches!(late, PutOutcome::Stored { .. }));
    let next = r.try_lease(&key).await.unwrap().expect("free");
    assert!(!next.taken_over, "the late write gave its mark back");

    wait_gone(&mut conn, "hg:{q-late}:lease", lapse);
    let taker = r.try_lease(&key).await.unwrap().expect("lapsed");
    assert!(taker.taken_over, "granted right after a lapse");

    wait_gone(&mut conn, "hg:{q-late}:held", lapse);
    let fresh = r.try_lease(&key).await.unwrap().expect("lapsed");
    assert!(!fresh.taken_over, "granted long after the lapse");
}
