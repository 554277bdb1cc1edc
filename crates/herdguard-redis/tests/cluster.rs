//! Redis Cluster: six real `redis-server`s (three primaries, one replica each)
//! created by the test; several caches share it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herdguard::Cache;
use herdguard_redis::{RedisConfig, RedisRemote};
use herdguard_testkit::RedisCluster;

type Node = Cache<String, String>;

async fn node(seeds: &[String]) -> Node {
    let remote = RedisRemote::<String, String>::connect(RedisConfig::cluster(seeds.to_vec()))
        .await
        .expect("connect to the cluster");
    Cache::builder()
        .ttl(Duration::from_secs(60))
        .shared_store(remote)
        .fleet_poll_interval(Duration::from_millis(200))
        .build()
        .expect("build")
}

/// `per_node` concurrent callers of `key` on every node, each load taking
/// 150 ms: returns (origin calls, caller errors).
async fn stampede(nodes: &[Node], key: &str, per_node: usize) -> (usize, usize) {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for n in nodes {
        for _ in 0..per_node {
            let (n, calls, key) = (n.clone(), Arc::clone(&calls), key.to_string());
            tasks.push(tokio::spawn(async move {
                n.get_or_load(key, move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    Ok::<_, std::io::Error>("v".to_string())
                })
                .await
            }));
        }
    }
    let mut errors = 0;
    for t in tasks {
        if !matches!(t.await, Ok(Ok(_))) {
            errors += 1;
        }
    }
    (calls.load(Ordering::SeqCst), errors)
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
        assert!(n.shared_store_healthy());
        assert_eq!(n.metrics().degradations, 0);
    }
    let per = entries_per_primary(&cluster);
    assert_eq!(per.len(), 3, "three primaries: {per:?}");
    assert!(per.values().all(|&n| n > 0), "keys on every shard: {per:?}");
    assert_eq!(per.values().sum::<usize>(), keys.len(), "{per:?}");

    // The change feed: an invalidation on any shard evicts every other
    // cache's copy (PUBLISH reaches every node of a cluster).
    let mut hops = Vec::new();
    for key in &keys {
        assert!(nodes[1].get(key).is_some() && nodes[2].get(key).is_some());
        nodes[0].invalidate(key).await.unwrap();
        let invalidated = Instant::now();
        while nodes[1].get(key).is_some() || nodes[2].get(key).is_some() {
            assert!(
                invalidated.elapsed() < Duration::from_secs(2),
                "{key}: a copy survived the invalidation"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        hops.push(invalidated.elapsed());
    }
    hops.sort();
    println!(
        "cluster: entries per primary {per:?}; eviction hop over PUBLISH: p50 {:?}, max {:?}",
        hops[hops.len() / 2],
        hops[hops.len() - 1]
    );
}
