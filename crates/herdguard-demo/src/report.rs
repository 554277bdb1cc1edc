//! Turning raw runs into the report: a table and verdicts per scenario, or one
//! JSON document.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, ContentArrangement, Table};
use serde::{Deserialize, Serialize};

use crate::args::{Scenario, ScenarioPlan};
use crate::stats::{summarize, RawRun, StrategyReport};

/// The whole run, as printed by `--json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DemoReport {
    /// herdguard version.
    pub version: String,
    /// The seed in use (pass it to `--seed` to reproduce the draws).
    pub seed: u64,
    /// `embedded` or `redis`.
    pub store: String,
    /// Processes that made requests.
    pub processes: u32,
    /// Wall time of the whole run, ms.
    pub wall_ms: f64,
    /// One entry per scenario, in run order.
    pub scenarios: Vec<ScenarioReport>,
}

/// One scenario's figures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScenarioReport {
    /// Scenario name.
    pub name: String,
    /// What the scenario does, with its settings.
    pub description: String,
    /// Number of keys.
    pub keys: u32,
    /// Concurrent requests per key (cold only).
    pub threads: Option<u32>,
    /// Requests per second (steady load only).
    pub rate: Option<u32>,
    /// Length of the steady load, ms.
    pub duration_ms: Option<f64>,
    /// TTL of cached values, ms.
    pub ttl_ms: f64,
    /// The origin's mean latency, ms.
    pub origin_latency_ms: f64,
    /// When the origin failed, ms from the start of the load.
    pub failure_window_ms: Option<(f64, f64)>,
    /// When Redis was unreachable (store-outage), ms from the start of the load.
    pub outage_window_ms: Option<(f64, f64)>,
    /// Each strategy's figures.
    pub strategies: Vec<StrategyReport>,
}

/// Figures of one scenario from the runs of its strategies.
pub fn scenario_report(plan: &ScenarioPlan, runs: &[RawRun]) -> ScenarioReport {
    let baseline = runs
        .iter()
        .find(|r| r.strategy.is_baseline())
        .map(|r| r.origin_calls);
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    let latency = ms(plan.origin.latency);
    let steady = plan.scenario != Scenario::Cold;
    let description = match plan.scenario {
        Scenario::Cold => format!(
            "{} concurrent requests for each of {} keys on an empty cache; origin {latency:.0} ms",
            plan.threads, plan.keys
        ),
        Scenario::Expiry => format!(
            "{} requests/s for {:.1} s across {} warm keys with a {:.0} ms TTL, so they expire under load; origin {latency:.0} ms",
            plan.rate,
            plan.duration.as_secs_f64(),
            plan.keys,
            ms(plan.ttl)
        ),
        Scenario::OriginFailure => format!(
            "{} requests/s for {:.1} s across {} warm keys, {:.0} ms TTL; the origin fails every call in the window shown",
            plan.rate,
            plan.duration.as_secs_f64(),
            plan.keys,
            ms(plan.ttl)
        ),
        Scenario::Patterns => format!(
            "{} requests/s for {:.1} s across {} rows, reads and writes",
            plan.rate,
            plan.duration.as_secs_f64(),
            plan.keys
        ),
        Scenario::StoreOutage => format!(
            "{} requests/s for {:.1} s across {} warm keys, {:.0} ms TTL; every strategy reaches Redis through a relay that drops all connections and refuses new ones in the window shown; origin {latency:.0} ms",
            plan.rate,
            plan.duration.as_secs_f64(),
            plan.keys,
            ms(plan.ttl)
        ),
    };
    ScenarioReport {
        name: plan.scenario.name().to_string(),
        description,
        keys: plan.keys,
        threads: (!steady).then_some(plan.threads),
        rate: steady.then_some(plan.rate),
        duration_ms: steady.then(|| ms(plan.duration)),
        ttl_ms: ms(plan.ttl),
        origin_latency_ms: latency,
        failure_window_ms: plan
            .failure_window
            .map(|(a, b)| (ms(plan.duration) * a, ms(plan.duration) * b)),
        outage_window_ms: plan
            .outage_window
            .map(|(a, b)| (ms(plan.duration) * a, ms(plan.duration) * b)),
        strategies: runs
            .iter()
            .map(|r| summarize(r, plan.keys, baseline))
            .collect(),
    }
}

/// The scenario as text: heading, table, verdicts.
pub fn render(report: &ScenarioReport) -> String {
    let table = if report.name == Scenario::Patterns.name() {
        patterns_table(report)
    } else {
        reads_table(report)
    };
    let mut out = format!("\n== {} ==\n{}\n", report.name, report.description);
    if let Some((from, until)) = report.failure_window_ms {
        out.push_str(&format!("origin down from {from:.0} ms to {until:.0} ms\n"));
    }
    if let Some((from, until)) = report.outage_window_ms {
        out.push_str(&format!("Redis down from {from:.0} ms to {until:.0} ms\n"));
    }
    out.push_str(&table.to_string());
    out.push('\n');
    for s in &report.strategies {
        out.push_str(&format!("  {}\n", s.verdict));
    }
    out
}

/// The write patterns side by side: what a write costs, what a read costs, and
/// what each gives up (fresh reads, the database's lag, writes lost to a crash).
fn patterns_table(report: &ScenarioReport) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(vec![
            "strategy",
            "requests",
            "write p50 ms",
            "write p99 ms",
            "read p50 ms",
            "read p99 ms",
            "hit rate",
            "database reads",
            "stale reads",
            "database lag p99 ms",
            "acknowledged writes",
            "lost writes",
        ]);
    let opt = |v: Option<f64>| v.map_or("—".to_string(), ms);
    let count = |v: Option<u64>| v.map_or("—".to_string(), |n| n.to_string());
    for s in &report.strategies {
        table.add_row(vec![
            s.name.clone(),
            s.requests.to_string(),
            opt(s.write_p50_ms),
            opt(s.write_p99_ms),
            opt(s.read_p50_ms),
            opt(s.read_p99_ms),
            format!("{:.1}%", s.hit_rate * 100.0),
            s.origin_calls.to_string(),
            count(s.stale_reads),
            opt(s.db_lag_p99_ms),
            count(s.acknowledged_writes),
            count(s.lost_writes),
        ]);
    }
    for i in 1..12 {
        if let Some(col) = table.column_mut(i) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

/// The read scenarios' table: origin calls, hits, latencies, waits.
fn reads_table(report: &ScenarioReport) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(vec![
            "strategy",
            "requests",
            "origin calls",
            "vs none",
            "hit rate",
            "stale",
            "errors",
            "timeouts",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "waited",
            "coalesced wait p50 ms",
        ]);
    for s in &report.strategies {
        table.add_row(vec![
            s.name.clone(),
            s.requests.to_string(),
            s.origin_calls.to_string(),
            s.reduction_pct
                .map_or("—".to_string(), |p| format!("−{p:.1}%")),
            format!("{:.1}%", s.hit_rate * 100.0),
            s.served_stale.to_string(),
            s.errors.to_string(),
            s.timeouts.to_string(),
            ms(s.p50_ms),
            ms(s.p95_ms),
            ms(s.p99_ms),
            ms(s.max_ms),
            s.waited.to_string(),
            s.wait_p50_ms.map_or("—".to_string(), ms),
        ]);
    }
    for i in 1..14 {
        if let Some(col) = table.column_mut(i) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

/// Milliseconds for a table cell: sub-millisecond hits stay visible as such.
fn ms(value: f64) -> String {
    if value < 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    }
}
