//! Counters and histograms of how calls were served, readable as a
//! [`MetricsSnapshot`].
//!
//! Counters are striped over cache-padded cells indexed per thread: the hit counter
//! is bumped on every hit, and one shared atomic would bounce its cache line
//! between cores on each of them.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_utils::CachePadded;

use crate::breaker::BreakerState;

const STRIPES: usize = 8;

/// A counter that many threads bump without sharing a cache line.
pub(crate) struct Counter {
    cells: [CachePadded<AtomicU64>; STRIPES],
}

fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE.with(|s| {
        let mut i = s.get();
        if i == usize::MAX {
            i = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
            s.set(i);
        }
        i
    })
}

impl Counter {
    fn new() -> Self {
        Counter {
            cells: std::array::from_fn(|_| CachePadded::new(AtomicU64::new(0))),
        }
    }

    #[inline]
    pub(crate) fn inc(&self) {
        self.cells[stripe()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.cells.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// Bucket `i` counts durations below 2^i microseconds; the last one counts the rest.
const BUCKETS: usize = 28;

/// A log₂-bucketed histogram of durations (1 µs … ~67 s), striped like
/// [`Counter`]: thousands of waiters woken together record at once.
pub(crate) struct Histogram {
    stripes: [CachePadded<HistogramCells>; STRIPES],
}

struct HistogramCells {
    buckets: [AtomicU64; BUCKETS],
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            stripes: std::array::from_fn(|_| {
                CachePadded::new(HistogramCells {
                    buckets: std::array::from_fn(|_| AtomicU64::new(0)),
                    sum_nanos: AtomicU64::new(0),
                })
            }),
        }
    }

    pub(crate) fn record(&self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        // Bucket index = number of bits needed for `micros` (0 µs → bucket 0).
        let index = ((u64::BITS - micros.leading_zeros()) as usize).min(BUCKETS - 1);
        let cells = &self.stripes[stripe()];
        cells.buckets[index].fetch_add(1, Ordering::Relaxed);
        cells.sum_nanos.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn snapshot(&self) -> HistogramSnapshot {
        let mut buckets = Vec::with_capacity(BUCKETS);
        for i in 0..BUCKETS {
            let upper = if i == BUCKETS - 1 {
                Duration::MAX
            } else {
                Duration::from_micros(1u64 << i)
            };
            let count = self
                .stripes
                .iter()
                .map(|s| s.buckets[i].load(Ordering::Relaxed))
                .sum();
            buckets.push((upper, count));
        }
        let sum = self
            .stripes
            .iter()
            .map(|s| s.sum_nanos.load(Ordering::Relaxed))
            .sum();
        HistogramSnapshot {
            count: buckets.iter().map(|(_, c)| c).sum(),
            sum: Duration::from_nanos(sum),
            buckets,
        }
    }
}

/// A point-in-time copy of a histogram.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, count)` per bucket: the count of observations below the bound
    /// and at or above the previous bound. Not cumulative.
    pub buckets: Vec<(Duration, u64)>,
    /// Number of observations.
    pub count: u64,
    /// Sum of all observations.
    pub sum: Duration,
}

impl HistogramSnapshot {
    /// An upper bound for the `q` quantile (`0.0..=1.0`): the upper edge of the
    /// bucket holding it (log₂ buckets, so within a factor of 2). `None` when empty.
    pub fn quantile_upper_bound(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (upper, count) in &self.buckets {
            seen += count;
            if seen >= rank {
                return Some(*upper);
            }
        }
        self.buckets.last().map(|(u, _)| *u)
    }

    /// The mean observation. `None` when empty.
    pub fn mean(&self) -> Option<Duration> {
        (self.count > 0).then(|| self.sum / u32::try_from(self.count).unwrap_or(u32::MAX))
    }
}

/// All live metrics of a cache.
pub(crate) struct Metrics {
    pub(crate) hits: Counter,
    pub(crate) loads: Counter,
    pub(crate) coalesced: Counter,
    pub(crate) l2_hits: Counter,
    pub(crate) stale_while_revalidate: Counter,
    pub(crate) stale_on_error: Counter,
    pub(crate) stale_on_timeout: Counter,
    pub(crate) early_refreshes: Counter,
    pub(crate) background_refreshes: Counter,
    pub(crate) load_errors: Counter,
    pub(crate) load_panics: Counter,
    pub(crate) timeouts: Counter,
    pub(crate) negative_hits: Counter,
    pub(crate) circuit_rejections: Counter,
    pub(crate) uncacheable: Counter,
    pub(crate) remote_errors: Counter,
    pub(crate) superseded: Counter,
    pub(crate) load_duration: Histogram,
    pub(crate) wait_time: Histogram,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        Metrics {
            hits: Counter::new(),
            loads: Counter::new(),
            coalesced: Counter::new(),
            l2_hits: Counter::new(),
            stale_while_revalidate: Counter::new(),
            stale_on_error: Counter::new(),
            stale_on_timeout: Counter::new(),
            early_refreshes: Counter::new(),
            background_refreshes: Counter::new(),
            load_errors: Counter::new(),
            load_panics: Counter::new(),
            timeouts: Counter::new(),
            negative_hits: Counter::new(),
            circuit_rejections: Counter::new(),
            uncacheable: Counter::new(),
            remote_errors: Counter::new(),
            superseded: Counter::new(),
            load_duration: Histogram::new(),
            wait_time: Histogram::new(),
        }
    }

    pub(crate) fn snapshot(
        &self,
        breaker: Option<BreakerState>,
        in_flight: usize,
        entries: usize,
    ) -> MetricsSnapshot {
        MetricsSnapshot {
            hits: self.hits.get(),
            loads: self.loads.get(),
            coalesced: self.coalesced.get(),
            l2_hits: self.l2_hits.get(),
            stale_while_revalidate: self.stale_while_revalidate.get(),
            stale_on_error: self.stale_on_error.get(),
            stale_on_timeout: self.stale_on_timeout.get(),
            early_refreshes: self.early_refreshes.get(),
            background_refreshes: self.background_refreshes.get(),
            load_errors: self.load_errors.get(),
            load_panics: self.load_panics.get(),
            timeouts: self.timeouts.get(),
            negative_hits: self.negative_hits.get(),
            circuit_rejections: self.circuit_rejections.get(),
            uncacheable: self.uncacheable.get(),
            remote_errors: self.remote_errors.get(),
            superseded: self.superseded.get(),
            load_duration: self.load_duration.snapshot(),
            wait_time: self.wait_time.snapshot(),
            breaker,
            in_flight,
            entries,
        }
    }
}

/// What a cache has done since it was built.
///
/// Leaders and waiters are counted apart: `loads` counts origin calls made by
/// leaders (foreground and background), `coalesced` counts callers that waited on
/// another caller's load instead of making their own.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Calls answered from a fresh in-process entry.
    pub hits: u64,
    /// Origin calls (loader invocations), foreground and background.
    pub loads: u64,
    /// Callers that shared another caller's load.
    pub coalesced: u64,
    /// Loads answered by the shared (L2) store instead of the origin.
    pub l2_hits: u64,
    /// Calls answered with a stale value while one background refresh ran.
    pub stale_while_revalidate: u64,
    /// Calls answered with a stale value because the load failed or the breaker was open.
    pub stale_on_error: u64,
    /// Calls answered with a stale value because the caller's wait deadline passed.
    pub stale_on_timeout: u64,
    /// Hits that started an X-Fetch early refresh.
    pub early_refreshes: u64,
    /// Background refreshes started (X-Fetch and stale-while-revalidate).
    pub background_refreshes: u64,
    /// Loads that returned an error.
    pub load_errors: u64,
    /// Loads whose loader panicked.
    pub load_panics: u64,
    /// Callers whose wait deadline passed with nothing to serve.
    pub timeouts: u64,
    /// Calls answered from the negative cache (a recent load error).
    pub negative_hits: u64,
    /// Loads refused by the open circuit breaker.
    pub circuit_rejections: u64,
    /// Loads whose value was marked uncacheable (not stored, not shared).
    pub uncacheable: u64,
    /// Errors talking to the shared store; each one degraded to in-process behaviour.
    pub remote_errors: u64,
    /// Loads whose result was not stored because an invalidation or insert superseded them.
    pub superseded: u64,
    /// Duration of origin calls.
    pub load_duration: HistogramSnapshot,
    /// Time coalesced callers waited for another caller's load.
    pub wait_time: HistogramSnapshot,
    /// The breaker's state, when the cache has one.
    pub breaker: Option<BreakerState>,
    /// Loads running now.
    pub in_flight: usize,
    /// Entries in the in-process store.
    pub entries: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_sums_its_stripes_across_threads() {
        let c = std::sync::Arc::new(Counter::new());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| c.inc()))
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(c.get(), 4000);
    }

    #[test]
    fn histogram_buckets_and_quantiles() {
        let h = Histogram::new();
        for _ in 0..99 {
            h.record(Duration::from_micros(100)); // bucket < 128 µs
        }
        h.record(Duration::from_millis(50)); // bucket < 65.536 ms
        let s = h.snapshot();
        assert_eq!(s.count, 100);
        assert_eq!(
            s.quantile_upper_bound(0.5),
            Some(Duration::from_micros(128))
        );
        assert_eq!(
            s.quantile_upper_bound(1.0),
            Some(Duration::from_micros(65_536))
        );
        assert_eq!(s.sum, Duration::from_micros(99 * 100 + 50_000));
    }
}
