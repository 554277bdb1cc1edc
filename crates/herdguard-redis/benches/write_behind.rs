//! Durable write-behind against a plain `XADD` loop, in alternating rounds in
//! one run, on one server:
//!
//! 1. `Cache::write_behind` over `RedisRemote` (the value shared fleet-wide)
//!    with a `RedisWriteQueue` (the write appended to a Redis Stream), C tasks
//!    on a 2-thread runtime for a few seconds, into a writer that takes batches
//!    of up to 256 writes and spends 2 ms on each batch (a database's round
//!    trip). Reported: acknowledgements per second, acknowledgement latency
//!    p50/p99, and writes the writer received per second (it must keep up, or
//!    the queue would only grow: each loop ends with a flush, and its time is in
//!    the writer's rate).
//! 2. The same C tasks doing a bare `XADD` of the same payload on the same
//!    multiplexed redis-rs connection: the floor of any Redis-backed queue.
//! 3. (1) again, open loop at `HERDGUARD_BENCH_WRITE_RATE` writes/s (default
//!    20,000), each write timed from when it was offered; then (2) offered
//!    the same way at that rate, the tail the machine alone gives an open loop.
//!
//! Each phase also reports what it cost per operation: the Redis server's CPU
//! time (`INFO cpu`) and commands (`INFO commandstats`; for an ack, by name),
//! and this process's CPU time. On a shared 2-core machine the rates move with
//! the load (printed per round); the ratio of (1) to (2) within a round, and
//! the CPU per operation, carry over. `HERDGUARD_BENCH_ROUNDS` rounds (default 3); then, once, the
//! floor: each of the two steps of an acknowledgement alone (the shared-store
//! write, `RedisRemote::put`, and the queue push, its drain included) driven
//! the same way, with what Redis spends on each, and the most acks per second
//! that CPU allows (Redis on a core of its own; all on the machine's cores);
//! then `redis-benchmark` running that `XADD` with C connections.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herdguard::{
    BoxError, BoxFuture, Cache, Clock, Entry, EntryMeta, Remote, SystemClock, Write, WriteBehind,
    WriteQueue, Writer,
};
use herdguard_redis::{QueueConfig, RedisConfig, RedisRemote, RedisWriteQueue};
use redis::aio::MultiplexedConnection;

const CONCURRENCY: usize = 64;
const KEYS: usize = 10_000;
const VALUE_BYTES: usize = 64;
const MEASURE: Duration = Duration::from_secs(4);
const BATCH: usize = 256;
const BATCH_COST: Duration = Duration::from_millis(2);

/// A database that writes a batch in one round trip.
struct BatchingDb {
    written: Arc<AtomicU64>,
    batches: Arc<AtomicU64>,
}

impl Writer<String, String> for BatchingDb {
    fn write<'a>(
        &'a self,
        batch: &'a [Write<String, String>],
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            tokio::time::sleep(BATCH_COST).await;
            self.written
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            self.batches.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
    }
}

/// The peer's operation: a plain `XADD` of `value` as the `i`-th key.
async fn plain_xadd(mut conn: redis::aio::MultiplexedConnection, value: String, i: usize) {
    let _: String = redis::cmd("XADD")
        .arg("wbbench:plain")
        .arg("MAXLEN")
        .arg("~")
        .arg(100_000)
        .arg("*")
        .arg("k")
        .arg(format!("key-{i}"))
        .arg("v")
        .arg(value)
        .query_async(&mut conn)
        .await
        .expect("XADD");
}

/// Runs `op` from `CONCURRENCY` tasks for `MEASURE`: operations per second and
/// each operation's latency (µs), sorted.
async fn drive<F, Fut>(op: F) -> (f64, Vec<u64>)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|t| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(100_000);
                let mut i = t * 7919;
                while start.elapsed() < MEASURE {
                    let began = Instant::now();
                    op(i % KEYS).await;
                    lat.push(began.elapsed().as_micros() as u64);
                    i += 1;
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let rate = all.len() as f64 / start.elapsed().as_secs_f64();
    all.sort_unstable();
    (rate, all)
}

/// Offers `rate` operations per second for `MEASURE` (open loop: a slow
/// operation does not hold the next back), each timed from when it was offered,
/// so queueing counts: operations per second achieved and latencies (µs), sorted.
async fn offer<F, Fut>(rate: u64, op: F) -> (f64, Vec<u64>)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    const TICK: Duration = Duration::from_millis(1);
    let per_tick = (rate / 1000).max(1) as usize;
    let start = Instant::now();
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::new();
    let mut n = 0usize;
    for _ in 0..MEASURE.as_millis() {
        // From when the tick fired (the timer's own millisecond of lateness is
        // not the cache's), spawning and scheduling included.
        let due = ticks.tick().await.into_std().max(Instant::now());
        for _ in 0..per_tick {
            let op = op.clone();
            let i = n;
            n += 1;
            tasks.push(tokio::spawn(async move {
                op(i % KEYS).await;
                due.elapsed().as_micros() as u64
            }));
        }
    }
    let mut all = Vec::with_capacity(tasks.len());
    for t in tasks {
        all.push(t.await.expect("task"));
    }
    let rate = all.len() as f64 / start.elapsed().as_secs_f64();
    all.sort_unstable();
    (rate, all)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// CPU time and commands spent so far: the Redis server's (`INFO`) and this
/// process's (every thread's run time, `/proc/self/task/*/schedstat`).
#[derive(Clone, Default)]
struct Spent {
    redis_cpu_us: f64,
    redis_calls: u64,
    /// Calls by command name (`evalsha`, `client|caching`, …), commands run
    /// inside scripts included.
    by_command: std::collections::BTreeMap<String, u64>,
    own_cpu_us: f64,
}

impl Spent {
    async fn now(stats: &mut MultiplexedConnection) -> Spent {
        let info: String = redis::cmd("INFO")
            .arg("cpu")
            .arg("commandstats")
            .query_async(stats)
            .await
            .expect("INFO");
        let mut spent = Spent::default();
        for line in info.lines() {
            if let Some(v) = line
                .strip_prefix("used_cpu_sys:")
                .or_else(|| line.strip_prefix("used_cpu_user:"))
            {
                spent.redis_cpu_us += v.trim().parse::<f64>().unwrap_or(0.0) * 1e6;
            }
            // cmdstat_xadd:calls=N,usec=…; INFO itself is not the workload's.
            if let Some(stat) = line
                .strip_prefix("cmdstat_")
                .filter(|_| !line.starts_with("cmdstat_info:"))
            {
                let calls = stat
                    .split_once("calls=")
                    .and_then(|(_, rest)| rest.split(',').next())
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
                spent.redis_calls += calls;
                let name = stat.split(':').next().unwrap_or(stat).to_string();
                spent.by_command.insert(name, calls);
            }
        }
        let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task");
        for task in tasks.flatten() {
            let ns = std::fs::read_to_string(task.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
                .unwrap_or(0.0);
            spent.own_cpu_us += ns / 1000.0;
        }
        spent
    }

    /// What was spent since `before`, per one of `ops` operations.
    fn per_op(&self, before: &Spent, ops: f64) -> String {
        let (redis_us, own_us) = self.cpu_per_op(before, ops);
        format!(
            "Redis {redis_us:.1} µs CPU and {:.2} commands, this process {own_us:.1} µs CPU",
            (self.redis_calls - before.redis_calls) as f64 / ops.max(1.0),
        )
    }

    /// The Redis server's and this process's CPU time (µs) spent since
    /// `before`, per one of `ops` operations.
    fn cpu_per_op(&self, before: &Spent, ops: f64) -> (f64, f64) {
        let ops = ops.max(1.0);
        (
            (self.redis_cpu_us - before.redis_cpu_us) / ops,
            (self.own_cpu_us - before.own_cpu_us) / ops,
        )
    }

    /// The commands spent since `before` per one of `ops` operations, by
    /// name, the most first (those under 0.01 per operation left out).
    fn commands_per_op(&self, before: &Spent, ops: f64) -> String {
        let ops = ops.max(1.0);
        let mut spent: Vec<(f64, &str)> = self
            .by_command
            .iter()
            .map(|(name, calls)| {
                let had = before.by_command.get(name).copied().unwrap_or(0);
                (calls.saturating_sub(had) as f64 / ops, name.as_str())
            })
            .filter(|(per, _)| *per >= 0.01)
            .collect();
        spent.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
        spent
            .iter()
            .map(|(per, name)| format!("{name} {per:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The machine's load average, as `uptime` prints it.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_string())
}

/// `redis-benchmark -q … XADD` prints `XADD …: 123456.78 requests per second`.
fn redis_benchmark_xadd(port: u16, n: u64, clients: usize) -> f64 {
    let value = "x".repeat(VALUE_BYTES);
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
        .args(["-n", &n.to_string(), "-c", &clients.to_string()])
        .args(["XADD", "wbbench:rb", "MAXLEN", "~", "100000", "*"])
        .args(["k", "key:__rand_int__", "v", &value])
        .output()
        .expect("run redis-benchmark (apt-get install redis-tools)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(['\r', '\n'])
        .filter(|l| l.starts_with("XADD"))
        .filter_map(|l| {
            let (_, rest) = l.split_once(": ")?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .next_back()
        .unwrap_or_else(|| panic!("no XADD rate in redis-benchmark output: {text:?}"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn main() {
    let target = common::target();
    let runtime = common::runtime();
    runtime.block_on(async move {
        let config = RedisConfig::new(target.url.clone()).prefix("wbbench");
        let written = Arc::new(AtomicU64::new(0));
        let batches = Arc::new(AtomicU64::new(0));
        let queue = RedisWriteQueue::<String, String>::connect(config.clone(), QueueConfig::new())
            .await
            .expect("queue");
        let behind = WriteBehind::new(BatchingDb {
            written: Arc::clone(&written),
            batches: Arc::clone(&batches),
        })
        .queue(queue.clone())
        .max_batch(BATCH)
        .max_queue(1_000_000);
        let remote = RedisRemote::<String, String>::connect(config)
            .await
            .expect("remote");
        let cache = Cache::builder()
            .ttl(Duration::from_secs(600))
            .max_entries(KEYS as u64)
            .shared_store(remote.clone())
            .write_behind(behind)
            .build()
            .expect("cache");
        let value = "x".repeat(VALUE_BYTES);
        let client = redis::Client::open(target.url.as_str()).expect("client");
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connection");
        let mut stats = client
            .get_multiplexed_async_connection()
            .await
            .expect("stats connection");

        // Warm up the connections and scripts.
        for i in 0..100 {
            cache
                .write_behind(format!("key-{i}"), value.clone())
                .await
                .expect("warm-up write");
        }
        cache.flush_writes(Duration::from_secs(30)).await;
        let target_rate = std::env::var("HERDGUARD_BENCH_WRITE_RATE")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(20_000u64);
        let rounds = std::env::var("HERDGUARD_BENCH_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(3usize)
            .max(1);
        let (mut acks_by_round, mut xadds_by_round, mut ratios) = (vec![], vec![], vec![]);
        // CPU per bare XADD (Redis, this process), each round.
        let (mut xadd_redis_us, mut xadd_own_us) = (vec![], vec![]);
        let (mut open_p99, mut open_xadd_p99) = (vec![], vec![]);
        for round in 1..=rounds {
            println!("round {round} of {rounds} (load average {})", load());
            let closed = format!("closed loop ({CONCURRENCY} callers, as fast as it goes)");
            let open = format!(
                "open loop at {target_rate} writes/s offered (timed from when each was offered)"
            );
            let mut acks = 0.0;
            let phases = [(closed, None), (open, Some(target_rate))];
            // HERDGUARD_BENCH_OPEN_LOOP=0 leaves the open loop out (profiling).
            let open_loop = std::env::var("HERDGUARD_BENCH_OPEN_LOOP").map_or(true, |v| v != "0");
            for (label, rate) in phases.into_iter().take(if open_loop { 2 } else { 1 }) {
                written.store(0, Ordering::Relaxed);
                batches.store(0, Ordering::Relaxed);
                let before = Spent::now(&mut stats).await;
                let began = Instant::now();
                let failed = Arc::new(AtomicU64::new(0));
                let write = {
                    let (cache, value, failed) = (cache.clone(), value.clone(), Arc::clone(&failed));
                    move |i: usize| {
                        let (cache, value, failed) = (cache.clone(), value.clone(), Arc::clone(&failed));
                        async move {
                            // Past saturation (open loop) Redis calls time out:
                            // counted, not fatal.
                            if cache.write_behind(format!("key-{i}"), value).await.is_err() {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                };
                let (rate, lat) = match rate {
                    None => drive(write).await,
                    Some(r) => offer(r, write).await,
                };
                let flushed = cache.flush_writes(Duration::from_secs(60)).await;
                let drained_in = began.elapsed();
                let after = Spent::now(&mut stats).await;
                let received = written.load(Ordering::Relaxed);
                let batch_count = batches.load(Ordering::Relaxed).max(1);
                let failed = failed.load(Ordering::Relaxed);
                let rate = rate * (1.0 - failed as f64 / lat.len().max(1) as f64);
                let ops = lat.len() as f64 - failed as f64;
                println!(
                    "herdguard write_behind, {label}: {rate:.0} acks/s, ack p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {failed} failed; per ack, drain included: {}",
                    ms(common::quantile(&lat, 0.5)),
                    ms(common::quantile(&lat, 0.99)),
                    ms(common::quantile(&lat, 1.0)),
                    after.per_op(&before, ops),
                );
                println!("  commands per ack: {}", after.commands_per_op(&before, ops));
                println!(
                    "  writer: {received} writes in {batch_count} batches (mean {:.0} per batch), {:.0} writes/s through the end of the flush (flushed: {flushed})",
                    received as f64 / batch_count as f64,
                    received as f64 / drained_in.as_secs_f64(),
                );
                if acks == 0.0 {
                    acks = rate;
                    // The peer right after the closed loop, under the same load.
                    let before = Spent::now(&mut stats).await;
                    let (xadds, xlat) = drive({
                        let (conn, value) = (conn.clone(), value.clone());
                        move |i| plain_xadd(conn.clone(), value.clone(), i)
                    })
                    .await;
                    let after = Spent::now(&mut stats).await;
                    println!(
                        "plain XADD loop (same client, same connection): {xadds:.0} XADD/s, p50 {:.2} ms, p99 {:.2} ms; per XADD: {}",
                        ms(common::quantile(&xlat, 0.5)),
                        ms(common::quantile(&xlat, 0.99)),
                        after.per_op(&before, xlat.len() as f64),
                    );
                    let (redis_us, own_us) = after.cpu_per_op(&before, xlat.len() as f64);
                    xadd_redis_us.push(redis_us);
                    xadd_own_us.push(own_us);
                    acks_by_round.push(acks);
                    xadds_by_round.push(xadds);
                    ratios.push(acks / xadds);
                } else {
                    open_p99.push(ms(common::quantile(&lat, 0.99)));
                    // The open loop's peer, right after it: a bare XADD offered
                    // at the same rate, the same way. Its tail is the machine's
                    // (timer, scheduler, Redis), not herdguard's.
                    let (_, xlat) = offer(target_rate, {
                        let (conn, value) = (conn.clone(), value.clone());
                        move |i| plain_xadd(conn.clone(), value.clone(), i)
                    })
                    .await;
                    let xp99 = ms(common::quantile(&xlat, 0.99));
                    println!(
                        "plain XADD, open loop at {target_rate}/s (same client, same connection): p50 {:.2} ms, p99 {xp99:.2} ms, max {:.2} ms",
                        ms(common::quantile(&xlat, 0.5)),
                        ms(common::quantile(&xlat, 1.0)),
                    );
                    open_xadd_p99.push(xp99);
                }
            }
        }
        // The floor: what Redis spends on each of the two steps of an
        // acknowledgement alone, driven as the closed loop drives them.
        let before = Spent::now(&mut stats).await;
        let (puts, done) = drive({
            let (remote, value) = (remote.clone(), value.clone());
            move |i| {
                let (remote, value) = (remote.clone(), value.clone());
                async move {
                    let entry = Entry::new(value, EntryMeta {
                        created: SystemClock.now(),
                        ttl: Duration::from_secs(600),
                        stale_while_revalidate: Duration::ZERO,
                        stale_if_error: Duration::ZERO,
                        load_duration: Duration::ZERO,
                        version: 0,
                    });
                    remote
                        .put(&format!("key-{i}"), None, &entry, Duration::from_secs(600))
                        .await
                        .expect("put");
                }
            }
        })
        .await;
        let after = Spent::now(&mut stats).await;
        let put_cpu = after.cpu_per_op(&before, done.len() as f64);
        println!(
            "floor, the shared-store write alone (RedisRemote::put): {puts:.0}/s; per write: {} ({})",
            after.per_op(&before, done.len() as f64),
            after.commands_per_op(&before, done.len() as f64),
        );
        let before = Spent::now(&mut stats).await;
        let (pushes, done) = drive({
            let (queue, value) = (queue.clone(), value.clone());
            move |i| {
                let (queue, value) = (queue.clone(), value.clone());
                async move {
                    let write = Write::new(format!("key-{i}"), value, 1);
                    queue.push(&write, u64::MAX).await.expect("push");
                }
            }
        })
        .await;
        // Its drain too: every push is read back, acknowledged and deleted.
        cache.flush_writes(Duration::from_secs(60)).await;
        let after = Spent::now(&mut stats).await;
        let push_cpu = after.cpu_per_op(&before, done.len() as f64);
        println!(
            "floor, the queue push alone, drain included (RedisWriteQueue::push): {pushes:.0}/s; per push: {} ({})",
            after.per_op(&before, done.len() as f64),
            after.commands_per_op(&before, done.len() as f64),
        );
        // What the two steps cost alone bounds the rate: Redis runs commands
        // on one core, and Redis and this process share the machine's cores.
        let (xadd_redis, xadd_own) = (median(xadd_redis_us.clone()), median(xadd_own_us.clone()));
        let xadd_rate = median(xadds_by_round.clone());
        let ack_redis = put_cpu.0 + push_cpu.0;
        let ack_own = put_cpu.1 + push_cpu.1;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let redis_bound = 1e6 / ack_redis.max(f64::EPSILON);
        let cores_bound = cores * 1e6 / (ack_redis + ack_own).max(f64::EPSILON);
        println!(
            "floor: an ack's two steps alone cost Redis {ack_redis:.1} µs CPU (write {:.1} + push {:.1}) and this process {ack_own:.1} µs (a bare XADD: {xadd_redis:.1} and {xadd_own:.1} µs); so at most {redis_bound:.0} acks/s with a core for Redis alone ({:.2}x the XADD loop's {xadd_rate:.0}/s), at most {cores_bound:.0}/s on {cores} cores to share and nothing else running ({:.2}x)",
            put_cpu.0,
            push_cpu.0,
            redis_bound / xadd_rate.max(1.0),
            cores_bound / xadd_rate.max(1.0),
        );
        let rb = redis_benchmark_xadd(target.port, 200_000, CONCURRENCY);
        println!("redis-benchmark XADD -c {CONCURRENCY}: {rb:.0} XADD/s");
        let list = |v: &[f64], digits: usize| {
            v.iter()
                .map(|x| format!("{x:.digits$}"))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let open = if open_p99.is_empty() {
            String::new()
        } else {
            format!(
                "; open-loop p99 at {target_rate}/s: {} ms (a bare XADD offered alike: {} ms)",
                list(&open_p99, 2),
                list(&open_xadd_p99, 2)
            )
        };
        println!(
            "write-behind ratio: herdguard acks / plain XADD = {:.2} (median of {rounds} rounds: {}; acks/s {}, XADD/s {}{open}; herdguard also writes the value to the shared store and L1 per ack)",
            median(ratios.clone()),
            list(&ratios, 2),
            list(&acks_by_round, 0),
            list(&xadds_by_round, 0),
        );
    });
}
