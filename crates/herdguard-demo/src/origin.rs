//! The simulated slow origin: a weather API keyed by city, with a latency
//! distribution, a failure rate and a failure window, that counts its own calls.
//!
//! The origin's counter is the ground truth of every "origin calls" figure: the
//! strategies never report their own loads.

use std::sync::atomic::{AtomicU64, Ordering};
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
    }

    /// The weather in `city`, after the origin's latency.
    pub async fn fetch(&self, city: &str) -> Result<String, OriginError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let started = Instant::now();
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
        tokio::time::sleep(latency).await;
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
