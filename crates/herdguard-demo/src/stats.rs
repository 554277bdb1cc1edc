//! What each request did, and the figures computed from it: counts, exact
//! percentiles from every recorded latency, reduction against the baseline.

use serde::{Deserialize, Serialize};

use crate::strategy::Strategy;

/// How one request ended, from the caller's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A fresh value from the cache; no waiting on the origin.
    Hit,
    /// A stale value served at once (stale-while-revalidate or stale-if-error).
    Stale,
    /// This caller called the origin itself.
    Loaded,
    /// This caller waited on another caller's origin call (single flight, or the
    /// classic lock's polling).
    Coalesced,
    /// This process waited on another process's load and took it from the shared store.
    Shared,
    /// The caller got an error.
    Error,
    /// The caller's deadline passed first.
    Timeout,
}

impl Outcome {
    /// A short name for per-request rows.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Stale => "stale",
            Outcome::Loaded => "loaded",
            Outcome::Coalesced => "coalesced",
            Outcome::Shared => "shared",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
        }
    }
}

/// One request, as the caller saw it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sample {
    /// Key number.
    pub key: u32,
    /// When the request started, from the scenario's start, in µs.
    pub start_us: u64,
    /// How long the caller waited for its answer, in µs (std `Instant`).
    pub latency_us: u64,
    /// How it ended.
    pub outcome: Outcome,
}

/// One origin call, from the scenario's start (the same moment in every process
/// of a fleet run).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OriginCall {
    /// Key number.
    pub key: u32,
    /// When the call started, µs from the scenario's start (0 if before it).
    pub start_us: u64,
    /// When it ended, µs from the scenario's start; `None` if it was still
    /// running when the run ended.
    pub end_us: Option<u64>,
}

/// Everything one strategy did in one scenario (in one process): the unit a
/// worker process reports and the parent adds up.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RawRun {
    /// The strategy.
    pub strategy: Strategy,
    /// The origin's own count of calls.
    pub origin_calls: u64,
    /// The origin's own count of failed calls.
    pub origin_failures: u64,
    /// Every request.
    pub samples: Vec<Sample>,
    /// Every origin call, when it started and ended (what the timeline counts,
    /// and what tells whether a caller waited on one).
    #[serde(default)]
    pub calls: Vec<OriginCall>,
}

impl RawRun {
    /// Adds another process's run of the same strategy.
    pub fn merge(&mut self, other: RawRun) {
        self.origin_calls += other.origin_calls;
        self.origin_failures += other.origin_failures;
        self.samples.extend(other.samples);
        self.calls.extend(other.calls);
    }

    /// For each sample, in order: whether the caller waited for an origin call.
    ///
    /// A caller that called the origin itself (`loaded`) did. One that waited on
    /// another caller's load (`coalesced`, or `shared` from another process) did
    /// if an origin call of its key — in any process — ran while it waited; one
    /// that only waited for a shared-store read of a value another process had
    /// already loaded (after that process's refresh evicted this one's copy) did
    /// not. Hits, stale answers, errors and timeouts are not counted.
    pub fn waited_flags(&self) -> Vec<bool> {
        let mut by_key: std::collections::HashMap<u32, Vec<(u64, u64)>> =
            std::collections::HashMap::new();
        for c in &self.calls {
            by_key
                .entry(c.key)
                .or_default()
                .push((c.start_us, c.end_us.unwrap_or(u64::MAX)));
        }
        self.samples
            .iter()
            .map(|s| match s.outcome {
                Outcome::Loaded => true,
                Outcome::Coalesced | Outcome::Shared => {
                    let (from, until) = (s.start_us, s.start_us.saturating_add(s.latency_us));
                    by_key.get(&s.key).is_some_and(|calls| {
                        calls
                            .iter()
                            .any(|&(start, end)| start <= until && end >= from)
                    })
                }
                _ => false,
            })
            .collect()
    }
}

/// Width of a timeline bucket, ms.
pub const BUCKET_MS: u64 = 100;

/// What happened per [`BUCKET_MS`] of a scenario, from its start.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Timeline {
    /// Width of a bucket, ms.
    pub bucket_ms: u64,
    /// Origin calls that started in each bucket.
    pub origin_calls: Vec<u64>,
    /// Callers that arrived in each bucket and waited for an origin call (see
    /// [`RawRun::waited_flags`]); the sum is the strategy's `waited`.
    pub waiting: Vec<u64>,
}

impl Timeline {
    /// The timeline of `run` over `buckets` buckets (later events go in the last).
    pub fn of(run: &RawRun, waited: &[bool], buckets: usize) -> Timeline {
        let buckets = buckets.max(1);
        let bucket = |us: u64| ((us / (BUCKET_MS * 1000)) as usize).min(buckets - 1);
        let mut t = Timeline {
            bucket_ms: BUCKET_MS,
            origin_calls: vec![0; buckets],
            waiting: vec![0; buckets],
        };
        for c in &run.calls {
            t.origin_calls[bucket(c.start_us)] += 1;
        }
        for (s, &w) in run.samples.iter().zip(waited) {
            if w {
                t.waiting[bucket(s.start_us)] += 1;
            }
        }
        t
    }

    /// Buckets that cover everything `run` did (its last request's end, its
    /// last call's start), at least `min_ms` long.
    pub fn span(run: &RawRun, min_ms: u64) -> usize {
        let last = run
            .samples
            .iter()
            .map(|s| s.start_us.saturating_add(s.latency_us))
            .chain(run.calls.iter().map(|c| c.start_us))
            .max()
            .unwrap_or(0)
            .max(min_ms * 1000);
        (last / (BUCKET_MS * 1000) + 1) as usize
    }
}

/// The figures of one strategy in one scenario.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StrategyReport {
    /// Strategy name.
    pub name: String,
    /// What the strategy is.
    pub description: String,
    /// Requests made.
    pub requests: u64,
    /// Origin calls, counted by the origin.
    pub origin_calls: u64,
    /// Origin calls that failed.
    pub origin_failures: u64,
    /// Origin calls per key.
    pub origin_calls_per_key: f64,
    /// Fewer origin calls than the `none` baseline, in percent (when it ran).
    pub reduction_pct: Option<f64>,
    /// Requests answered by a fresh cached value without waiting.
    pub hits: u64,
    /// `hits / requests`.
    pub hit_rate: f64,
    /// Requests answered with a stale value.
    pub served_stale: u64,
    /// Requests that called the origin themselves.
    pub loaded: u64,
    /// Requests that waited on someone else's origin call (in this process or,
    /// with `shared`, another process).
    pub coalesced: u64,
    /// Requests that waited on another process's load via the shared store.
    pub shared: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// Requests whose deadline passed.
    pub timeouts: u64,
    /// Latency percentiles over all requests, in ms (exact, nearest rank).
    pub p50_ms: f64,
    /// 95th percentile latency, ms.
    pub p95_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Largest latency, ms.
    pub max_ms: f64,
    /// Mean latency, ms.
    pub mean_ms: f64,
    /// Median latency of the callers that waited on another's load, ms.
    pub wait_p50_ms: Option<f64>,
    /// Largest latency of the callers that waited on another's load, ms.
    pub wait_max_ms: Option<f64>,
    /// Requests that had to wait for an origin call, their own or another's (see
    /// [`RawRun::waited_flags`]).
    pub waited: u64,
    /// One line saying what happened.
    pub verdict: String,
    /// Origin calls and waiting callers per 100 ms (read scenarios).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Timeline>,
    /// `patterns` only: a write's latency, median, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_p50_ms: Option<f64>,
    /// `patterns` only: a write's latency, 99th percentile, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_p99_ms: Option<f64>,
    /// `patterns` only: a read's latency, median, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_p50_ms: Option<f64>,
    /// `patterns` only: a read's latency, 99th percentile, ms (a miss's cost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_p99_ms: Option<f64>,
    /// `patterns` only: reads that returned a value older than a write of their
    /// key acknowledged before they began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_reads: Option<u64>,
    /// `patterns` only: writes acknowledged to their caller (by the killed
    /// process, in a crash run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_writes: Option<u64>,
    /// `patterns` only: acknowledged writes the database never got (a crash run;
    /// 0 without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_writes: Option<u64>,
    /// `patterns` only: from a write's acknowledgement to the database applying
    /// it, 99th percentile, ms (write-behind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_lag_p99_ms: Option<f64>,
}

/// What the `patterns` scenario measured for one strategy.
#[derive(Clone, Debug, Default)]
pub(crate) struct PatternFigures {
    pub(crate) reads_us: Vec<u64>,
    pub(crate) writes_us: Vec<u64>,
    pub(crate) hits: u64,
    pub(crate) stale_reads: u64,
    pub(crate) errors: u64,
    pub(crate) acknowledged: u64,
    pub(crate) db_reads: u64,
    pub(crate) db_lag_us: Vec<u64>,
}

impl StrategyReport {
    /// The figures of a write pattern (and, with `crash`, of its crash run).
    pub(crate) fn patterns(
        strategy: Strategy,
        f: &PatternFigures,
        crash: Option<crate::patterns::Crash>,
    ) -> StrategyReport {
        let sorted = |v: &[u64]| {
            let mut v = v.to_vec();
            v.sort_unstable();
            v
        };
        let (reads, writes, lag) = (
            sorted(&f.reads_us),
            sorted(&f.writes_us),
            sorted(&f.db_lag_us),
        );
        let all = sorted(&[f.reads_us.clone(), f.writes_us.clone()].concat());
        let requests = all.len() as u64 + f.errors;
        let reads_n = reads.len() as u64;
        let (acknowledged, lost) = match &crash {
            Some(c) => (c.acknowledged, c.lost),
            None => (f.acknowledged, 0),
        };
        let mut r = StrategyReport {
            name: strategy.name().to_string(),
            description: strategy.description().to_string(),
            requests,
            origin_calls: f.db_reads,
            origin_failures: 0,
            origin_calls_per_key: 0.0,
            reduction_pct: None,
            hits: f.hits,
            hit_rate: if reads_n == 0 {
                0.0
            } else {
                f.hits as f64 / reads_n as f64
            },
            served_stale: 0,
            loaded: 0,
            coalesced: 0,
            shared: 0,
            errors: f.errors,
            timeouts: 0,
            p50_ms: percentile_ms(&all, 0.5),
            p95_ms: percentile_ms(&all, 0.95),
            p99_ms: percentile_ms(&all, 0.99),
            max_ms: percentile_ms(&all, 1.0),
            mean_ms: if all.is_empty() {
                0.0
            } else {
                all.iter().sum::<u64>() as f64 / all.len() as f64 / 1000.0
            },
            wait_p50_ms: None,
            wait_max_ms: None,
            waited: 0,
            verdict: String::new(),
            timeline: None,
            write_p50_ms: Some(percentile_ms(&writes, 0.5)),
            write_p99_ms: Some(percentile_ms(&writes, 0.99)),
            read_p50_ms: Some(percentile_ms(&reads, 0.5)),
            read_p99_ms: Some(percentile_ms(&reads, 0.99)),
            stale_reads: Some(f.stale_reads),
            acknowledged_writes: Some(acknowledged),
            lost_writes: Some(lost),
            db_lag_p99_ms: (!lag.is_empty()).then(|| percentile_ms(&lag, 0.99)),
        };
        let ms = |v: f64| {
            if v < 10.0 {
                format!("{v:.1}")
            } else {
                format!("{v:.0}")
            }
        };
        r.verdict =
            format!(
            "{}: writes p50 {} ms (p99 {} ms), reads p50 {} ms (p99 {} ms); {} stale reads{}{}.",
            r.name,
            ms(r.write_p50_ms.unwrap_or_default()),
            ms(r.write_p99_ms.unwrap_or_default()),
            ms(r.read_p50_ms.unwrap_or_default()),
            ms(r.read_p99_ms.unwrap_or_default()),
            f.stale_reads,
            r.db_lag_p99_ms
                .map_or(String::new(), |l| format!("; the database lags by up to {} ms", ms(l))),
            match &crash {
                Some(c) => format!(
                    "; killed mid-run: {} of {} acknowledged writes lost",
                    c.lost, c.acknowledged
                ),
                None => String::new(),
            }
        );
        r
    }
}

/// Nearest-rank percentile of sorted samples (µs), in ms.
/// The `q` quantile of `sorted` µs latencies in ms (nearest rank); 0 when empty.
pub(crate) fn percentile_ms(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

/// Figures of one strategy; `baseline_calls` are the `none` strategy's origin
/// calls; the timeline has `buckets` buckets.
pub fn summarize(
    run: &RawRun,
    keys: u32,
    baseline_calls: Option<u64>,
    buckets: usize,
) -> StrategyReport {
    let waited = run.waited_flags();
    let timeline = Timeline::of(run, &waited, buckets);
    let count = |o: Outcome| run.samples.iter().filter(|s| s.outcome == o).count() as u64;
    let mut latencies: Vec<u64> = run.samples.iter().map(|s| s.latency_us).collect();
    latencies.sort_unstable();
    let mut waits: Vec<u64> = run
        .samples
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Coalesced | Outcome::Shared))
        .map(|s| s.latency_us)
        .collect();
    waits.sort_unstable();
    let requests = run.samples.len() as u64;
    let hits = count(Outcome::Hit);
    let reduction_pct = baseline_calls
        .filter(|&b| b > 0 && !run.strategy.is_baseline())
        .map(|b| 100.0 * (1.0 - run.origin_calls as f64 / b as f64));
    let mean_ms = if requests == 0 {
        0.0
    } else {
        latencies.iter().sum::<u64>() as f64 / requests as f64 / 1000.0
    };
    let mut report = StrategyReport {
        name: run.strategy.name().to_string(),
        description: run.strategy.description().to_string(),
        requests,
        origin_calls: run.origin_calls,
        origin_failures: run.origin_failures,
        origin_calls_per_key: run.origin_calls as f64 / f64::from(keys.max(1)),
        reduction_pct,
        hits,
        hit_rate: if requests == 0 {
            0.0
        } else {
            hits as f64 / requests as f64
        },
        served_stale: count(Outcome::Stale),
        loaded: count(Outcome::Loaded),
        coalesced: count(Outcome::Coalesced),
        shared: count(Outcome::Shared),
        errors: count(Outcome::Error),
        timeouts: count(Outcome::Timeout),
        p50_ms: percentile_ms(&latencies, 0.50),
        p95_ms: percentile_ms(&latencies, 0.95),
        p99_ms: percentile_ms(&latencies, 0.99),
        max_ms: percentile_ms(&latencies, 1.0),
        mean_ms,
        wait_p50_ms: (!waits.is_empty()).then(|| percentile_ms(&waits, 0.5)),
        wait_max_ms: (!waits.is_empty()).then(|| percentile_ms(&waits, 1.0)),
        waited: waited.iter().filter(|&&w| w).count() as u64,
        verdict: String::new(),
        timeline: Some(timeline),
        write_p50_ms: None,
        write_p99_ms: None,
        read_p50_ms: None,
        read_p99_ms: None,
        stale_reads: None,
        acknowledged_writes: None,
        lost_writes: None,
        db_lag_p99_ms: None,
    };
    report.verdict = verdict(&report);
    report
}

fn verdict(r: &StrategyReport) -> String {
    let failed = r.errors + r.timeouts;
    let mut line = format!(
        "{}: {} origin calls ({:.1} per key)",
        r.name, r.origin_calls, r.origin_calls_per_key
    );
    if let Some(pct) = r.reduction_pct {
        line.push_str(&format!(", {pct:.1}% fewer than none"));
    }
    let ms = |v: f64| {
        if v < 10.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.0}")
        }
    };
    line.push_str(&format!(
        "; p50 {} ms, p99 {} ms",
        ms(r.p50_ms),
        ms(r.p99_ms)
    ));
    if r.waited > 0 {
        line.push_str(&format!("; {} callers waited for an origin call", r.waited));
    } else {
        line.push_str("; no caller waited for an origin call");
    }
    if r.served_stale > 0 {
        line.push_str(&format!("; {} served stale", r.served_stale));
    }
    if failed > 0 {
        line.push_str(&format!("; {failed} callers got an error or timed out"));
    } else {
        line.push_str("; no errors");
    }
    line.push('.');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_are_exact() {
        let sorted: Vec<u64> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(percentile_ms(&sorted, 0.5), 50.0);
        assert_eq!(percentile_ms(&sorted, 0.99), 99.0);
        assert_eq!(percentile_ms(&sorted, 1.0), 100.0);
        assert_eq!(percentile_ms(&[7000], 0.5), 7.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }

    #[test]
    fn reduction_is_against_the_baseline() {
        let run = RawRun {
            strategy: Strategy::SingleFlight,
            origin_calls: 8,
            origin_failures: 0,
            samples: vec![],
            calls: vec![],
        };
        let report = summarize(&run, 8, Some(800), 1);
        assert_eq!(report.reduction_pct, Some(99.0));
        assert_eq!(report.origin_calls_per_key, 1.0);
    }
}
