//! The live load of the web demonstrator: steady traffic through a few
//! strategies side by side, until stopped, and the two faults a person can
//! throw at it while it runs — a cache stampede (every key forgotten at once
//! and a burst of concurrent callers per key) and a network partition (the
//! shared store cut off for a while with Redis; the origin without).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::args::range;
use crate::error::{bad, DemoError};
use crate::origin::{city, OriginConfig, WeatherOrigin};
use crate::relay::Relay;
use crate::stats::{percentile_ms, Outcome};
use crate::strategy::{Client, ClientConfig, Strategy};

/// How long a partition lasts.
pub const PARTITION: Duration = Duration::from_secs(3);
/// Faults remembered for the page.
const EVENTS: usize = 8;

/// What the page asks for.
#[derive(Clone, Debug, Deserialize)]
pub struct LiveSettings {
    /// Strategies side by side.
    pub strategies: Vec<Strategy>,
    /// Keys the load spreads over.
    pub keys: u32,
    /// Requests per second, per strategy.
    pub rate: u32,
    /// Concurrent callers per key in a stampede.
    pub threads: u32,
    /// Origin latency, ms.
    pub origin_latency_ms: u64,
    /// TTL of cached values, ms.
    pub ttl_ms: u64,
}

impl LiveSettings {
    fn check(&self, redis: bool) -> Result<(), DemoError> {
        range("keys", u64::from(self.keys), 1, 100)?;
        range("rate", u64::from(self.rate), 1, 2_000)?;
        range("concurrency", u64::from(self.threads), 1, 1_000)?;
        range("origin latency (ms)", self.origin_latency_ms, 1, 10_000)?;
        range("TTL (ms)", self.ttl_ms, 100, 600_000)?;
        if self.strategies.is_empty() || self.strategies.len() > 6 {
            return Err(bad("pick 1 to 6 strategies"));
        }
        for s in &self.strategies {
            if s.is_write_pattern() {
                return Err(bad(format!("{} is a write pattern", s.name())));
            }
            if *s == Strategy::Fleet && !redis {
                return Err(bad("the fleet strategy needs Redis (--redis or --fleet)"));
            }
        }
        Ok(())
    }
}

/// One strategy's figures over the last interval, per second.
#[derive(Clone, Debug, Serialize)]
pub struct LiveFigures {
    /// Strategy name.
    pub name: String,
    /// Requests answered per second.
    pub rps: f64,
    /// Origin calls per second.
    pub origin: f64,
    /// Errors and timeouts per second.
    pub errors: f64,
    /// Stale answers per second.
    pub stale: f64,
    /// Median latency of the interval, ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency of the interval, ms.
    pub p99_ms: Option<f64>,
    /// Origin calls since the start.
    pub origin_total: u64,
    /// Errors and timeouts since the start.
    pub errors_total: u64,
}

#[derive(Default)]
struct Window {
    errors: u64,
    stale: u64,
    latencies: Vec<u64>,
}

struct Lane {
    strategy: Strategy,
    client: Arc<Client>,
    origin: Arc<WeatherOrigin>,
    relay: Mutex<Option<Relay>>,
    window: Mutex<Window>,
    origin_seen: Mutex<u64>,
    errors_total: Mutex<u64>,
}

impl Lane {
    fn key(&self, run: &str, k: u32) -> String {
        format!(
            "{}:{run}:live:{}:{}",
            crate::KEY_PREFIX,
            self.strategy.name(),
            city(k)
        )
    }

    async fn request(self: &Arc<Self>, run: &str, k: u32, deadline: Duration) {
        let began = Instant::now();
        let outcome = tokio::time::timeout(
            deadline,
            self.client
                .request(&self.key(run, k), &city(k), &self.origin),
        )
        .await
        .unwrap_or(Outcome::Timeout);
        let latency = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut w = self.window.lock();
        match outcome {
            Outcome::Error | Outcome::Timeout => w.errors += 1,
            Outcome::Stale => w.stale += 1,
            _ => {}
        }
        w.latencies.push(latency);
    }
}

/// A running live load; stops when dropped.
pub struct LiveLoad {
    run: String,
    settings: LiveSettings,
    lanes: Vec<Arc<Lane>>,
    started: Instant,
    last_sample: Mutex<Instant>,
    events: Mutex<VecDeque<(f64, String)>>,
    partition_until: Mutex<Option<Instant>>,
    stop: watch::Sender<bool>,
}

impl Drop for LiveLoad {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A caller gives up after this long.
const DEADLINE: Duration = Duration::from_secs(5);

impl LiveLoad {
    /// Builds every strategy's client and starts the load. With `redis`, each
    /// strategy reaches it through its own relay, which a partition cuts.
    pub async fn start(
        settings: LiveSettings,
        redis: Option<&str>,
        run: String,
        seed: u64,
    ) -> Result<Arc<LiveLoad>, DemoError> {
        settings.check(redis.is_some())?;
        let latency = Duration::from_millis(settings.origin_latency_ms);
        let mut lanes = Vec::new();
        for (i, &strategy) in settings.strategies.iter().enumerate() {
            let relay = match redis {
                Some(url) => Some(Relay::start(url).await?),
                None => None,
            };
            let seed = seed.wrapping_add(i as u64);
            let config = ClientConfig {
                ttl: Duration::from_millis(settings.ttl_ms),
                origin_latency: latency,
                seed,
                redis: relay.as_ref().map(|r| r.url().to_string()),
                // The relay is plain TCP (it refuses a rediss:// URL).
                redis_ca: None,
                redis_cluster: Vec::new(),
                store_outage: relay.is_some(),
            };
            let origin = OriginConfig {
                latency,
                jitter: Duration::ZERO,
                failure_rate: 0.0,
            };
            lanes.push(Arc::new(Lane {
                strategy,
                client: Arc::new(Client::new(strategy, &config).await?),
                origin: Arc::new(WeatherOrigin::new(origin, seed)),
                relay: Mutex::new(relay),
                window: Mutex::new(Window::default()),
                origin_seen: Mutex::new(0),
                errors_total: Mutex::new(0),
            }));
        }
        let (stop, stopped) = watch::channel(false);
        let load = Arc::new(LiveLoad {
            run,
            settings,
            lanes,
            started: Instant::now(),
            last_sample: Mutex::new(Instant::now()),
            events: Mutex::new(VecDeque::new()),
            partition_until: Mutex::new(None),
            stop,
        });
        for lane in &load.lanes {
            tokio::spawn(drive(
                Arc::clone(lane),
                load.run.clone(),
                load.settings.keys,
                load.settings.rate,
                stopped.clone(),
            ));
        }
        load.event("live load started");
        Ok(load)
    }

    fn event(&self, what: impl Into<String>) {
        let mut events = self.events.lock();
        if events.len() == EVENTS {
            events.pop_front();
        }
        events.push_back((self.started.elapsed().as_secs_f64(), what.into()));
    }

    /// Every key forgotten at once, then `threads` concurrent callers per key:
    /// the stampede, on demand.
    pub fn stampede(&self) {
        let (keys, threads) = (self.settings.keys, self.settings.threads);
        for lane in &self.lanes {
            let (lane, run) = (Arc::clone(lane), self.run.clone());
            tokio::spawn(async move {
                for k in 0..keys {
                    lane.client.invalidate(&lane.key(&run, k)).await;
                }
                for k in 0..keys {
                    for _ in 0..threads {
                        let (lane, run) = (Arc::clone(&lane), run.clone());
                        tokio::spawn(async move { lane.request(&run, k, DEADLINE).await });
                    }
                }
            });
        }
        self.event(format!(
            "cache stampede: {keys} keys forgotten, {threads} concurrent callers per key"
        ));
    }

    /// Cuts the shared store (with Redis) or the origin (without) for
    /// [`PARTITION`].
    pub fn partition(&self) {
        let now = Instant::now();
        let until = now + PARTITION;
        let mut cut_store = false;
        for lane in &self.lanes {
            match lane.relay.lock().as_mut() {
                Some(relay) => {
                    relay.outage_between(now, until);
                    cut_store = true;
                }
                None => lane.origin.fail_between(now, until),
            }
        }
        *self.partition_until.lock() = Some(until);
        self.event(if cut_store {
            format!(
                "network partition: Redis unreachable for {} s",
                PARTITION.as_secs()
            )
        } else {
            format!(
                "network partition: origin unreachable for {} s",
                PARTITION.as_secs()
            )
        });
    }

    /// Each strategy's figures since the last sample, and the faults so far.
    pub fn sample(&self) -> serde_json::Value {
        let now = Instant::now();
        let secs = {
            let mut last = self.last_sample.lock();
            let secs = now.saturating_duration_since(*last).as_secs_f64().max(1e-3);
            *last = now;
            secs
        };
        let per_s = |n: u64| (n as f64 / secs * 10.0).round() / 10.0;
        let figures: Vec<LiveFigures> = self
            .lanes
            .iter()
            .map(|lane| {
                let mut w = std::mem::take(&mut *lane.window.lock());
                w.latencies.sort_unstable();
                let pct = |q| {
                    (!w.latencies.is_empty())
                        .then(|| (percentile_ms(&w.latencies, q) * 10.0).round() / 10.0)
                };
                let calls = lane.origin.calls();
                let new_calls = {
                    let mut seen = lane.origin_seen.lock();
                    let new = calls.saturating_sub(*seen);
                    *seen = calls;
                    new
                };
                let errors_total = {
                    let mut total = lane.errors_total.lock();
                    *total += w.errors;
                    *total
                };
                LiveFigures {
                    name: lane.strategy.name().to_string(),
                    rps: per_s(w.latencies.len() as u64),
                    origin: per_s(new_calls),
                    errors: per_s(w.errors),
                    stale: per_s(w.stale),
                    p50_ms: pct(0.5),
                    p99_ms: pct(0.99),
                    origin_total: calls,
                    errors_total,
                }
            })
            .collect();
        let partition_left_ms = self
            .partition_until
            .lock()
            .map(|u| u.saturating_duration_since(now).as_millis() as u64)
            .filter(|&ms| ms > 0);
        serde_json::json!({
            "t": (self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            "strategies": figures,
            "partition_left_ms": partition_left_ms,
            "events": self.events.lock().iter().map(|(t, e)| format!("{t:.1} s: {e}")).collect::<Vec<_>>(),
        })
    }
}

/// Steady requests at `rate` per second over `keys`, until `stop`.
async fn drive(
    lane: Arc<Lane>,
    run: String,
    keys: u32,
    rate: u32,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut i: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let k = (i % u64::from(keys.max(1))) as u32;
        i += 1;
        let (lane, run) = (Arc::clone(&lane), run.clone());
        tokio::spawn(async move { lane.request(&run, k, DEADLINE).await });
    }
}
