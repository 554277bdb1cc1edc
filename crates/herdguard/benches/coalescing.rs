//! Cold-key coalescing, side by side in one run: N concurrent callers of one cold
//! key with a 50 ms loader, herdguard `get_or_load` vs moka `get_with`.
//!
//! Measured per round: from the loader's completion (it records `Instant::now()`
//! just before returning its value) to the return of the *last* caller — how long
//! the waiters queue behind one another once the value exists. Harness, identical
//! for both: a 2-worker multi-thread Tokio runtime, a fresh cache per round, the
//! N callers spawned as tasks from a task on that runtime. The loader first waits
//! (bounded) until every caller has made its call, then sleeps 50 ms, so all N are
//! parked waiters when the value arrives, whatever the machine's load. Each caller
//! records its return as nanoseconds since the round's base instant into one
//! `fetch_max`; the last one to finish ends the round (no join handles polled
//! meanwhile, so the harness adds no wake-ups of its own). Rounds alternate between
//! the two caches; p50/p99 are nearest-rank over the rounds (with 20 rounds, p99
//! is the worst round).
//!
//! `cargo bench -p herdguard --bench coalescing` runs 100 / 1,000 / 10,000 callers
//! × 20 rounds (cargo passes `--bench`); without `--bench` it runs a short smoke
//! check (100 callers, 2 rounds).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use herdguard::Cache;
use tokio::sync::oneshot;

const LOAD: Duration = Duration::from_millis(50);
const KEY: u64 = 42;
const VALUE: u64 = 7;
/// How long the loader waits at most for every caller to have called.
const GATE: Duration = Duration::from_secs(5);

/// What every round shares: the callers' counts and clocks.
struct Round {
    callers: usize,
    base: Instant,
    /// Callers that have made their call.
    joined: AtomicUsize,
    /// Callers not yet returned; the one that brings it to 0 ends the round.
    remaining: AtomicUsize,
    /// Latest return, in nanoseconds since `base`.
    last_return: AtomicU64,
    /// Callers that got the right value.
    correct: AtomicUsize,
    loads: AtomicUsize,
    loaded_at: OnceLock<Instant>,
    done: std::sync::Mutex<Option<oneshot::Sender<()>>>,
}

/// One round's figures.
struct Sample {
    /// Loader completion to last caller's return.
    last_waiter: Duration,
    loads: usize,
    all_joined: bool,
    correct: usize,
}

impl Round {
    fn new(callers: usize) -> (Arc<Self>, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let round = Round {
            callers,
            base: Instant::now(),
            joined: AtomicUsize::new(0),
            remaining: AtomicUsize::new(callers),
            last_return: AtomicU64::new(0),
            correct: AtomicUsize::new(0),
            loads: AtomicUsize::new(0),
            loaded_at: OnceLock::new(),
            done: std::sync::Mutex::new(Some(tx)),
        };
        (Arc::new(round), rx)
    }

    /// The loader: waits until every caller has called, then takes 50 ms.
    async fn load(&self) -> u64 {
        self.loads.fetch_add(1, Ordering::SeqCst);
        let gate = Instant::now();
        while self.joined.load(Ordering::SeqCst) < self.callers && gate.elapsed() < GATE {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(LOAD).await;
        let _ = self.loaded_at.set(Instant::now());
        VALUE
    }

    fn returned(&self, value: Option<u64>) {
        let at = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_return.fetch_max(at, Ordering::SeqCst);
        if value == Some(VALUE) {
            self.correct.fetch_add(1, Ordering::SeqCst);
        }
        if self.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
            if let Some(tx) = self.done.lock().ok().and_then(|mut d| d.take()) {
                let _ = tx.send(());
            }
        }
    }

    fn sample(&self) -> Sample {
        let last = self.base + Duration::from_nanos(self.last_return.load(Ordering::SeqCst));
        let loaded = self.loaded_at.get().copied().unwrap_or(last);
        Sample {
            last_waiter: last.saturating_duration_since(loaded),
            loads: self.loads.load(Ordering::SeqCst),
            all_joined: self.joined.load(Ordering::SeqCst) == self.callers,
            correct: self.correct.load(Ordering::SeqCst),
        }
    }
}

async fn herdguard_round(callers: usize) -> Sample {
    let cache: Cache<u64, u64> = Cache::builder()
        .ttl(Duration::from_secs(3600))
        .build()
        .expect("herdguard cache");
    let (round, done) = Round::new(callers);
    for _ in 0..callers {
        let (cache, round) = (cache.clone(), Arc::clone(&round));
        tokio::spawn(async move {
            round.joined.fetch_add(1, Ordering::SeqCst);
            let loader_round = Arc::clone(&round);
            let got = cache
                .get_or_load(KEY, move || async move {
                    Ok::<_, Infallible>(loader_round.load().await)
                })
                .await;
            round.returned(got.ok().map(|v| *v));
        });
    }
    let _ = done.await;
    round.sample()
}

async fn moka_round(callers: usize) -> Sample {
    let cache: moka::future::Cache<u64, u64> = moka::future::Cache::builder()
        .max_capacity(10_000)
        .time_to_live(Duration::from_secs(3600))
        .build();
    let (round, done) = Round::new(callers);
    for _ in 0..callers {
        let (cache, round) = (cache.clone(), Arc::clone(&round));
        tokio::spawn(async move {
            round.joined.fetch_add(1, Ordering::SeqCst);
            let got = cache.get_with(KEY, round.load()).await;
            round.returned(Some(got));
        });
    }
    let _ = done.await;
    round.sample()
}

/// Nearest-rank percentile of sorted durations.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

struct Tally {
    latencies: Vec<Duration>,
    extra_loads: usize,
    not_joined: usize,
    wrong: usize,
}

impl Tally {
    fn new() -> Self {
        Tally {
            latencies: Vec::new(),
            extra_loads: 0,
            not_joined: 0,
            wrong: 0,
        }
    }

    fn add(&mut self, s: Sample, callers: usize) {
        self.latencies.push(s.last_waiter);
        self.extra_loads += s.loads.saturating_sub(1);
        self.not_joined += usize::from(!s.all_joined);
        self.wrong += callers - s.correct;
    }

    fn summary(&mut self, name: &str) -> String {
        self.latencies.sort();
        let mut line = format!(
            "{name} p50 {} p99 {}",
            ms(percentile(&self.latencies, 0.50)),
            ms(percentile(&self.latencies, 0.99)),
        );
        if self.extra_loads + self.not_joined + self.wrong > 0 {
            line.push_str(&format!(
                " (WARNING: {} extra loads, {} rounds with callers not yet joined, {} wrong answers)",
                self.extra_loads, self.not_joined, self.wrong
            ));
        }
        line
    }
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (sizes, rounds): (&[usize], usize) = if bench {
        (&[100, 1_000, 10_000], 20)
    } else {
        (&[100], 2)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a 2-worker Tokio runtime");
    for &callers in sizes {
        let (mut herdguard, mut moka) = (Tally::new(), Tally::new());
        for round in 0..rounds {
            // Alternate which goes first, so neither always follows the other.
            for which in [round % 2, 1 - round % 2] {
                let sample = if which == 0 {
                    runtime.block_on(runtime.spawn(herdguard_round(callers)))
                } else {
                    runtime.block_on(runtime.spawn(moka_round(callers)))
                }
                .expect("round task");
                if which == 0 {
                    herdguard.add(sample, callers);
                } else {
                    moka.add(sample, callers);
                }
            }
        }
        let (h, m) = (herdguard.summary("herdguard"), moka.summary("moka"));
        let ratio = percentile(&moka.latencies, 0.99).as_secs_f64()
            / percentile(&herdguard.latencies, 0.99)
                .as_secs_f64()
                .max(1e-9);
        println!(
            "coalescing {callers} callers, 50 ms loader, {rounds} rounds, last waiter after load: \
             {h} | {m} | moka/herdguard p99 {ratio:.1}x"
        );
    }
}
