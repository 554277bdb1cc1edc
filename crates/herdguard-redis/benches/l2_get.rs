//! L2 hit throughput against `redis-benchmark -t get` at the same concurrency,
//! value size and server, measured one after the other in one run:
//!
//! 1. `RedisRemote::get` called directly (one multiplexed connection, a GET and
//!    an envelope decode per call), C tasks on a 2-thread runtime;
//! 2. `Cache::get_or_load` with `max_entries(1)` over 10,000 keys prefilled in
//!    Redis, so the L1 nearly always misses and the read reaches Redis (the
//!    share that did is printed from the cache's `l2_hits`);
//! 3. `redis-benchmark -t get -c C -d <stored envelope size>` on a key set to a
//!    value of that size (a GET of a missing key would answer nil, cheaper):
//!    C connections, one request in flight on each.
//! 4. The same with `-c 1 -P C`: one connection with C requests in flight, the
//!    shape of redis-rs's multiplexed connection that `RedisRemote` uses (it
//!    writes concurrent requests back to back on one socket), so the fairer
//!    baseline for the same concurrency.

mod common;
#[path = "common/l2.rs"]
mod l2;

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herdguard::{Cache, Remote};
use herdguard_redis::{RedisConfig, RedisRemote};
use l2::key;

const CONCURRENCY: usize = 50;
const KEYS: usize = 10_000;
const VALUE_BYTES: usize = 64;
const MEASURE: Duration = Duration::from_secs(3);
const PREFIX: &str = "l2bench";

/// Runs `op` from `CONCURRENCY` tasks for `MEASURE`; ops per second.
async fn drive<F, Fut>(op: F) -> f64
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    l2::drive(CONCURRENCY, KEYS, MEASURE, op).await
}

/// `redis-benchmark -q` prints `GET: 123456.78 requests per second, p50=…`.
fn redis_benchmark(port: u16, n: u64, size: usize, clients: usize, pipeline: usize) -> f64 {
    let out = Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            "get",
            "-q",
        ])
        .args(["-n", &n.to_string(), "-c", &clients.to_string()])
        .args(["-P", &pipeline.to_string(), "-d", &size.to_string()])
        .output()
        .expect("run redis-benchmark (apt-get install redis-tools)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(['\r', '\n'])
        .filter_map(|l| l.strip_prefix("GET: "))
        .filter_map(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no GET rate in redis-benchmark output: {text:?}"))
}

fn main() {
    let target = common::target();
    let runtime = common::runtime();
    runtime.block_on(async move {
        let remote = RedisRemote::<String, String>::connect(
            RedisConfig::new(target.url.clone()).prefix(PREFIX),
        )
        .await
        .expect("connect");
        l2::prefill(&remote, KEYS, VALUE_BYTES, CONCURRENCY).await;
        let mut conn = redis::Client::open(target.url.as_str())
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("connection");
        let stored: usize = redis::cmd("STRLEN")
            .arg(format!("{PREFIX}:{{{}}}:v", key(0)))
            .query_async(&mut conn)
            .await
            .expect("STRLEN");
        assert!(stored > VALUE_BYTES, "prefilled envelope found ({stored} bytes)");

        // 1. The remote directly.
        let r = remote.clone();
        let direct = drive(move |i| {
            let r = r.clone();
            async move {
                let e = r.get(&key(i)).await.expect("get");
                assert!(e.entry.is_some(), "prefilled key {i} present");
            }
        })
        .await;

        // 2. Through a cache whose L1 holds one entry.
        let cache: Cache<String, String> = Cache::builder()
            .max_entries(1)
            .ttl(Duration::from_secs(600))
            .shared_store(remote.clone())
            .build()
            .expect("cache");
        let loads = Arc::new(AtomicU64::new(0));
        let (c, l) = (cache.clone(), loads.clone());
        let before = cache.metrics();
        let through = drive(move |i| {
            let (c, l) = (c.clone(), l.clone());
            async move {
                c.get_or_load(key(i), move || async move {
                    l.fetch_add(1, Ordering::Relaxed);
                    Ok::<_, std::io::Error>("loaded".to_string())
                })
                .await
                .expect("get_or_load");
            }
        })
        .await;
        let after = cache.metrics();
        let l2_hits = after.l2_hits - before.l2_hits;
        let total = (through * MEASURE.as_secs_f64()).max(1.0);

        // 3. redis-benchmark, on a key holding a value of the stored size.
        redis::cmd("SET")
            .arg("key:__rand_int__")
            .arg("x".repeat(stored))
            .query_async::<()>(&mut conn)
            .await
            .expect("SET");
        let n = ((direct.max(through) * MEASURE.as_secs_f64()) as u64).max(20_000);
        let port = target.port;
        let (baseline, pipelined) = tokio::task::spawn_blocking(move || {
            (
                redis_benchmark(port, n, stored, CONCURRENCY, 1),
                redis_benchmark(port, n * 2, stored, 1, CONCURRENCY),
            )
        })
        .await
        .expect("redis-benchmark");

        println!(
            "l2 get: C={CONCURRENCY}, {KEYS} keys, {VALUE_BYTES}-byte value = {stored}-byte stored envelope"
        );
        println!(
            "herdguard L2 get (RedisRemote::get) {direct:.0} ops/s | redis-benchmark GET -c {CONCURRENCY} {baseline:.0} ops/s | ratio {:.2}",
            direct / baseline
        );
        println!(
            "herdguard L2 get (Cache, L1 max_entries=1) {through:.0} ops/s | redis-benchmark GET -c {CONCURRENCY} {baseline:.0} ops/s | ratio {:.2}  (L2 hits ~{:.0}% of calls, origin loads {})",
            through / baseline,
            100.0 * l2_hits as f64 / total,
            loads.load(Ordering::Relaxed)
        );
        println!(
            "herdguard L2 get (RedisRemote::get) {direct:.0} ops/s | redis-benchmark GET -c 1 -P {CONCURRENCY} {pipelined:.0} ops/s | ratio {:.2}  (one connection, {CONCURRENCY} in flight)",
            direct / pipelined
        );
    });
}
