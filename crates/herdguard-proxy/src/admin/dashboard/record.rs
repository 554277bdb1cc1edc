//! One instance's figures, sampled once a second: what its dashboard draws,
//! and what it publishes to the rest of the fleet.

use std::time::{Duration, Instant};

use herdguard::{BreakerState, HistogramSnapshot};
use serde::{Deserialize, Serialize};

use crate::handle::proxy::Proxy;
use crate::stats::RESULTS;

/// The order of [`Record::rate`] and [`Record::total`]: how client requests
/// were answered (the `result` labels of `herdguard_proxy_requests_total`),
/// then requests sent to the origin (`herdguard_proxy_origin_requests_total`).
pub const RESULT_FIELDS: [&str; 7] = [
    "hit",
    "stale",
    "miss",
    "coalesced",
    "bypass",
    "error",
    "origin",
];

/// One instance's figures at one moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The instance: host, listening port, process id.
    pub id: String,
    /// Seconds since the instance started.
    pub up_s: u64,
    /// Per second over the last interval, in [`RESULT_FIELDS`] order.
    pub rate: [f64; 7],
    /// Since start, in [`RESULT_FIELDS`] order.
    pub total: [u64; 7],
    /// Median time callers waited for another caller's load, over the last
    /// interval (upper bound of its log₂ bucket), ms; `None` when nobody waited.
    pub wait_p50_ms: Option<f64>,
    /// 99th percentile of the same.
    pub wait_p99_ms: Option<f64>,
    /// Loads (origin requests of cacheable misses) running now.
    pub in_flight: u64,
    /// Fleet lease figures since start: `[acquired, waited, taken over, lost]`.
    pub lease: [u64; 4],
    /// The circuit breaker: `closed`, `open`, `half-open`, or `none`.
    pub breaker: String,
    /// The shared store: `ok`, `degraded` (coalescing per instance), or `none`.
    pub store: String,
}

/// The sampler's memory of the previous sample, to turn totals into rates.
pub(crate) struct Sampling {
    pub(crate) instance: String,
    shared_store: bool,
    started: Instant,
    last: Option<(Instant, [u64; 7], HistogramSnapshot)>,
}

impl Sampling {
    pub(crate) fn new(instance: String, shared_store: bool) -> Sampling {
        Sampling {
            instance,
            shared_store,
            started: Instant::now(),
            last: None,
        }
    }

    /// Reads the counters now and returns the record.
    pub(crate) fn update(&mut self, proxy: &Proxy, now: Instant) -> Record {
        let core = proxy.cache.metrics();
        let mut total = [0u64; 7];
        for (slot, label) in total.iter_mut().zip(RESULTS) {
            *slot = proxy.stats.answered(label);
        }
        total[6] = proxy.stats.origin_requests.get();
        let (rate, waits) = match &self.last {
            Some((at, before, waits_before)) => {
                let secs = now.saturating_duration_since(*at).as_secs_f64().max(1e-3);
                let mut rate = [0.0; 7];
                for i in 0..7 {
                    rate[i] = round1(total[i].saturating_sub(before[i]) as f64 / secs);
                }
                (rate, delta(&core.wait_time, waits_before))
            }
            None => ([0.0; 7], core.wait_time.clone()),
        };
        let quantile = |q| {
            waits
                .quantile_upper_bound(q)
                .map(|d: Duration| round1(d.as_secs_f64() * 1000.0))
        };
        let record = Record {
            id: self.instance.clone(),
            up_s: now.saturating_duration_since(self.started).as_secs(),
            rate,
            total,
            wait_p50_ms: quantile(0.5),
            wait_p99_ms: quantile(0.99),
            in_flight: core.in_flight as u64,
            lease: [
                core.leases_acquired,
                core.lease_waits,
                core.lease_takeovers,
                core.leases_lost,
            ],
            breaker: match core.breaker {
                None => "none",
                Some(BreakerState::Closed) => "closed",
                Some(BreakerState::Open) => "open",
                Some(BreakerState::HalfOpen) => "half-open",
            }
            .to_string(),
            store: match (self.shared_store, proxy.cache.shared_store_healthy()) {
                (false, _) => "none",
                (true, true) => "ok",
                (true, false) => "degraded",
            }
            .to_string(),
        };
        self.last = Some((now, total, core.wait_time));
        record
    }
}

/// One decimal is all a person reads, and it keeps each update small.
fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// The observations of `now` that `before` did not have yet.
fn delta(now: &HistogramSnapshot, before: &HistogramSnapshot) -> HistogramSnapshot {
    let buckets: Vec<(Duration, u64)> = now
        .buckets
        .iter()
        .zip(&before.buckets)
        .map(|((upper, n), (_, b))| (*upper, n.saturating_sub(*b)))
        .collect();
    HistogramSnapshot {
        count: buckets.iter().map(|(_, c)| c).sum(),
        sum: now.sum.saturating_sub(before.sum),
        buckets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(counts: &[u64]) -> HistogramSnapshot {
        let buckets: Vec<(Duration, u64)> = counts
            .iter()
            .enumerate()
            .map(|(i, c)| (Duration::from_micros(1 << i), *c))
            .collect();
        HistogramSnapshot {
            count: counts.iter().sum(),
            sum: Duration::ZERO,
            buckets,
        }
    }

    #[test]
    fn the_wait_percentiles_cover_only_the_last_interval() {
        // Before: 100 short waits. Now: the same 100 plus 10 long ones.
        let before = histogram(&[0, 100, 0, 0]);
        let now = histogram(&[0, 100, 0, 10]);
        let d = delta(&now, &before);
        assert_eq!(d.count, 10);
        assert_eq!(d.quantile_upper_bound(0.5), Some(Duration::from_micros(8)));
        assert_eq!(delta(&before, &before).quantile_upper_bound(0.5), None);
    }

    #[test]
    fn a_record_reads_back_what_it_wrote_and_stays_small() {
        let record = Record {
            id: "host-with-a-long-name.example:8080/123456".into(),
            up_s: 86_400,
            rate: [61234.5, 12.3, 45.6, 789.0, 1.2, 0.1, 45.6],
            // A trillion requests of each kind: weeks at full speed.
            total: [999_999_999_999; 7],
            wait_p50_ms: Some(204.8),
            wait_p99_ms: Some(409.6),
            in_flight: 12,
            lease: [1_000_000; 4],
            breaker: "half-open".into(),
            store: "degraded".into(),
        };
        let text = serde_json::to_string(&record).unwrap();
        assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), record);
        // About a third of the 1 KB an update may take, at these figures (a
        // fleet of three fits; the fleet test measures a real one).
        assert!(text.len() <= 350, "{} bytes: {text}", text.len());
        // Beyond that the record grows by a digit per tenfold, never fails.
        let huge = Record {
            total: [u64::MAX; 7],
            ..record
        };
        let text = serde_json::to_string(&huge).unwrap();
        assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), huge);
    }
}
