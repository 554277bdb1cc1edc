//! Redis Cluster: six real `redis-server`s (three primaries, one replica each)
//! created by the test; several caches share it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use herdguard::Cache;
use herdguard_redis::{RedisConfig, RedisRemote};
use herdguard_testkit::RedisCluster;

type Node = Cache<String, String>;

mod common;
use common::{changes_reach, stampede};

async fn node(seeds: &[String]) -> Node {
    node_with(RedisConfig::cluster(seeds.to_vec())).await
}

async fn node_with(config: RedisConfig) -> Node {
    let remote = RedisRemote::<String, String>::connect(config)
        .await
        .expect("connect to the cluster");
    Cache::builder()
        .ttl(Duration::from_secs(60))
        .shared_store(remote)
        .fleet_poll_interval(Duration::from_millis(200))
        .build()
        .expect("build")
}

/// How many entries each primary holds, by port.
fn entries_per_primary(cluster: &RedisCluster) -> BTreeMap<u16, usize> {
    let mut per = BTreeMap::new();
    for n in cluster.nodes() {
        let mut c = redis::Client::open(n.url())
            .unwrap()
            .get_connection()
            .unwrap();
        let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut c).unwrap();
        if role.first() != Some(&redis::Value::BulkString(b"master".to_vec())) {
            continue;
        }
        let keys: Vec<String> = redis::cmd("KEYS").arg("hg:*:v").query(&mut c).unwrap();
        per.insert(n.port(), keys.len());
    }
    per
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caches_sharing_a_cluster_make_one_origin_call_per_cold_key_on_every_shard() {
    let cluster = RedisCluster::start().expect("a local cluster");
    let seeds = cluster.urls();
    let nodes = [node(&seeds).await, node(&seeds).await, node(&seeds).await];
    let keys: Vec<String> = (0..12).map(|i| format!("key{i}")).collect();
    for key in &keys {
        let (calls, errors) = stampede(&nodes, key, 16).await;
        assert_eq!(
            (calls, errors),
            (1, 0),
            "{key}: one origin call for 48 callers"
        );
    }
    for n in &nodes {
        let m = n.metrics();
        assert!(n.shared_store_healthy() && m.degradations == 0, "{m:?}");
    }
    let per = entries_per_primary(&cluster);
    assert_eq!(per.len(), 3, "three primaries: {per:?}");
    assert!(per.values().all(|&n| n > 0), "keys on every shard: {per:?}");
    assert_eq!(per.values().sum::<usize>(), keys.len(), "{per:?}");

    // The change feed: an invalidation on any shard evicts every other
    // cache's copy (the owning shard pushes it to the connections that read
    // it). What is promised is that no copy is served after it: a cache whose
    // feed was interrupted meanwhile (a ping unanswered within the operation
    // timeout on a loaded machine) keeps its copies, unserved — Redis forgot
    // what the lost connection tracked — and checks them against Redis.
    let mut hops = Vec::new();
    for key in &keys {
        assert!(nodes[1].peek(key).is_some() && nodes[2].peek(key).is_some());
        nodes[0].invalidate(key).await.unwrap();
        let invalidated = Instant::now();
        while nodes[1].get(key).is_some() || nodes[2].get(key).is_some() {
            assert!(
                invalidated.elapsed() < Duration::from_secs(2),
                "{key}: a copy was still served 2 s after the invalidation"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        hops.push(invalidated.elapsed());
    }
    // Where the feed stayed up since the copies were read, they went on the
    // notice itself.
    for n in &nodes[1..] {
        if n.metrics().resyncs == 0 {
            let kept: Vec<&String> = keys.iter().filter(|k| n.peek(k).is_some()).collect();
            assert!(
                kept.is_empty(),
                "copies not evicted by the notice: {kept:?}"
            );
        }
    }
    hops.sort();
    println!(
        "cluster: entries per primary {per:?}; eviction hop: p50 {:?}, max {:?}",
        hops[hops.len() / 2],
        hops[hops.len() - 1]
    );
}

/// A mixed fleet on one cluster: a process of the per-key feed — whose
/// changes are announced on no channel there — and one configured with the
/// broadcast feed (as in a rolling upgrade from a release without tracking).
/// Each must stop serving a copy the other changed, and a listener of the
/// change channel alone (such a release) must hear the broadcast process's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_feed_process_hears_the_per_key_processes_changes_on_a_cluster() {
    let cluster = RedisCluster::start().expect("a local cluster");
    let seeds = cluster.urls();
    let per_key = node(&seeds).await;
    let broadcast = node_with(RedisConfig::cluster(seeds.clone()).broadcast_feed(true)).await;
    let mut old_release = redis::Client::open(seeds[1].as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut old_release = old_release.as_pubsub();
    old_release.subscribe("hg:changes").unwrap();
    old_release
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    // Keys on every shard.
    let keys = |side: &str| (0..9).map(|i| format!("{side}{i}")).collect::<Vec<_>>();
    let heard = changes_reach(&per_key, &broadcast, &keys("heard")).await;
    let told = changes_reach(&broadcast, &per_key, &keys("told")).await;
    for n in [&per_key, &broadcast] {
        assert_eq!(n.metrics().degradations, 0);
    }
    let mut announced = std::collections::BTreeSet::new();
    while !keys("told").iter().all(|k| announced.contains(k)) {
        let message = old_release
            .get_message()
            .expect("the broadcast process's changes are announced");
        let text: String = message.get_payload().unwrap();
        if let Some(tag) = text.split(' ').nth(2) {
            announced.insert(tag.to_string());
        }
    }
    // Broadcasts (purges) reach each process once, from either side.
    let remote = |broadcast: bool| {
        let config = RedisConfig::cluster(seeds.clone()).broadcast_feed(broadcast);
        async move {
            let remote = RedisRemote::<String, String>::connect(config)
                .await
                .unwrap();
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            remote.on_broadcast("purge", move |p| {
                let _ = tx.send(p.to_string());
            });
            (remote, rx)
        }
    };
    let (mut a, mut b) = (remote(false).await, remote(true).await);
    for sender in [false, true] {
        let from = if sender { &b.0 } else { &a.0 };
        from.broadcast("purge", "x").await.unwrap();
        for to in [&mut a.1, &mut b.1] {
            let got = tokio::time::timeout(Duration::from_secs(2), to.recv()).await;
            assert_eq!(got.ok().flatten().as_deref(), Some("x"), "delivered");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        for to in [&mut a.1, &mut b.1] {
            assert!(to.try_recv().is_err(), "delivered twice");
        }
    }
    println!(
        "mixed feeds on a cluster: a per-key change unheard for at most {:?}, a broadcast one {:?}",
        heard[heard.len() - 1],
        told[told.len() - 1]
    );
}

/// The port of the primary that owns `key`'s entry, asked of the node at `via`.
fn owner(via: &str, key: &str) -> u16 {
    let mut c = redis::Client::open(via).unwrap().get_connection().unwrap();
    let slot: i64 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(format!("hg:{{{key}}}:v"))
        .query(&mut c)
        .unwrap();
    let slots: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER").arg("SLOTS").query(&mut c).unwrap();
    // Each entry: first slot, last slot, [ip, port, id, …] of the primary, replicas…
    for entry in slots {
        if let [redis::Value::Int(first), redis::Value::Int(last), redis::Value::Array(primary), ..] =
            entry.as_slice()
        {
            if (*first..=*last).contains(&slot) {
                if let Some(redis::Value::Int(port)) = primary.get(1) {
                    return u16::try_from(*port).unwrap();
                }
            }
        }
    }
    panic!("no owner of slot {slot}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_fails_no_caller_and_its_shard_is_coordinated_again_after_the_failover() {
    let mut cluster = RedisCluster::start().expect("a local cluster");
    let seeds = cluster.urls();
    // The first seed: a primary, and the node the change feeds listen on.
    let victim = cluster.nodes()[0].port();
    let via = cluster.urls()[1].clone();
    let keys: Vec<String> = (0..2000)
        .map(|i| format!("k{i}"))
        .filter(|k| owner(&via, k) == victim)
        .take(100)
        .collect();
    assert_eq!(keys.len(), 100, "the first node is a primary");
    let nodes = [node(&seeds).await, node(&seeds).await];
    assert_eq!(stampede(&nodes, &keys[0], 16).await, (1, 0));

    let killed = Instant::now();
    cluster.kill(0);
    let mut errors = 0;
    let mut rounds = 0;
    let resumed_after = loop {
        let key = keys
            .get(rounds + 1)
            .unwrap_or_else(|| panic!("not resumed after {rounds} rounds, {:?}", killed.elapsed()));
        let started = killed.elapsed();
        let (calls, e) = stampede(&nodes, key, 16).await;
        rounds += 1;
        errors += e;
        assert_eq!(errors, 0, "no caller fails during the failover");
        assert!(calls <= nodes.len(), "at most one load per cache: {calls}");
        if calls == 1 {
            break started;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "cluster failover: {rounds} rounds on the killed primary's keys, {errors} caller errors; \
         first round with one origin call started {resumed_after:?} after the kill"
    );
    assert_ne!(
        owner(&via, &keys[0]),
        victim,
        "a replica took the slots over"
    );
    // Coordinated again, and the change feed (which listened on the killed
    // node) works through another node.
    let key = &keys[rounds + 1];
    assert_eq!(stampede(&nodes, key, 16).await, (1, 0));
    nodes[0].invalidate(key).await.unwrap();
    let start = Instant::now();
    while nodes[1].peek(key).is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the other cache kept its copy"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn eight_worker_processes_on_a_cluster_make_one_load_per_cold_key_on_every_shard() {
    let cluster = RedisCluster::start().expect("a local cluster");
    let seeds = cluster.urls();
    let via = seeds[0].clone();
    // Two keys on each of the three primaries.
    let mut per_owner: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for i in 0..200 {
        let key = format!("fleet{i}");
        let on = per_owner.entry(owner(&via, &key)).or_default();
        if on.len() < 2 {
            on.push(key);
        }
    }
    assert_eq!(per_owner.len(), 3, "three primaries: {per_owner:?}");
    let keys: Vec<String> = per_owner.values().flatten().cloned().collect();
    assert_eq!(keys.len(), 6, "{per_owner:?}");

    let list = seeds.join(",");
    let mut workers: Vec<common::Worker> = (0..8)
        .map(|_| {
            common::Worker::start(
                &list,
                &["--cluster", "--callers", "64", "--loader-ms", "100"],
            )
        })
        .collect();
    let mut counter = redis::cluster::ClusterClient::new(seeds.clone())
        .expect("cluster client")
        .get_connection()
        .expect("cluster connection");
    for key in &keys {
        for w in &mut workers {
            w.go(key);
        }
        let results: Vec<_> = workers.iter_mut().map(common::Worker::result).collect();
        let mut values = std::collections::BTreeSet::new();
        for r in &results {
            assert_eq!(common::u(r, "ok"), 64, "{r}");
            assert_eq!(common::u(r, "errors"), 0, "{r}");
            for v in r["values"].as_array().expect("values") {
                values.insert(v.as_str().expect("a string").to_string());
            }
        }
        assert_eq!(values.len(), 1, "{key}: every caller got the one value");
        let loads: Option<i64> =
            redis::Commands::get(&mut counter, format!("count:{key}")).expect("GET count");
        assert_eq!(
            loads,
            Some(1),
            "{key}: one origin call for 8 x 64 callers: {results:?}"
        );
        let local: u64 = results.iter().map(|r| common::u(r, "local_loads")).sum();
        assert_eq!(local, 1, "{key}");
    }
    println!(
        "cluster fleet: 8 processes x 64 callers, keys per primary {per_owner:?}, one load each"
    );
}

/// `count_stored` names keys of every shard in one `EXISTS` (redis-rs splits
/// it by slot and sums): each stored key counted once, absent ones not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_keys_are_counted_across_every_shard() {
    let cluster = RedisCluster::start().expect("a local cluster");
    let remote = RedisRemote::<String, String>::connect(RedisConfig::cluster(cluster.urls()))
        .await
        .expect("connect to the cluster");
    let cache: Node = Cache::builder()
        .ttl(Duration::from_secs(60))
        .shared_store(remote.clone())
        .build()
        .expect("build");
    let stored: Vec<String> = (0..12).map(|i| format!("key{i}")).collect();
    for key in &stored {
        cache.insert(key.clone(), "v".into()).await.unwrap();
    }
    let per = entries_per_primary(&cluster);
    assert!(per.values().all(|&n| n > 0), "keys on every shard: {per:?}");
    let mut asked = stored.clone();
    asked.extend((0..5).map(|i| format!("absent{i}")));
    asked.push("key0".into());
    assert_eq!(remote.count_stored(&asked).await.unwrap(), stored.len());
    cache.invalidate(&"key1".to_string()).await.unwrap();
    assert_eq!(remote.count_stored(&asked).await.unwrap(), stored.len() - 1);
}

/// On a cluster the key and the write-behind queue live in different slots:
/// the write and its push stay two steps, even with the queue on the URL
/// the cluster was named by (one script over both would be refused,
/// `CROSSSLOT`). Every write is acknowledged and queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_behind_on_a_cluster_queues_every_write_in_two_steps() {
    use herdguard::{BoxError, BoxFuture, Write, WriteBehind, Writer};
    use herdguard_redis::{QueueConfig, RedisWriteQueue};
    struct Never;
    impl Writer<String, String> for Never {
        fn write<'a>(
            &'a self,
            _: &'a [Write<String, String>],
        ) -> BoxFuture<'a, Result<(), BoxError>> {
            Box::pin(std::future::pending())
        }
    }
    let cluster = RedisCluster::start_single_shard().expect("start a one-node cluster");
    let url = cluster.urls()[0].clone();
    let remote = RedisRemote::<String, String>::connect(RedisConfig::cluster([url.clone()]))
        .await
        .expect("connect to the cluster");
    let queue = RedisWriteQueue::<String, String>::connect(
        RedisConfig::new(url.clone()),
        QueueConfig::new().partitions(1),
    )
    .await
    .expect("queue");
    let cache: Cache<String, String> = Cache::builder()
        .shared_store(remote)
        .write_behind(WriteBehind::new(Never).queue(queue))
        .build()
        .expect("build");
    for i in 0..20 {
        cache
            .write_behind(format!("k{i}"), "v".to_string())
            .await
            .unwrap_or_else(|e| panic!("write k{i}: {e}"));
    }
    let mut c = redis::Client::open(url)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let queued: u64 = redis::cmd("XLEN")
        .arg("hg:{wb}:s0")
        .query_async(&mut c)
        .await
        .expect("XLEN");
    assert_eq!(queued, 20);
}
