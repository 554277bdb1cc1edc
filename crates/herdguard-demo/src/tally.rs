//! Live counts of a run in progress, per strategy: what the web
//! demonstrator's table shows while the requests are still being answered.
//! The final figures come from the same samples, through
//! [`scenario_report`](crate::report::scenario_report), as the CLI's tables.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

use crate::origin::WeatherOrigin;
use crate::stats::{percentile_ms, Outcome};
use crate::strategy::Strategy;

/// The live counts of every strategy of one run.
pub struct Tally {
    strategies: Vec<StrategyTally>,
}

struct StrategyTally {
    strategy: Strategy,
    total: u64,
    origin: OnceLock<Arc<WeatherOrigin>>,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    errors: u64,
    stale: u64,
    /// Every latency so far, µs (a run has at most a million requests).
    latencies: Vec<u64>,
}

/// One strategy's figures so far.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Live {
    /// Strategy name.
    pub name: String,
    /// Requests answered so far.
    pub done: u64,
    /// Requests the run makes.
    pub total: u64,
    /// Origin calls so far (0 before the measured part starts).
    pub origin_calls: u64,
    /// Errors and timeouts so far.
    pub errors: u64,
    /// Answers served stale so far.
    pub stale: u64,
    /// Median latency so far, ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency so far, ms.
    pub p99_ms: Option<f64>,
}

impl Tally {
    /// Counts for `strategies`, each making `requests` requests.
    pub fn new(strategies: &[Strategy], requests: u64) -> Tally {
        Tally {
            strategies: strategies
                .iter()
                .map(|&strategy| StrategyTally {
                    strategy,
                    total: requests,
                    origin: OnceLock::new(),
                    counts: Mutex::new(Counts::default()),
                })
                .collect(),
        }
    }

    fn of(&self, strategy: Strategy) -> Option<&StrategyTally> {
        self.strategies.iter().find(|s| s.strategy == strategy)
    }

    /// The origin `strategy`'s calls are counted on.
    pub(crate) fn origin(&self, strategy: Strategy, origin: &Arc<WeatherOrigin>) {
        if let Some(s) = self.of(strategy) {
            let _ = s.origin.set(Arc::clone(origin));
        }
    }

    /// One request of `strategy` answered.
    pub(crate) fn record(&self, strategy: Strategy, outcome: Outcome, latency: Duration) {
        if let Some(s) = self.of(strategy) {
            let mut c = s.counts.lock();
            match outcome {
                Outcome::Error | Outcome::Timeout => c.errors += 1,
                Outcome::Stale => c.stale += 1,
                _ => {}
            }
            c.latencies
                .push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        }
    }

    /// Every strategy's figures so far.
    pub fn live(&self) -> Vec<Live> {
        self.strategies
            .iter()
            .map(|s| {
                let (errors, stale, mut latencies) = {
                    let c = s.counts.lock();
                    (c.errors, c.stale, c.latencies.clone())
                };
                latencies.sort_unstable();
                let pct = |q| (!latencies.is_empty()).then(|| percentile_ms(&latencies, q));
                Live {
                    name: s.strategy.name().to_string(),
                    done: latencies.len() as u64,
                    total: s.total,
                    origin_calls: s.origin.get().map_or(0, |o| o.calls()),
                    errors,
                    stale,
                    p50_ms: pct(0.5),
                    p99_ms: pct(0.99),
                }
            })
            .collect()
    }
}
