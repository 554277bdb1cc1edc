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

async fn node(config: RedisConfig) -> Node {
    let remote = RedisRemote::<String, String>::connect(config)
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

/// A primary, its replica in sync, and three sentinels that know them both
/// and each other (`down-after-milliseconds 1000`).
struct Managed {
    primary: RedisServer,
    replica: RedisServer,
    sentinels: Vec<Sentinel>,
}

impl Managed {
    fn start() -> Managed {
        let primary = RedisServer::start().unwrap();
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
        Managed {
            primary,
            replica,
            sentinels,
        }
    }

    /// `redis+sentinel://…/NAME` over the three sentinels.
    fn url(&self) -> String {
        format!(
            "redis+sentinel://{}/{NAME}",
            self.sentinels
                .iter()
                .map(|s| format!("127.0.0.1:{}", s.port()))
                .collect::<Vec<_>>()
                .join(",")
        )
    }
}

/// Rounds of 16 callers per node on fresh keys from `killed` on, until one
/// makes a single origin call fleet-wide (at most 30 s); every round at most
/// one load per node. Returns (rounds, caller errors, when the last round started).
async fn rounds_until_coordinated(nodes: &[Node], killed: Instant) -> (usize, usize, Duration) {
    let mut errors = 0;
    let mut rounds = 0;
    loop {
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "coordination did not resume within 30 s of the kill"
        );
        let started = killed.elapsed();
        let (calls, e) = stampede(nodes, &format!("during{rounds}"), 16).await;
        rounds += 1;
        errors += e;
        assert!(calls <= nodes.len(), "at most one load per node: {calls}");
        if calls == 1 {
            return (rounds, errors, started);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_primary_fails_no_caller_and_coordination_resumes_on_the_promoted_replica() {
    let managed = Managed::start();
    let url = managed.url();
    let Managed {
        mut primary,
        replica,
        sentinels,
    } = managed;
    let nodes = [
        node(RedisConfig::new(&url)).await,
        node(RedisConfig::new(&url)).await,
    ];
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

    let (rounds, errors, resumed_after) = rounds_until_coordinated(&nodes, killed).await;
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
    while nodes[1].peek(&"after0".to_string()).is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the other node kept its copy"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Quorum leases with a Sentinel-managed data store: leases from three
/// independent lock servers, entries and fencing versions in the primary the
/// sentinels name. Killing the primary fails no caller; coordination resumes
/// on the promoted replica with the same lock servers, and survives one of
/// them failing after that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_leases_over_a_sentinel_data_store_survive_its_failover() {
    let mut managed = Managed::start();
    let mut locks: Vec<RedisServer> = (0..3).map(|_| RedisServer::start().unwrap()).collect();
    let config = RedisConfig::new(managed.url())
        .lease_quorum(locks.iter().map(RedisServer::url))
        .lease_ttl(Duration::from_secs(2));
    let remotes = [
        RedisRemote::<String, String>::connect(config.clone())
            .await
            .expect("connect"),
        RedisRemote::<String, String>::connect(config.clone())
            .await
            .expect("connect"),
    ];
    assert_eq!(remotes[0].lease_quorum(), Some((3, 2)));
    let nodes: Vec<Node> = remotes
        .iter()
        .map(|r| {
            Cache::builder()
                .ttl(Duration::from_secs(60))
                .shared_store(r.clone())
                .fleet_poll_interval(Duration::from_millis(200))
                .shared_store_probe_interval(Duration::from_millis(100))
                .build()
                .expect("build")
        })
        .collect();
    assert_eq!(stampede(&nodes, "before", 16).await, (1, 0));

    let killed = Instant::now();
    managed.primary.kill();
    let (rounds, errors, resumed_after) = rounds_until_coordinated(&nodes, killed).await;
    println!(
        "quorum + sentinel failover: {rounds} rounds, {errors} caller errors; first round with \
         one origin call fleet-wide started {resumed_after:?} after the kill"
    );
    assert_eq!(errors, 0, "no caller failed during the failover");
    wait_until(
        "the sentinels promoted the replica",
        Duration::from_secs(10),
        || primary_port(managed.sentinels[0].port()) == Some(managed.replica.port()),
    );
    for i in 0..3 {
        assert_eq!(
            stampede(&nodes, &format!("after{i}"), 16).await,
            (1, 0),
            "coordinated on the promoted replica"
        );
    }
    // The leases were the lock servers' all along: one grant at least for
    // each coordinated round (before and after the failover), by whichever
    // node won it — not each node (one may lose every race).
    let stats: Vec<_> = remotes
        .iter()
        .map(|r| r.quorum_stats().expect("quorum leases"))
        .collect();
    let granted: u64 = stats.iter().map(|s| s.granted).sum();
    assert!(granted >= 4, "{stats:?}");
    locks[1].kill();
    assert_eq!(
        stampede(&nodes, "one-lock-server-down", 16).await,
        (1, 0),
        "two of three lock servers still grant"
    );
}
