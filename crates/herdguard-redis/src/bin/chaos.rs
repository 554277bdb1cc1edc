//! One process of the randomized fault test (`tests/fault_history.rs`): runs
//! random `get_or_load` / `insert` / `invalidate` calls on a small key set for
//! `--secs`, through a `Cache` over `RedisRemote`, and prints the history as
//! JSON lines on stdout for the checker — every call with its start and end
//! (Unix nanoseconds, one clock for every process of the machine), every
//! origin call, and every change of the shared store's health.
//!
//! Every value is unique: `L<pid>-<n>` from the loader, `I<pid>-<n>` from an
//! insert, so the checker knows where each answer came from. Seeded: the
//! same `--seed` and `--index` make the same choices.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::Parser;
use herdguard::Cache;
use herdguard_redis::{RedisConfig, RedisRemote};
use serde_json::json;
use tokio::sync::mpsc;

#[derive(Parser, Debug)]
#[command(about = "herdguard-redis fault-test worker (test helper)")]
struct Args {
    /// Redis URL.
    #[arg(long)]
    url: String,
    /// How long to run.
    #[arg(long, default_value_t = 30)]
    secs: u64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// This process's index in the fleet (varies the seed).
    #[arg(long, default_value_t = 0)]
    index: u64,
    /// Keys `k0` … `k(N-1)`.
    #[arg(long, default_value_t = 6)]
    keys: usize,
    /// Concurrent callers in this process.
    #[arg(long, default_value_t = 8)]
    tasks: usize,
    /// TTL of every value.
    #[arg(long, default_value_t = 1000)]
    ttl_ms: u64,
    /// Stale-while-revalidate window.
    #[arg(long, default_value_t = 300)]
    swr_ms: u64,
    /// A caller's wait deadline (past it: an error, which the checker counts).
    #[arg(long, default_value_t = 2000)]
    wait_timeout_ms: u64,
    /// Bound on every Redis operation.
    #[arg(long, default_value_t = 100)]
    op_timeout_ms: u64,
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn main() -> std::process::ExitCode {
    common::run_main(Args::parse(), run)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let op_timeout = Duration::from_millis(args.op_timeout_ms);
    let config = RedisConfig::new(args.url.clone())
        .lease_ttl(Duration::from_secs(1))
        .op_timeout(op_timeout);
    let remote = RedisRemote::<String, String>::connect(config)
        .await
        .context("connecting the shared store")?;
    let cache: Cache<String, String> = Cache::builder()
        .ttl(Duration::from_millis(args.ttl_ms))
        .stale_while_revalidate(Duration::from_millis(args.swr_ms))
        .wait_timeout(Duration::from_millis(args.wait_timeout_ms))
        .shared_store(remote)
        .fleet_poll_interval(Duration::from_millis(100))
        .shared_store_probe_interval(Duration::from_millis(100))
        .build()
        .context("building the cache")?;
    let pid = std::process::id();
    println!("ready");
    let (tx, mut rx) = mpsc::unbounded_channel::<serde_json::Value>();
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt as _;
        let mut out = tokio::io::BufWriter::new(tokio::io::stdout());
        while let Some(line) = rx.recv().await {
            if out.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                break;
            }
        }
        let _ = out.flush().await;
    });

    let deadline = Instant::now() + Duration::from_secs(args.secs);
    let values = Arc::new(AtomicU64::new(0));
    // Health transitions, as the checker's period boundaries.
    let watcher = {
        let (cache, tx) = (cache.clone(), tx.clone());
        tokio::spawn(async move {
            let mut healthy = true;
            while Instant::now() < deadline {
                let now = cache.shared_store_healthy();
                if now != healthy {
                    healthy = now;
                    let _ = tx.send(
                        json!({"kind": "health", "p": pid, "at": unix_nanos(), "healthy": now}),
                    );
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let tasks: Vec<_> = (0..args.tasks)
        .map(|t| {
            let (cache, tx, values) = (cache.clone(), tx.clone(), values.clone());
            let mut rng = fastrand::Rng::with_seed(
                args.seed
                    .wrapping_mul(1_000_003)
                    .wrapping_add(args.index * 1_009 + t as u64),
            );
            let keys = args.keys;
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let key = format!("k{}", rng.usize(..keys));
                    let roll = rng.u32(..100);
                    let start = unix_nanos();
                    if roll < 8 {
                        let result = cache.invalidate(&key).await;
                        let _ = tx.send(json!({"kind": "inv", "p": pid, "key": key, "start": start,
                            "end": unix_nanos(), "ok": result.is_ok()}));
                    } else if roll < 12 {
                        let value = format!("I{pid}-{}", values.fetch_add(1, Ordering::Relaxed));
                        let result = cache.insert(key.clone(), value.clone()).await;
                        let _ = tx.send(json!({"kind": "ins", "p": pid, "key": key, "start": start,
                            "end": unix_nanos(), "ok": result.is_ok(), "value": value}));
                    } else {
                        let latency = Duration::from_millis(rng.u64(5..40));
                        let (tx_load, values, load_key) = (tx.clone(), values.clone(), key.clone());
                        let result = cache
                            .get_or_load(key.clone(), move || async move {
                                let started = unix_nanos();
                                let value = format!("L{pid}-{}", values.fetch_add(1, Ordering::Relaxed));
                                tokio::time::sleep(latency).await;
                                let _ = tx_load.send(json!({"kind": "load", "p": pid, "key": load_key,
                                    "start": started, "end": unix_nanos(), "value": value}));
                                Ok::<_, std::io::Error>(value)
                            })
                            .await;
                        let end = unix_nanos();
                        let line = match result {
                            Ok(v) => json!({"kind": "get", "p": pid, "key": key, "start": start, "end": end,
                                "value": v.as_str(), "served": v.served().as_str()}),
                            Err(e) => json!({"kind": "get", "p": pid, "key": key, "start": start, "end": end,
                                "error": e.to_string()}),
                        };
                        let _ = tx.send(line);
                    }
                    tokio::time::sleep(Duration::from_millis(rng.u64(1..10))).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.context("a caller task failed")?;
    }
    watcher.await.context("the health watcher failed")?;
    let m = cache.metrics();
    let _ = tx.send(json!({"kind": "done", "p": pid, "loads": m.loads, "remote_errors": m.remote_errors,
        "degradations": m.degradations, "recoveries": m.recoveries, "resyncs": m.resyncs,
        "remote_evictions": m.remote_evictions, "superseded": m.superseded, "unconfirmed": m.unconfirmed,
        "leases_lost": m.leases_lost, "renew_errors": m.renew_errors}));
    drop(tx);
    drop(cache);
    writer.await.context("the history writer failed")?;
    Ok(())
}
