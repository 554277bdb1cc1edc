//! Redis Sentinel: a primary, a replica and three sentinels, all real servers
//! started by the test; the primary is killed mid-run and the remotes follow
//! the promoted replica (`redis+sentinel://…` URL).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herdguard::Cache;
use herdguard_redis::{RedisConfig, RedisRemote};
use herdguard_testkit::{RedisServer, Sentinel};

type Node = Cache<String, String>;

mod common;
use common::stampede;

const NAME: &str = "hgprimary";

fn conn(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(1))
        .unwrap()
}

/// Polls `ready` every 50 ms until it holds, for at most `limit`.
fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "{what} not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The port the sentinel at `port` names as the primary now.
fn primary_port(port: u16) -> Option<u16> {
    let addr: Option<(String, String)> = redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(NAME)
        .query(&mut conn(port))
        .ok()?;
    addr?.1.parse().ok()
}

async fn node(url: &str) -> Node {
    let remote = RedisRemote::<String, String>::connect(RedisConfig::new(url))
        .await
        .expect("connect through the sentinels");
    Cache::builder()
        .ttl(Duration::from_secs(60))
        .shared_store(remote)
        .fleet_poll_interval(Duration::from_millis(200))
        .shared_store_probe_interval(Duration::from_millis(100))
        .build()
        .expect("build")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_primary_fails_no_caller_and_coordination_resumes_on_the_promoted_replica() {
    let mut primary = RedisServer::start().unwrap();
    let replica =
        RedisServer::start_with(&["--replicaof", "127.0.0.1", &primary.port().to_string()])
            .unwrap();
    wait_until("replication link up", Duration::from_secs(10), || {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut conn(replica.port()))
            .unwrap();
        info.contains("master_link_status:up")
    });
    let sentinels: Vec<Sentinel> = (0..3)
        .map(|_| Sentinel::start(NAME, primary.port(), 2, Duration::from_millis(1000)).unwrap())
        .collect();
    // Sentinels find the replica and each other through the primary (hello
    // messages every 2 s): a failover needs that.
    for s in &sentinels {
        wait_until(
            "sentinels know the topology",
            Duration::from_secs(20),
            || {
                let mut c = conn(s.port());
                let others: Vec<redis::Value> = redis::cmd("SENTINEL")
                    .arg("SENTINELS")
                    .arg(NAME)
                    .query(&mut c)
                    .unwrap();
                let replicas: Vec<redis::Value> = redis::cmd("SENTINEL")
                    .arg("REPLICAS")
                    .arg(NAME)
                    .query(&mut c)
                    .unwrap();
                others.len() == 2 && replicas.len() == 1
            },
        );
    }
    let url = format!(
        "redis+sentinel://{}/{NAME}",
        sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect::<Vec<_>>()
            .join(",")
    );
    let nodes = [node(&url).await, node(&url).await];
    assert_eq!(stampede(&nodes, "before", 16).await, (1, 0));

    // Watch the sentinels' answer from the side, to time the promotion.
    let promoted_after = Arc::new(Mutex::new(None));
    let stop = Arc::new(AtomicBool::new(false));
    let killed = Instant::now();
    primary.kill();
    let watcher = {
        let (promoted_after, stop, port) = (
            Arc::clone(&promoted_after),
            Arc::clone(&stop),
            sentinels[0].port(),
        );
        let replica_port = replica.port();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if primary_port(port) == Some(replica_port) {
                    *promoted_after.lock().unwrap() = Some(killed.elapsed());
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    let mut errors = 0;
    let mut rounds = 0;
    let resumed_after = loop {
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "coordination did not resume within 30 s of the kill"
        );
        let started = killed.elapsed();
        let (calls, e) = stampede(&nodes, &format!("during{rounds}"), 16).await;
        rounds += 1;
        errors += e;
        assert!(calls <= nodes.len(), "at most one load per node: {calls}");
        if calls == 1 {
            break started;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let promoted_after = *promoted_after.lock().unwrap();
    println!(
        "sentinel failover: {rounds} rounds, {errors} caller errors; sentinels named the replica \
         {promoted_after:?} after the kill; first round with one origin call fleet-wide started \
         {resumed_after:?} after the kill"
    );
    assert_eq!(errors, 0, "no caller failed during the failover");
    assert_eq!(primary_port(sentinels[1].port()), Some(replica.port()));
    for n in &nodes {
        assert!(
            n.metrics().degradations >= 1,
            "the nodes said they degraded"
        );
    }
    for i in 0..3 {
        assert_eq!(
            stampede(&nodes, &format!("after{i}"), 16).await,
            (1, 0),
            "coordinated on the promoted replica"
        );
    }
    // Invalidations reach the other node through the promoted primary's feed.
    nodes[0].invalidate(&"after0".to_string()).await.unwrap();
    let start = Instant::now();
    while nodes[1].get(&"after0".to_string()).is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the other node kept its copy"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
