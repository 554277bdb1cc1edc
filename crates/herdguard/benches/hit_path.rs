//! Hit-path throughput, side by side in one run: `herdguard::Cache::get_or_load`
//! on present keys vs `moka::future::Cache::get_with` vs `quick_cache::sync::Cache::get`.
//!
//! Harness, identical for the three: 2 OS threads, each with its own Tokio
//! current-thread runtime (so the cache is measured, not a scheduler), each
//! `block_on` one loop over its own pre-generated random key sequence (the same
//! sequences for every cache) for a fixed time window. 10,000 `u64` keys,
//! prefilled, capacity 20,000, so every call is a hit (checked: a miss is counted
//! and reported). The three run in rotating order within each round, and each
//! figure is the median over the rounds; the ratios are medians of per-round ratios
//! (same round, same machine load).
//!
//! `cargo bench -p herdguard --bench hit_path` runs the full measurement (cargo
//! passes `--bench`); without `--bench` (e.g. `cargo test --benches`) it runs one
//! short smoke round.
//!
//! `HIT_PATH_PROFILE=N` runs only herdguard, on one thread, for exactly N calls and
//! prints nothing else: a stable target for
//! `valgrind --tool=callgrind target/release/deps/hit_path-*`.

use std::future::Future;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use herdguard::Cache;

const KEYS: u64 = 10_000;
const CAPACITY: u64 = 20_000;
const THREADS: usize = 2;
/// Length of each thread's pre-generated key sequence (it is cycled).
const SEQUENCE: usize = 1 << 16;
/// Calls between two looks at the clock.
const CHUNK: usize = 1024;

struct Settings {
    rounds: usize,
    window: Duration,
}

fn settings() -> Settings {
    if std::env::args().any(|a| a == "--bench") {
        Settings {
            rounds: 7,
            window: Duration::from_millis(400),
        }
    } else {
        Settings {
            rounds: 1,
            window: Duration::from_millis(20),
        }
    }
}

/// The key set: spread over the `u64` range so hashing sees realistic keys.
fn key(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// One random key sequence per thread, the same for every cache.
fn sequences() -> Vec<Vec<u64>> {
    (0..THREADS)
        .map(|t| {
            let mut rng = fastrand::Rng::with_seed(0x5EED + t as u64);
            (0..SEQUENCE).map(|_| key(rng.u64(0..KEYS))).collect()
        })
        .collect()
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread Tokio runtime")
}

/// Runs `op` on every thread for `window`; returns total calls per second.
fn measure<F, Fut>(sequences: &[Vec<u64>], window: Duration, op: F) -> f64
where
    F: Fn(u64) -> Fut + Sync,
    Fut: Future<Output = u64>,
{
    let start = Barrier::new(sequences.len());
    let per_thread: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> = sequences
            .iter()
            .map(|seq| {
                let (op, start) = (&op, &start);
                s.spawn(move || {
                    let runtime = current_thread_runtime();
                    start.wait();
                    runtime.block_on(async move {
                        let began = Instant::now();
                        let (mut calls, mut pos, mut sum) = (0u64, 0usize, 0u64);
                        loop {
                            for &k in &seq[pos..pos + CHUNK] {
                                sum = sum.wrapping_add(op(k).await);
                            }
                            pos = (pos + CHUNK) % SEQUENCE;
                            calls += CHUNK as u64;
                            let elapsed = began.elapsed();
                            if elapsed >= window {
                                black_box(sum);
                                return calls as f64 / elapsed.as_secs_f64();
                            }
                        }
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .collect()
    });
    per_thread.iter().sum()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn mops(x: f64) -> String {
    format!("{:.1} M ops/s", x / 1e6)
}

fn herdguard_cache(runtime: &tokio::runtime::Runtime) -> Cache<u64, u64> {
    let cache: Cache<u64, u64> = Cache::builder()
        .max_entries(CAPACITY)
        .ttl(Duration::from_secs(3600))
        .build()
        .expect("herdguard cache");
    runtime.block_on(async {
        for i in 0..KEYS {
            cache.insert(key(i), i).await.expect("insert");
        }
    });
    cache
}

/// Misses per cache (herdguard, moka, quick_cache): a loader the hit path must
/// never run counts here (static: herdguard's loader must be `'static`).
static MISSES: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

/// A loader that must never run on the hit path; it counts if it does.
async fn miss_loader(misses: &'static AtomicU64, k: u64) -> Result<u64, std::io::Error> {
    misses.fetch_add(1, Ordering::Relaxed);
    Ok(k)
}

fn profile(calls: u64) {
    let runtime = current_thread_runtime();
    let cache = herdguard_cache(&runtime);
    let seq = &sequences()[0];
    let sum = runtime.block_on(async {
        let mut sum = 0u64;
        for i in 0..calls {
            let k = seq[i as usize % SEQUENCE];
            let v = cache
                .get_or_load(k, move || async move { Ok::<_, std::io::Error>(k) })
                .await;
            sum = sum.wrapping_add(v.map_or(0, |v| *v));
        }
        sum
    });
    black_box(sum);
}

fn main() {
    if let Some(calls) = std::env::var("HIT_PATH_PROFILE")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        profile(calls);
        return;
    }
    let Settings { rounds, window } = settings();
    let sequences = sequences();
    let setup = current_thread_runtime();

    let herdguard = herdguard_cache(&setup);
    let moka: moka::future::Cache<u64, u64> = moka::future::Cache::new(CAPACITY);
    let quick: quick_cache::sync::Cache<u64, u64> =
        quick_cache::sync::Cache::new(CAPACITY as usize);
    setup.block_on(async {
        for i in 0..KEYS {
            moka.insert(key(i), i).await;
            quick.insert(key(i), i);
        }
        moka.run_pending_tasks().await;
    });

    let names = ["herdguard", "moka", "quick_cache"];
    let mut results: [Vec<f64>; 3] = Default::default();
    for round in 0..rounds {
        for j in 0..3 {
            let which = (round + j) % 3;
            let misses = &MISSES[which];
            let rate = match which {
                0 => {
                    let cache = &herdguard;
                    measure(&sequences, window, move |k| async move {
                        match cache.get_or_load(k, move || miss_loader(misses, k)).await {
                            Ok(v) => *v,
                            Err(_) => 0,
                        }
                    })
                }
                1 => {
                    let cache = &moka;
                    measure(&sequences, window, move |k| async move {
                        cache
                            .get_with(k, async move { miss_loader(misses, k).await.unwrap_or(0) })
                            .await
                    })
                }
                _ => {
                    let cache = &quick;
                    measure(&sequences, window, move |k| async move {
                        cache.get(&k).unwrap_or_else(|| {
                            misses.fetch_add(1, Ordering::Relaxed);
                            0
                        })
                    })
                }
            };
            results[which].push(rate);
        }
    }

    let ratio = |a: usize, b: usize| {
        median(
            results[a]
                .iter()
                .zip(&results[b])
                .map(|(x, y)| x / y)
                .collect(),
        )
    };
    let herdguard_misses = MISSES[0].load(Ordering::Relaxed) + herdguard.metrics().loads;
    for (name, m) in names.iter().zip(&MISSES) {
        let m = if *name == "herdguard" {
            herdguard_misses
        } else {
            m.load(Ordering::Relaxed)
        };
        if m > 0 {
            println!("warning: {name} missed {m} times: not a pure hit-path figure");
        }
    }
    println!(
        "hit path ({THREADS} threads, {KEYS} keys, {rounds} rounds x {} ms, median): \
         herdguard {} | moka {} | quick_cache {} | herdguard/moka {:.1}x | herdguard/quick_cache {:.2}x",
        window.as_millis(),
        mops(median(results[0].clone())),
        mops(median(results[1].clone())),
        mops(median(results[2].clone())),
        ratio(0, 1),
        ratio(0, 2),
    );
}
