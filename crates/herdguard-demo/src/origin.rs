//! The simulated slow origin: a weather API keyed by city, with a latency
//! distribution, a failure rate and a failure window, that counts its own calls.
//!
//! The origin's counter is the ground truth of every "origin calls" figure: the
//! strategies never report their own loads.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// How the origin behaves.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OriginConfig {
    /// Mean latency of one call.
    pub latency: Duration,
    /// Each call's latency is uniform in `latency ± jitter` (never below zero).
    pub jitter: Duration,
    /// Chance that a call fails outside the failure window, in `[0, 1]`.
    pub failure_rate: f64,
}

/// The origin answered with an error (a simulated 503).
#[derive(Debug, thiserror::Error)]
#[error("weather API unavailable for {city} (simulated)")]
pub struct OriginError {
    city: String,
}

/// A weather API that is slow, sometimes fails, and counts its calls.
pub struct WeatherOrigin {
    config: OriginConfig,
    calls: AtomicU64,
    failures: AtomicU64,
    /// Seeded draws of latency and failure, so `--seed` reproduces a run.
    rng: Mutex<fastrand::Rng>,
    /// Calls that start inside this window fail.
    failing: Mutex<Option<(Instant, Instant)>>,
    /// Every call: its city, when it started and (once it has) when it ended.
    log: Mutex<Vec<CallRecord>>,
    /// Calls before this index were forgotten by [`WeatherOrigin::reset_counts`].
    log_from: AtomicUsize,
}

/// One origin call, as the origin saw it.
#[derive(Clone, Debug)]
pub struct CallRecord {
    /// The city asked for.
    pub city: String,
    /// When the call started.
    pub started: Instant,
    /// When it ended (`None` while it runs).
    pub ended: Option<Instant>,
}

impl WeatherOrigin {
    /// An origin with this behaviour; `seed` drives its latency and failure draws.
    pub fn new(config: OriginConfig, seed: u64) -> Self {
        WeatherOrigin {
            config,
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            failing: Mutex::new(None),
            log: Mutex::new(Vec::new()),
            log_from: AtomicUsize::new(0),
        }
    }

    /// Makes every call that starts in `[from, until)` fail.
    pub fn fail_between(&self, from: Instant, until: Instant) {
        *self.failing.lock() = Some((from, until));
    }

    /// Calls made so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Calls that failed so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::SeqCst)
    }

    /// Forgets the calls made so far (after a warm-up that is not measured).
    pub fn reset_counts(&self) {
        self.calls.store(0, Ordering::SeqCst);
        self.failures.store(0, Ordering::SeqCst);
        // Indices stay valid: a call in flight still records its end.
        self.log_from.store(self.log.lock().len(), Ordering::SeqCst);
    }

    /// Every call made since the last [`reset_counts`](Self::reset_counts), in the
    /// order they started.
    pub fn call_log(&self) -> Vec<CallRecord> {
        let from = self.log_from.load(Ordering::SeqCst);
        self.log
            .lock()
            .get(from..)
            .map(<[_]>::to_vec)
            .unwrap_or_default()
    }

    /// The weather in `city`, after the origin's latency.
    pub async fn fetch(&self, city: &str) -> Result<String, OriginError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let started = Instant::now();
        let index = {
            let mut log = self.log.lock();
            log.push(CallRecord {
                city: city.to_string(),
                started,
                ended: None,
            });
            log.len() - 1
        };
        let in_window = self
            .failing
            .lock()
            .is_some_and(|(from, until)| started >= from && started < until);
        let (latency, unlucky) = {
            let mut rng = self.rng.lock();
            let jitter = self.config.jitter.as_secs_f64();
            let offset = (rng.f64() * 2.0 - 1.0) * jitter;
            let secs = (self.config.latency.as_secs_f64() + offset).max(0.0);
            (
                Duration::from_secs_f64(secs),
                rng.f64() < self.config.failure_rate,
            )
        };
        {
            // Records the end even when the caller gives up mid-call (the future dropped).
            let _ended = EndOnDrop {
                log: &self.log,
                index,
            };
            tokio::time::sleep(latency).await;
        }
        if in_window || unlucky {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err(OriginError {
                city: city.to_string(),
            });
        }
        // A deterministic reading per city, varied by the call number so a refresh
        // is visibly a new value.
        let base: i64 = city.bytes().map(i64::from).sum::<i64>() % 35 - 10;
        Ok(format!(
            "{city}: {} °C (reading #{n})",
            base + (n % 3) as i64
        ))
    }
}

/// Sets a call's end when dropped.
struct EndOnDrop<'a> {
    log: &'a Mutex<Vec<CallRecord>>,
    index: usize,
}

impl Drop for EndOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(call) = self.log.lock().get_mut(self.index) {
            call.ended = Some(Instant::now());
        }
    }
}

const CITIES: [&str; 16] = [
    "oslo", "lima", "cairo", "tokyo", "paris", "quito", "dakar", "perth", "delhi", "miami",
    "seoul", "rome", "kyiv", "accra", "hanoi", "bern",
];

/// The city name (cache key suffix) of key number `i`.
pub fn city(i: u32) -> String {
    match CITIES.get(i as usize) {
        Some(name) => (*name).to_string(),
        None => format!("city-{i}"),
    }
}
