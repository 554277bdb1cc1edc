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

use crate::breaker::{BreakerState, BreakerStats};

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

/// Declares every counter once: the live [`Metrics`] field, its zero value,
/// its copy in [`MetricsSnapshot`] and that field's doc line all come from one
/// list, so a counter cannot be added to one and forgotten in another.
macro_rules! metrics {
    ($( $(#[doc = $doc:literal])+ $name:ident, )*) => {
        /// All live metrics of a cache.
        pub(crate) struct Metrics {
            $(pub(crate) $name: Counter,)*
            pub(crate) load_duration: Histogram,
            pub(crate) wait_time: Histogram,
            pub(crate) write_lag: Histogram,
            pub(crate) lease_wait_time: Histogram,
        }

        impl Metrics {
            pub(crate) fn new() -> Self {
                Metrics {
                    $($name: Counter::new(),)*
                    load_duration: Histogram::new(),
                    wait_time: Histogram::new(),
                    write_lag: Histogram::new(),
                    lease_wait_time: Histogram::new(),
                }
            }

            pub(crate) fn snapshot(
                &self,
                breaker: Option<BreakerState>,
                breaker_stats: Option<BreakerStats>,
                in_flight: usize,
                entries: usize,
                bytes: Option<u64>,
                write_queue: u64,
            ) -> MetricsSnapshot {
                MetricsSnapshot {
                    $($name: self.$name.get(),)*
                    load_duration: self.load_duration.snapshot(),
                    wait_time: self.wait_time.snapshot(),
                    write_lag: self.write_lag.snapshot(),
                    lease_wait_time: self.lease_wait_time.snapshot(),
                    breaker,
                    breaker_stats,
                    in_flight,
                    entries,
                    bytes,
                    write_queue,
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
            $( $(#[doc = $doc])+ pub $name: u64, )*
            /// Duration of origin calls.
            pub load_duration: HistogramSnapshot,
            /// Time coalesced callers waited for another caller's load.
            pub wait_time: HistogramSnapshot,
            /// Write-behind: time from queueing a write to its reaching the
            /// system of record.
            pub write_lag: HistogramSnapshot,
            /// Fleet: time a load waited on another process's lease, from
            /// finding it taken to the end of the wait (the holder's value
            /// read, the lease acquired, or the wait limit reached).
            pub lease_wait_time: HistogramSnapshot,
            /// The breaker's state, when the cache has one.
            pub breaker: Option<BreakerState>,
            /// The breaker's transitions and time in each state, when the
            /// cache has one.
            pub breaker_stats: Option<BreakerStats>,
            /// Loads running now.
            pub in_flight: usize,
            /// Entries in the in-process store.
            pub entries: usize,
            /// Bytes the in-process store holds, as its weigher counts them,
            /// when it is bounded by bytes (`CacheBuilder::max_bytes`).
            pub bytes: Option<u64>,
            /// Write-behind writes queued and not yet written (as last seen by
            /// the drainer; all processes, with a shared queue).
            pub write_queue: u64,
        }
    };
}

metrics! {
    /// Calls answered from a fresh in-process entry.
    hits,
    /// Calls answered from a fresh in-process entry while the shared store was
    /// unreachable ([`Served::Unconfirmed`](crate::Served::Unconfirmed)).
    unconfirmed,
    /// Origin calls (loader invocations), foreground and background.
    loads,
    /// Callers that shared another caller's load.
    coalesced,
    /// Loads answered by the shared (L2) store instead of the origin.
    l2_hits,
    /// Calls answered with a stale value while one background refresh ran.
    stale_while_revalidate,
    /// Calls answered with a stale value because the load failed or the breaker was open.
    stale_on_error,
    /// Calls answered with a stale value because the caller's wait deadline passed.
    stale_on_timeout,
    /// Hits that started an X-Fetch early refresh.
    early_refreshes,
    /// Background refreshes started (X-Fetch and stale-while-revalidate).
    background_refreshes,
    /// Loads that returned an error.
    load_errors,
    /// Loads whose loader panicked.
    load_panics,
    /// Loads cancelled because they ran past `load_timeout`.
    load_timeouts,
    /// Callers whose wait deadline passed with nothing to serve.
    timeouts,
    /// Calls answered from the negative cache (a recent load error).
    negative_hits,
    /// Loads refused by the open circuit breaker.
    circuit_rejections,
    /// Loads whose value was marked uncacheable (not stored, not shared).
    uncacheable,
    /// Shared-store operations that failed for the whole store (unreachable, no
    /// answer in time), or refused a value as too large to share.
    remote_errors,
    /// Healthy → degraded transitions of the shared store (in-process only until
    /// the background probe sees it answer again).
    degradations,
    /// Degraded → healthy transitions, found by the background probe.
    recoveries,
    /// Entries in the shared store that could not be decoded: each was a miss
    /// for its key only, overwritten by the next load.
    undecodable,
    /// Lease renewals that failed and were retried.
    renew_errors,
    /// Fleet leases granted to this process (it was the fleet's loader of the key).
    leases_acquired,
    /// Loads that found another process holding the key's lease and waited
    /// for it (counted once per load, however many polls).
    lease_waits,
    /// Leases granted after the previous holder's lease expired without being
    /// given back (it died, hung or was partitioned away).
    lease_takeovers,
    /// Waits on another process's lease that reached the wait limit: the
    /// holder kept its lease alive but never delivered, and this process
    /// called the origin itself.
    lease_wait_limits,
    /// Loads answered by the shared store after waiting on another
    /// process's lease (the holder's value: the lock did its job).
    lease_wait_answers,
    /// Origin calls this process made for a key whose lease another process
    /// had been granted and not given back: after a lease take-over, or after
    /// a wait that reached its limit. Each may duplicate an origin call in
    /// flight (or lost) elsewhere; 0 while every holder finishes in time.
    duplicate_loads,
    /// Loads whose lease lapsed before they finished (their write is then
    /// fenced: refused if another process took the lease).
    leases_lost,
    /// Loads that ended with the outcome another process left for the key
    /// (a failure, or "not shareable"), instead of queueing for its lease.
    fleet_outcomes,
    /// Stale copies from the shared store served (while revalidating, or on error).
    shared_stale,
    /// In-process copies evicted because another process wrote or invalidated the key.
    remote_evictions,
    /// Times the change feed was interrupted or restored, after which every
    /// in-process copy is checked against the shared store before it is served.
    resyncs,
    /// Loads whose result was not stored because an invalidation, an insert or a
    /// newer write elsewhere superseded them.
    superseded,
    /// Superseded loads that had not called the origin yet and shared the
    /// key's newer load instead.
    deferred,
    /// Panics of the in-process store while keeping a result (the waiters still
    /// got it; the entry was lost).
    store_panics,
    /// Write-behind writes queued.
    writes_queued,
    /// Writes that reached the system of record (write-through and write-behind).
    writes_written,
    /// Write-behind batches tried again after the writer failed.
    writes_retried,
    /// Writes given up on (the writer kept failing), or refused (write-through).
    writes_failed,
    /// Write-behind writes made unnecessary by a newer write of the same key.
    writes_coalesced,
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
