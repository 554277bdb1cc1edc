//! `/metrics`: the Prometheus text built from the proxy's counters and from
//! the core's [`MetricsSnapshot`](herdguard::MetricsSnapshot) at each scrape.

use herdguard::{HistogramSnapshot, MetricsSnapshot};
use herdguard_redis::QuorumStats;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::stats::{Stats, ORIGIN_ERRORS, RESULTS};

/// The Prometheus text exposition of `stats`, of `core` and, with quorum
/// leases, of what their votes found.
pub(crate) fn render(
    stats: &Stats,
    core: &MetricsSnapshot,
    shared_store: Option<bool>,
    quorum: Option<&QuorumStats>,
) -> String {
    let mut registry = Registry::default();
    let results = RESULTS.into_iter().zip(stats.results());
    register_labelled(
        &mut registry,
        (
            "herdguard_proxy_requests",
            "Client requests by how they were answered",
        ),
        "result",
        results,
    );
    let errors = ORIGIN_ERRORS.into_iter().zip(stats.origin_errors());
    register_labelled(
        &mut registry,
        ("herdguard_proxy_origin_errors", "Origin failures by kind"),
        "kind",
        errors,
    );
    for (name, help, value) in PROXY_COUNTERS {
        registry.register(name, help, ConstCounter::new(value(stats)));
    }
    for (name, help, value) in CORE_COUNTERS {
        registry.register(name, help, ConstCounter::new(value(core)));
    }
    for (name, help, value) in gauges(stats, core, shared_store) {
        if let Some(value) = value {
            registry.register(name, help, ConstGauge::new(value));
        }
    }
    registry.register(
        "herdguard_fleet_lease_wait_seconds",
        "Time a load waited on another process's lease",
        SnapshotHistogram(core.lease_wait_time.clone()),
    );
    register_breaker(&mut registry, core);
    if let Some(q) = quorum {
        register_quorum(&mut registry, q);
    }
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut text, &registry);
    text
}

/// A counter of the exposition: name (`_total` is added), help, and its value in `S`.
type CounterOf<S> = (&'static str, &'static str, fn(&S) -> u64);

/// The proxy's counters.
const PROXY_COUNTERS: [CounterOf<Stats>; 5] = [
    (
        "herdguard_proxy_origin_requests",
        "Requests sent to the origin",
        |s| s.origin_requests.get(),
    ),
    (
        "herdguard_proxy_origin_requests_refused",
        "Requests answered 503 for want of an origin slot (max_origin_requests)",
        |s| s.origin_refused.get(),
    ),
    (
        "herdguard_proxy_invalidations",
        "URLs invalidated after unsafe methods",
        |s| s.invalidations.get(),
    ),
    (
        "herdguard_proxy_purges",
        "Purges applied (asked on this instance or any of the fleet)",
        |s| s.purges.get(),
    ),
    (
        "herdguard_proxy_tls_handshake_failures",
        "TLS handshakes with clients that failed or timed out",
        |s| s.tls_handshake_failures.get(),
    ),
];

/// The core's counters.
const CORE_COUNTERS: [CounterOf<MetricsSnapshot>; 18] = [
    ("herdguard_cache_hits", "Fresh in-process hits", |c| c.hits),
    ("herdguard_cache_loads", "Loads led by this process", |c| {
        c.loads
    }),
    (
        "herdguard_cache_coalesced",
        "Callers that joined another caller's load",
        |c| c.coalesced,
    ),
    (
        "herdguard_cache_stale_while_revalidate",
        "Stale answers with a background refresh",
        |c| c.stale_while_revalidate,
    ),
    (
        "herdguard_cache_stale_on_error",
        "Stale answers standing in for a failed load",
        |c| c.stale_on_error,
    ),
    ("herdguard_cache_load_errors", "Loads that failed", |c| {
        c.load_errors
    }),
    (
        "herdguard_cache_uncacheable",
        "Loads whose answer could not be stored",
        |c| c.uncacheable,
    ),
    (
        "herdguard_cache_remote_errors",
        "Shared-store (Redis) errors, oversized values included",
        |c| c.remote_errors,
    ),
    (
        "herdguard_cache_timeouts",
        "Callers whose wait deadline passed",
        |c| c.timeouts,
    ),
    (
        "herdguard_fleet_leases_acquired",
        "Fleet leases granted to this process (it loaded the key for the fleet)",
        |c| c.leases_acquired,
    ),
    (
        "herdguard_fleet_lease_waits",
        "Loads that waited on another process's lease",
        |c| c.lease_waits,
    ),
    (
        "herdguard_fleet_lease_takeovers",
        "Leases taken over after the holder's lease expired unreturned",
        |c| c.lease_takeovers,
    ),
    (
        "herdguard_fleet_leases_lost",
        "Loads whose own lease lapsed or was taken before they finished",
        |c| c.leases_lost,
    ),
    (
        "herdguard_fleet_lease_wait_limits",
        "Waits on another process's lease that reached the wait limit",
        |c| c.lease_wait_limits,
    ),
    (
        "herdguard_fleet_lease_wait_answers",
        "Loads answered by the shared store after waiting on a lease",
        |c| c.lease_wait_answers,
    ),
    (
        "herdguard_fleet_duplicate_loads",
        "Origin calls that may duplicate one elsewhere (after a take-over or a wait limit)",
        |c| c.duplicate_loads,
    ),
    (
        "herdguard_shared_store_degradations",
        "Healthy to degraded transitions of the shared store",
        |c| c.degradations,
    ),
    (
        "herdguard_shared_store_recoveries",
        "Degraded to healthy transitions of the shared store",
        |c| c.recoveries,
    ),
];

/// Every gauge: name, help, value (`None`: not exported in this setup).
fn gauges(
    stats: &Stats,
    core: &MetricsSnapshot,
    shared_store: Option<bool>,
) -> [(&'static str, &'static str, Option<i64>); 7] {
    [
        (
            "herdguard_proxy_connections_open",
            "Client connections open now",
            Some(stats.connections.get()),
        ),
        (
            "herdguard_proxy_origin_requests_in_flight",
            "Origin requests in flight now, each holding an origin slot (max_origin_requests)",
            Some(stats.origin_in_flight.get()),
        ),
        (
            "herdguard_proxy_tag_index_bytes",
            "Bytes of the surrogate-key index, within its share of max_memory",
            Some(stats.tag_index_bytes.get()),
        ),
        (
            "herdguard_cache_entries",
            "Entries in memory",
            count(core.entries),
        ),
        (
            "herdguard_cache_bytes",
            "Bytes of cached responses held, as weighed against max_memory",
            core.bytes.and_then(count),
        ),
        (
            "herdguard_cache_in_flight",
            "Loads running now",
            count(core.in_flight),
        ),
        (
            "herdguard_shared_store_healthy",
            "1 while the shared store (Redis) is in use",
            shared_store.map(i64::from),
        ),
    ]
}

/// A gauge's value from a count (saturated: a count past `i64::MAX` cannot occur).
fn count<N: TryInto<i64>>(n: N) -> Option<i64> {
    Some(n.try_into().unwrap_or(i64::MAX))
}

/// A counter with one label, a series per value: `(label value, count)`.
fn register_labelled<L: Into<String>>(
    registry: &mut Registry,
    (name, help): (&str, &str),
    label: &str,
    series: impl IntoIterator<Item = (L, u64)>,
) {
    let family = Family::<Vec<(String, String)>, Counter>::default();
    for (value, count) in series {
        family
            .get_or_create(&vec![(label.to_string(), value.into())])
            .inc_by(count);
    }
    registry.register(name, help, family);
}

/// The circuit breaker's transitions and time per state, when it has one.
fn register_breaker(registry: &mut Registry, core: &MetricsSnapshot) {
    let Some(b) = &core.breaker_stats else {
        return;
    };
    let label = |name: &str, value: &str| vec![(name.to_string(), value.to_string())];
    let transitions = Family::<Vec<(String, String)>, Counter>::default();
    let seconds = Family::<Vec<(String, String)>, Counter<f64>>::default();
    for (state, count, time) in [
        ("open", b.opened, b.time_open),
        ("half_open", b.half_opened, b.time_half_open),
        ("closed", b.closed, b.time_closed),
    ] {
        transitions.get_or_create(&label("to", state)).inc_by(count);
        seconds
            .get_or_create(&label("state", state))
            .inc_by(time.as_secs_f64());
    }
    registry.register(
        "herdguard_breaker_transitions",
        "Circuit-breaker transitions, by the state entered",
        transitions,
    );
    registry.register(
        "herdguard_breaker_state_seconds",
        "Time the circuit breaker spent in each state",
        seconds,
    );
}

/// A histogram already counted by the core, encoded as it is (log2 buckets,
/// `le` in seconds).
#[derive(Debug)]
struct SnapshotHistogram(HistogramSnapshot);

impl EncodeMetric for SnapshotHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = self
            .0
            .buckets
            .iter()
            .map(|(upper, count)| {
                let le = if *upper == std::time::Duration::MAX {
                    f64::MAX
                } else {
                    upper.as_secs_f64()
                };
                (le, *count)
            })
            .collect();
        encoder.encode_histogram::<()>(self.0.sum.as_secs_f64(), self.0.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}
/// The quorum-lease counters (`herdguard_quorum_*`), one series per lock
/// server for its failures.
fn register_quorum(registry: &mut Registry, q: &QuorumStats) {
    for (name, help, v) in [
        (
            "herdguard_quorum_grants",
            "Quorum leases held (a majority granted within the validity)",
            q.granted,
        ),
        (
            "herdguard_quorum_split_votes",
            "Votes some lock servers granted but fewer than a majority (retried)",
            q.split_votes,
        ),
        (
            "herdguard_quorum_validity_spent",
            "Votes a majority granted after the lease's validity was spent",
            q.validity_spent,
        ),
        (
            "herdguard_quorum_unavailable",
            "Acquisitions and renewals without a majority of lock servers answering",
            q.unavailable,
        ),
    ] {
        registry.register(name, help, ConstCounter::new(v));
    }
    let failures = q.server_failures.iter().map(|(url, n)| (url.clone(), *n));
    register_labelled(
        registry,
        (
            "herdguard_quorum_lock_server_failures",
            "Failed commands of each lock server (no connection, no answer in time, an error)",
        ),
        "server",
        failures,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use herdguard::{BreakerConfig, Cache, ManualClock};
    use std::time::Duration;

    fn value(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[tokio::test]
    async fn breaker_transitions_and_time_per_state_are_exported() {
        let clock = ManualClock::new();
        let cache: Cache<String, String> = Cache::builder()
            .clock(clock.clone())
            .circuit_breaker(BreakerConfig::new(1, Duration::from_secs(10)))
            .build()
            .unwrap();
        clock.advance(Duration::from_secs(2));
        let failed = cache
            .get_or_load("k".to_string(), || async {
                Err::<String, _>(std::io::Error::other("origin down"))
            })
            .await;
        assert!(failed.is_err());
        clock.advance(Duration::from_secs(3));
        let text = render(&Stats::default(), &cache.metrics(), None, None);
        assert_eq!(
            value(&text, "herdguard_breaker_transitions_total{to=\"open\"}"),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            value(&text, "herdguard_breaker_transitions_total{to=\"closed\"}"),
            Some(0.0)
        );
        assert_eq!(
            value(
                &text,
                "herdguard_breaker_state_seconds_total{state=\"closed\"}"
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &text,
                "herdguard_breaker_state_seconds_total{state=\"open\"}"
            ),
            Some(3.0)
        );
    }

    #[test]
    fn the_lease_wait_histogram_is_cumulative_in_seconds() {
        let snapshot = HistogramSnapshot {
            buckets: vec![
                (Duration::from_millis(1), 2),
                (Duration::from_millis(2), 1),
                (Duration::MAX, 1),
            ],
            count: 4,
            sum: Duration::from_millis(10),
        };
        let mut registry = Registry::default();
        registry.register("w", "wait", SnapshotHistogram(snapshot));
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(text.contains("w_bucket{le=\"0.001\"} 2"), "{text}");
        assert!(text.contains("w_bucket{le=\"0.002\"} 3"), "{text}");
        assert!(text.contains("w_bucket{le=\"+Inf\"} 4"), "{text}");
        assert!(text.contains("w_sum 0.01"), "{text}");
        assert!(text.contains("w_count 4"), "{text}");
    }
}
