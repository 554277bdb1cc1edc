//! One process of a test fleet: connects a `Cache` to Redis through
//! `RedisRemote`, prints `ready`, then for each line `go KEY` read on stdin
//! runs `--callers` concurrent `get_or_load(KEY)` and prints one JSON line with
//! what happened. Stops at the end of stdin.
//!
//! The loader counts its calls locally and in Redis (`INCR count:KEY`), sleeps
//! `--loader-ms`, and returns `--value` (default: `v-PID`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use herdguard::Cache;
use herdguard_redis::{RedisConfig, RedisRemote};
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Parser, Debug)]
#[command(about = "herdguard-redis fleet worker (test helper)")]
struct Args {
    /// Redis URL.
    #[arg(long)]
    url: String,
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
    /// How long to skip Redis after an error.
    #[arg(long, default_value_t = 200)]
    retry_after_ms: u64,
    /// The value the loader returns (default `v-PID`).
    #[arg(long)]
    value: Option<String>,
}

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
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = RedisConfig::new(args.url.clone())
        .lease_ttl(Duration::from_millis(args.lease_ttl_ms))
        .renew(!args.no_renew);
    let remote = RedisRemote::<String, String>::connect(config)
        .await
        .context("connecting the shared store")?;
    let cache: Cache<String, String> = Cache::builder()
        .ttl(Duration::from_secs(60))
        .shared_store(remote)
        .fleet_poll_interval(Duration::from_millis(args.poll_ms))
        .shared_store_retry_after(Duration::from_millis(args.retry_after_ms))
        .build()
        .context("building the cache")?;
    let counter = redis::Client::open(args.url.as_str())
        .context("counter client")?
        .get_connection_manager()
        .await
        .context("counter connection")?;
    let value = args
        .value
        .clone()
        .unwrap_or_else(|| format!("v-{}", std::process::id()));
    println!("ready");

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await.context("reading stdin")? {
        let Some(key) = line.strip_prefix("go ") else {
            anyhow::bail!("expected `go KEY`, got {line:?}");
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
                let loader_ms = args.loader_ms;
                tokio::spawn(async move {
                    let result = cache
                        .get_or_load(key.clone(), move || async move {
                            loads.fetch_add(1, Ordering::SeqCst);
                            // Best effort: with Redis down the local count still tells.
                            let _ = tokio::time::timeout(
                                Duration::from_millis(200),
                                redis::AsyncCommands::incr::<_, _, i64>(
                                    &mut counter,
                                    format!("count:{key}"),
                                    1,
                                ),
                            )
                            .await;
                            tokio::time::sleep(Duration::from_millis(loader_ms)).await;
                            Ok::<_, std::io::Error>(value)
                        })
                        .await;
                    let took = start.elapsed();
                    result.map(|v| (v.to_string(), format!("{:?}", v.served()), took))
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
        };
        for call in calls {
            match call.await {
                Ok(Ok((v, served, took))) => {
                    round.ok += 1;
                    if !round.values.contains(&v) {
                        round.values.push(v);
                    }
                    *round.served.entry(served).or_default() += 1;
                    round.latencies_us.push(took.as_micros() as u64);
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
        let after = cache.metrics();
        round.local_loads = loads.load(Ordering::SeqCst);
        round.superseded = after.superseded - before.superseded;
        round.remote_errors = after.remote_errors - before.remote_errors;
        round.l2_hits = after.l2_hits - before.l2_hits;
        println!(
            "{}",
            serde_json::to_string(&round).context("encoding the result")?
        );
    }
    Ok(())
}
