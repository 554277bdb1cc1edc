//! One process of a test fleet: connects a `Cache` to Redis through
//! `RedisRemote`, prints `ready`, then for each line `go KEY` read on stdin
//! runs `--callers` concurrent `get_or_load(KEY)` and prints one JSON line with
//! what happened; `health` prints whether it uses the shared store now;
//! `inv KEY` invalidates the key and prints `{"invalidated": KEY}`; `feed`
//! prints its change feed's kind and the notices it received. Stops at the
//! end of stdin. `--broadcast-feed` hears of changes the way releases before
//! client tracking did. With `--cluster`, `--url` lists a Redis Cluster's seed
//! nodes (comma-separated) and everything runs on the cluster.
//!
//! The loader counts its calls locally and in Redis (`INCR count:KEY`), sleeps
//! `--loader-ms`, and returns `--value` (default: `v-PID`). With `--mark-done`
//! it also writes `SET bench:KEY:done <unix nanos>` just before returning, so
//! the wake-up benchmark can time each waiter's return against the store.
//!
//! `--mode classic` replaces herdguard by the textbook pattern the benchmark
//! compares against: every caller on its own does GET value, else
//! `SET lock NX PX`, and on getting the lock GETs again (double check) before
//! loading; a caller without the lock sleeps 100, 200, 400… ms (capped at 1 s)
//! and retries.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use herdguard::Cache;
use herdguard_redis::{RedisConfig, RedisRemote};
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Parser, Debug)]
#[command(about = "herdguard-redis fleet worker (test helper)")]
struct Args {
    /// Redis URL (with `--cluster`: seed URLs, comma-separated).
    #[arg(long)]
    url: String,
    /// `--url` lists the seed nodes of a Redis Cluster.
    #[arg(long)]
    cluster: bool,
    /// Concurrent callers per round.
    #[arg(long, default_value_t = 64)]
    callers: usize,
    /// How long the loader takes.
    #[arg(long, default_value_t = 100)]
    loader_ms: u64,
    /// Lease TTL.
    #[arg(long, default_value_t = 5000)]
    lease_ttl_ms: u64,
    /// Do not renew the lease while loading.
    #[arg(long)]
    no_renew: bool,
    /// Safety-net poll of a waiting process.
    #[arg(long, default_value_t = 250)]
    poll_ms: u64,
    /// While Redis is degraded, how often the background probe pings it.
    #[arg(long, default_value_t = 200)]
    probe_ms: u64,
    /// The value the loader returns (default `v-PID`).
    #[arg(long)]
    value: Option<String>,
    /// Who coordinates the callers.
    #[arg(long, value_enum, default_value_t = Mode::Herdguard)]
    mode: Mode,
    /// The loader writes `bench:KEY:done <unix nanos>` just before returning.
    #[arg(long)]
    mark_done: bool,
    /// How long a process waits on another's lease before loading itself
    /// (default: the core's).
    #[arg(long)]
    wait_limit_ms: Option<u64>,
    /// How long a loaded value is fresh.
    #[arg(long, default_value_t = 60_000)]
    ttl_ms: u64,
    /// After expiry, serve the stale value while one background refresh runs.
    #[arg(long, default_value_t = 0)]
    stale_while_revalidate_ms: u64,
    /// Every change announced to every process (`RedisConfig::broadcast_feed`).
    #[arg(long)]
    broadcast_feed: bool,
}

/// Who coordinates the callers of a round.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// `Cache::get_or_load` over `RedisRemote`.
    Herdguard,
    /// Lock with `SET NX`, poll with exponential backoff, double check.
    Classic,
}

/// The classic pattern's first backoff and its cap.
const CLASSIC_FIRST_BACKOFF: Duration = Duration::from_millis(100);
const CLASSIC_MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Bounds a classic caller's polling (about a minute at the cap).
const CLASSIC_ATTEMPTS: usize = 64;

#[derive(serde::Serialize)]
struct Round {
    key: String,
    ok: usize,
    errors: usize,
    values: Vec<String>,
    local_loads: u64,
    superseded: u64,
    remote_errors: u64,
    l2_hits: u64,
    served: BTreeMap<String, usize>,
    /// Microseconds from the round's start to each caller's return, sorted.
    latencies_us: Vec<u64>,
    /// Unix nanoseconds at which each caller that did not load returned, sorted.
    waiter_returned_unix_ns: Vec<u64>,
    /// The round's lease metrics (`MetricsSnapshot` field → change).
    lease: BTreeMap<&'static str, u64>,
}

/// The lease metrics' change from `before` to `after`.
fn lease_metrics(
    before: &herdguard::MetricsSnapshot,
    after: &herdguard::MetricsSnapshot,
) -> BTreeMap<&'static str, u64> {
    let pairs = [
        (
            "leases_acquired",
            after.leases_acquired - before.leases_acquired,
        ),
        ("lease_waits", after.lease_waits - before.lease_waits),
        (
            "lease_takeovers",
            after.lease_takeovers - before.lease_takeovers,
        ),
        (
            "lease_wait_limits",
            after.lease_wait_limits - before.lease_wait_limits,
        ),
        (
            "lease_wait_answers",
            after.lease_wait_answers - before.lease_wait_answers,
        ),
        (
            "duplicate_loads",
            after.duplicate_loads - before.duplicate_loads,
        ),
        ("leases_lost", after.leases_lost - before.leases_lost),
        (
            "lease_wait_time_count",
            after.lease_wait_time.count - before.lease_wait_time.count,
        ),
        (
            "lease_wait_time_sum_ms",
            u64::try_from((after.lease_wait_time.sum - before.lease_wait_time.sum).as_millis())
                .unwrap_or(u64::MAX),
        ),
    ];
    pairs.into_iter().collect()
}

/// What one caller got.
struct Call {
    value: String,
    served: String,
    took: Duration,
    returned_unix_ns: u64,
}

/// Where the loader counts its calls: the server, or the cluster (each command
/// names one key, so the cluster connection sends it to that key's shard).
#[derive(Clone)]
enum Counter {
    Single(redis::aio::ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Counter {
    async fn connect(args: &Args) -> anyhow::Result<Counter> {
        if args.cluster {
            let client = redis::cluster::ClusterClient::new(seeds(&args.url))
                .context("counter cluster client")?;
            let conn = client
                .get_async_connection()
                .await
                .context("counter cluster connection")?;
            return Ok(Counter::Cluster(conn));
        }
        let conn = redis::Client::open(args.url.as_str())
            .context("counter client")?
            .get_connection_manager()
            .await
            .context("counter connection")?;
        Ok(Counter::Single(conn))
    }
}

impl redis::aio::ConnectionLike for Counter {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Counter::Single(c) => c.req_packed_command(cmd),
            Counter::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Counter::Single(c) => c.req_packed_commands(cmd, offset, count),
            Counter::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Counter::Single(c) => c.get_db(),
            Counter::Cluster(_) => 0,
        }
    }
}

fn seeds(list: &str) -> Vec<String> {
    list.split(',').map(str::to_string).collect()
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The loader's side effects: count the call in Redis, take `loader_ms`, and
/// with `mark_done` record when it returns. Best effort: with Redis down the
/// local count still tells.
async fn load(counter: &mut Counter, key: &str, loader_ms: u64, mark_done: bool) {
    // Twice: after a Redis restart the first command on the old connection
    // fails and makes the connection manager reconnect.
    for _ in 0..2 {
        let counted = tokio::time::timeout(
            Duration::from_millis(200),
            redis::AsyncCommands::incr::<_, _, i64>(counter, format!("count:{key}"), 1),
        )
        .await;
        if matches!(counted, Ok(Ok(_))) {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(loader_ms)).await;
    if mark_done {
        let _ = tokio::time::timeout(
            Duration::from_millis(200),
            redis::AsyncCommands::set::<_, _, ()>(
                counter,
                format!("bench:{key}:done"),
                unix_nanos(),
            ),
        )
        .await;
    }
}

/// One caller of the classic pattern; returns the value and whether it loaded.
async fn classic_call(
    mut conn: Counter,
    key: &str,
    value: &str,
    loader_ms: u64,
    mark_done: bool,
) -> Result<(String, &'static str), String> {
    use redis::AsyncCommands as _;
    let value_key = format!("classic:{{{key}}}:v");
    let lock_key = format!("classic:{{{key}}}:lock");
    let token = format!("{:016x}-{}", fastrand::u64(..), std::process::id());
    let mut backoff = CLASSIC_FIRST_BACKOFF;
    for attempt in 0..CLASSIC_ATTEMPTS {
        let cached: Option<String> = conn.get(&value_key).await.map_err(|e| e.to_string())?;
        if let Some(v) = cached {
            return Ok((v, if attempt == 0 { "Hit" } else { "Polled" }));
        }
        let locked: Option<String> = redis::cmd("SET")
            .arg(&lock_key)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(5000)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        if locked.is_some() {
            // Double check: the holder before us may have stored it between our GET and SET.
            let cached: Option<String> = conn.get(&value_key).await.map_err(|e| e.to_string())?;
            let result = match cached {
                Some(v) => (v, "Polled"),
                None => {
                    load(&mut conn, key, loader_ms, mark_done).await;
                    conn.set_ex::<_, _, ()>(&value_key, value, 60)
                        .await
                        .map_err(|e| e.to_string())?;
                    (value.to_string(), "Loaded")
                }
            };
            conn.del::<_, ()>(&lock_key)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(result);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(CLASSIC_MAX_BACKOFF);
    }
    Err(format!("no value for {key} after {CLASSIC_ATTEMPTS} polls"))
}

fn main() -> std::process::ExitCode {
    common::run_main(Args::parse(), run)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = if args.cluster {
        RedisConfig::cluster(seeds(&args.url))
    } else {
        RedisConfig::new(args.url.clone())
    };
    let config = config
        .lease_ttl(Duration::from_millis(args.lease_ttl_ms))
        .renew(!args.no_renew)
        .broadcast_feed(args.broadcast_feed);
    let remote = RedisRemote::<String, String>::connect(config)
        .await
        .context("connecting the shared store")?;
    let feed = Arc::clone(&remote);
    let mut builder = Cache::builder()
        .ttl(Duration::from_millis(args.ttl_ms))
        .stale_while_revalidate(Duration::from_millis(args.stale_while_revalidate_ms))
        .shared_store(remote)
        .fleet_poll_interval(Duration::from_millis(args.poll_ms))
        .shared_store_probe_interval(Duration::from_millis(args.probe_ms));
    if let Some(ms) = args.wait_limit_ms {
        builder = builder.fleet_wait_limit(Duration::from_millis(ms));
    }
    let cache: Cache<String, String> = builder.build().context("building the cache")?;
    let counter = Counter::connect(&args).await?;
    let value = args
        .value
        .clone()
        .unwrap_or_else(|| format!("v-{}", std::process::id()));
    println!("ready");

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await.context("reading stdin")? {
        if line == "health" {
            println!(
                "{}",
                serde_json::json!({"healthy": cache.shared_store_healthy()})
            );
            continue;
        }
        if line == "feed" {
            println!(
                "{}",
                serde_json::json!({"per_key": feed.feed_per_key(), "notices": feed.feed_notices()})
            );
            continue;
        }
        if let Some(key) = line.strip_prefix("inv ") {
            let key = key.trim().to_string();
            cache
                .invalidate(&key)
                .await
                .with_context(|| format!("invalidating {key}"))?;
            println!("{}", serde_json::json!({ "invalidated": key }));
            continue;
        }
        let Some(key) = line.strip_prefix("go ") else {
            anyhow::bail!("expected `go KEY`, `inv KEY`, `health` or `feed`, got {line:?}");
        };
        let key = key.trim().to_string();
        let loads = Arc::new(AtomicU64::new(0));
        let before = cache.metrics();
        let start = Instant::now();
        let calls: Vec<_> = (0..args.callers)
            .map(|_| {
                let (cache, key, loads, value) =
                    (cache.clone(), key.clone(), loads.clone(), value.clone());
                let mut counter = counter.clone();
                let (loader_ms, mark_done, mode) = (args.loader_ms, args.mark_done, args.mode);
                tokio::spawn(async move {
                    let (value, served) = match mode {
                        Mode::Herdguard => {
                            let v = cache
                                .get_or_load(key.clone(), move || async move {
                                    loads.fetch_add(1, Ordering::SeqCst);
                                    load(&mut counter, &key, loader_ms, mark_done).await;
                                    Ok::<_, std::io::Error>(value)
                                })
                                .await
                                .map_err(|e| e.to_string())?;
                            (v.to_string(), format!("{:?}", v.served()))
                        }
                        Mode::Classic => {
                            let (v, served) =
                                classic_call(counter, &key, &value, loader_ms, mark_done).await?;
                            if served == "Loaded" {
                                loads.fetch_add(1, Ordering::SeqCst);
                            }
                            (v, served.to_string())
                        }
                    };
                    Ok::<_, String>(Call {
                        value,
                        served,
                        took: start.elapsed(),
                        returned_unix_ns: unix_nanos(),
                    })
                })
            })
            .collect();
        let mut round = Round {
            key,
            ok: 0,
            errors: 0,
            values: Vec::new(),
            local_loads: 0,
            superseded: 0,
            remote_errors: 0,
            l2_hits: 0,
            served: BTreeMap::new(),
            latencies_us: Vec::new(),
            waiter_returned_unix_ns: Vec::new(),
            lease: BTreeMap::new(),
        };
        for call in calls {
            match call.await {
                Ok(Ok(call)) => {
                    round.ok += 1;
                    if !round.values.contains(&call.value) {
                        round.values.push(call.value);
                    }
                    if call.served != "Loaded" {
                        round.waiter_returned_unix_ns.push(call.returned_unix_ns);
                    }
                    *round.served.entry(call.served).or_default() += 1;
                    round.latencies_us.push(call.took.as_micros() as u64);
                }
                Ok(Err(e)) => {
                    round.errors += 1;
                    eprintln!("caller error: {e}");
                }
                Err(e) => {
                    round.errors += 1;
                    eprintln!("caller task failed: {e}");
                }
            }
        }
        round.latencies_us.sort_unstable();
        round.waiter_returned_unix_ns.sort_unstable();
        let after = cache.metrics();
        round.local_loads = loads.load(Ordering::SeqCst);
        round.superseded = after.superseded - before.superseded;
        round.remote_errors = after.remote_errors - before.remote_errors;
        round.l2_hits = after.l2_hits - before.l2_hits;
        round.lease = lease_metrics(&before, &after);
        println!(
            "{}",
            serde_json::to_string(&round).context("encoding the result")?
        );
    }
    Ok(())
}
