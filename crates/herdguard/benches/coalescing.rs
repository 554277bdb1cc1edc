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
//! the contenders; p50/p99 are nearest-rank over the rounds (100 rounds, so p99
//! is the second-worst round, not the worst: one preemption of a worker thread on
//! a shared machine does not make the figure).
//!
//! `cargo bench -p herdguard --bench coalescing` runs 100 / 1,000 / 10,000 callers
//! × 100 rounds (cargo passes `--bench`); without `--bench` it runs a short smoke
//! check (100 callers, 2 rounds). `COALESCING_CALLERS`, `COALESCING_ROUNDS` and
//! `COALESCING_ONLY` narrow a run.
//!
//! `COALESCING_WINDOW=herdguard` (or `moka`, `floor`) instead runs one round on a
//! current-thread runtime with the whole window — from the loader's return to
//! the last caller's return — inside one function, [`wake_window`], for an exact
//! instruction count that no machine load disturbs:
//! `valgrind --tool=callgrind --toggle-collect='*wake_window*' <bench binary>`.

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

/// The floor of this harness: the same callers waiting on a plain
/// `tokio::sync::watch` channel that a spawned loader task fills — no cache, only
/// the runtime waking N tasks. What a cache adds on top of this is its own cost.
async fn floor_round(callers: usize) -> Sample {
    let (tx, rx) = tokio::sync::watch::channel(None::<u64>);
    let (round, done) = Round::new(callers);
    for _ in 0..callers {
        let (mut rx, round) = (rx.clone(), Arc::clone(&round));
        tokio::spawn(async move {
            round.joined.fetch_add(1, Ordering::SeqCst);
            let got = rx.wait_for(Option::is_some).await.ok().and_then(|v| *v);
            round.returned(got);
        });
    }
    let loader_round = Arc::clone(&round);
    tokio::spawn(async move {
        let value = loader_round.load().await;
        tx.send_replace(Some(value));
    });
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

fn env_number(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|n| n.parse().ok())
}

type RoundFn = fn(usize) -> std::pin::Pin<Box<dyn std::future::Future<Output = Sample> + Send>>;

/// One round on a current-thread runtime, everything from the loader's return
/// to the last caller's return inside [`wake_window`], for callgrind. The loader
/// waits on a gate instead of a timer, so nothing but the window runs in it.
fn window_profile(which: &str, callers: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread Tokio runtime");
    let _entered = runtime.enter();
    let (open, gate) = oneshot::channel::<()>();
    let gate = Arc::new(std::sync::Mutex::new(Some(gate)));
    // Only the one loader that runs takes the gate.
    let load = move || {
        let gate = gate.lock().ok().and_then(|mut g| g.take());
        async move {
            if let Some(gate) = gate {
                let _ = gate.await;
            }
            VALUE
        }
    };
    let (round, done) = Round::new(callers);
    let herdguard: Cache<u64, u64> = Cache::builder()
        .ttl(Duration::from_secs(3600))
        .build()
        .expect("herdguard cache");
    let moka: moka::future::Cache<u64, u64> = moka::future::Cache::builder()
        .max_capacity(10_000)
        .time_to_live(Duration::from_secs(3600))
        .build();
    let (tx, rx) = tokio::sync::watch::channel(None::<u64>);
    for _ in 0..callers {
        let (round, load) = (Arc::clone(&round), load.clone());
        match which {
            "herdguard" => {
                let cache = herdguard.clone();
                tokio::spawn(async move {
                    round.joined.fetch_add(1, Ordering::SeqCst);
                    let got = cache
                        .get_or_load(
                            KEY,
                            move || async move { Ok::<_, Infallible>(load().await) },
                        )
                        .await;
                    round.returned(got.ok().map(|v| *v));
                });
            }
            "moka" => {
                let cache = moka.clone();
                tokio::spawn(async move {
                    round.joined.fetch_add(1, Ordering::SeqCst);
                    let got = cache.get_with(KEY, async move { load().await }).await;
                    round.returned(Some(got));
                });
            }
            _ => {
                let mut rx = rx.clone();
                tokio::spawn(async move {
                    round.joined.fetch_add(1, Ordering::SeqCst);
                    let got = rx.wait_for(Option::is_some).await.ok().and_then(|v| *v);
                    round.returned(got);
                });
            }
        }
    }
    if which == "floor" {
        tokio::spawn(async move {
            let value = load().await;
            tx.send_replace(Some(value));
        });
    }
    // On one thread a task's first poll runs to its first pending await in one
    // go: once every caller has joined, and the loader's own task has run, all
    // are parked.
    runtime.block_on(async {
        while round.joined.load(Ordering::SeqCst) < callers {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    });
    wake_window(&runtime, open, done);
    let correct = round.correct.load(Ordering::SeqCst);
    println!("window {which}: {callers} callers, {correct} got the value");
    assert_eq!(correct, callers, "every caller gets the value");
}

/// Opens the loader's gate and runs the runtime until the last caller returns.
#[inline(never)]
fn wake_window(
    runtime: &tokio::runtime::Runtime,
    open: oneshot::Sender<()>,
    done: oneshot::Receiver<()>,
) {
    let _ = open.send(());
    let _ = runtime.block_on(done);
}

fn main() {
    if let Ok(which) = std::env::var("COALESCING_WINDOW") {
        return window_profile(&which, env_number("COALESCING_CALLERS").unwrap_or(1_000));
    }
    let bench = std::env::args().any(|a| a == "--bench");
    let (mut sizes, mut rounds): (Vec<usize>, usize) = if bench {
        (vec![100, 1_000, 10_000], 100)
    } else {
        (vec![100], 2)
    };
    // For profiling one contender at one size:
    // COALESCING_ONLY=herdguard COALESCING_CALLERS=10000.
    if let Some(n) = env_number("COALESCING_CALLERS") {
        sizes = vec![n];
    }
    if let Some(n) = env_number("COALESCING_ROUNDS") {
        rounds = n.max(1);
    }
    let only = std::env::var("COALESCING_ONLY").ok();
    let contenders: [(&str, RoundFn); 3] = [
        ("herdguard", |n| Box::pin(herdguard_round(n))),
        ("moka", |n| Box::pin(moka_round(n))),
        ("floor (tokio watch, no cache)", |n| {
            Box::pin(floor_round(n))
        }),
    ];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a 2-worker Tokio runtime");
    for &callers in &sizes {
        let mut tallies: Vec<Tally> = contenders.iter().map(|_| Tally::new()).collect();
        for round in 0..rounds {
            // Rotate which goes first, so none always follows another.
            for j in 0..contenders.len() {
                let which = (round + j) % contenders.len();
                let (name, run) = contenders[which];
                if only.as_deref().is_some_and(|o| !name.starts_with(o)) {
                    continue;
                }
                let sample = runtime
                    .block_on(runtime.spawn(run(callers)))
                    .expect("round task");
                tallies[which].add(sample, callers);
            }
        }
        let lines: Vec<String> = contenders
            .iter()
            .zip(&mut tallies)
            .filter(|(_, t)| !t.latencies.is_empty())
            .map(|((name, _), t)| t.summary(name))
            .collect();
        let mut line = format!(
            "coalescing {callers} callers, 50 ms loader, {rounds} rounds, last waiter after load: {}",
            lines.join(" | ")
        );
        // Ratios to moka (below 1: faster than moka), the floor's too: what
        // no cache can go below in this harness.
        if !tallies[1].latencies.is_empty() {
            let ratio = |t: &Tally, p: f64| {
                percentile(&t.latencies, p).as_secs_f64()
                    / percentile(&tallies[1].latencies, p).as_secs_f64().max(1e-9)
            };
            for (i, name) in [(0, "herdguard"), (2, "floor")] {
                if !tallies[i].latencies.is_empty() {
                    line.push_str(&format!(
                        " | {name}/moka p50 {:.2}x p99 {:.2}x",
                        ratio(&tallies[i], 0.50),
                        ratio(&tallies[i], 0.99)
                    ));
                }
            }
        }
        println!("{line}");
    }
}
