//! Turning raw runs into the report: a table and verdicts per scenario, or one
//! JSON document.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, ContentArrangement, Table};
use serde::{Deserialize, Serialize};

use crate::args::{Scenario, ScenarioPlan};
use crate::stats::{summarize, RawRun, StrategyReport, Timeline};
use crate::strategy::Strategy;

/// The whole run, as printed by `--json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DemoReport {
    /// herdguard version.
    pub version: String,
    /// The seed in use (pass it to `--seed` to reproduce the draws).
    pub seed: u64,
    /// `embedded`, `redis` or `redis-cluster`.
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
    /// Whether the strategies used Redis (`--redis`, `--fleet`); not in the JSON
    /// (the document's `store` says it).
    #[serde(skip)]
    pub shared_store: bool,
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
        shared_store: plan.shared_store(),
        strategies: {
            // One span for every strategy, so their timelines line up.
            let min_ms = if steady {
                plan.duration.as_millis() as u64
            } else {
                0
            };
            let buckets = runs
                .iter()
                .map(|r| Timeline::span(r, min_ms))
                .max()
                .unwrap_or(1);
            runs.iter()
                .map(|r| summarize(r, plan.keys, baseline, buckets))
                .collect()
        },
    }
}

/// The scenario as text: heading, table, verdicts. The compact table fits in
/// 100 columns and the prose wraps at `width`; `wide` prints every column and a
/// verdict line per strategy.
pub fn render(report: &ScenarioReport, wide: bool, width: usize) -> String {
    let table = if report.name == Scenario::Patterns.name() {
        patterns_table(report, wide)
    } else if wide {
        reads_table(report)
    } else {
        compact_reads_table(report)
    };
    let mut out = format!(
        "\n== {} ==\n{}",
        report.name,
        wrap(&report.description, width, "", "")
    );
    if let Some((from, until)) = report.failure_window_ms {
        out.push_str(&format!("origin down from {from:.0} ms to {until:.0} ms\n"));
    }
    if let Some((from, until)) = report.outage_window_ms {
        out.push_str(&format!("Redis down from {from:.0} ms to {until:.0} ms\n"));
    }
    out.push_str(&table.to_string());
    out.push('\n');
    out.push_str(&timeline_rows(report));
    if let Some(line) = recommendation(report) {
        out.push_str(&wrap(&line, width, "  → ", "    "));
    }
    if wide {
        for s in &report.strategies {
            out.push_str(&wrap(&s.verdict, width, "  ", "    "));
        }
    }
    out
}

/// The width the demo's prose wraps at: `COLUMNS` when set, else the
/// terminal's when stdout is one, else 100 (the compact tables' width).
pub fn text_width() -> usize {
    use std::io::IsTerminal;
    let columns = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse().ok());
    let width = match columns {
        Some(c) => c,
        None if std::io::stdout().is_terminal() => textwrap::termwidth(),
        None => 100,
    };
    width.max(40)
}

/// `text` wrapped at `width` columns, its first line after `first`, the others
/// after `rest`, each line ended.
pub fn wrap(text: &str, width: usize, first: &str, rest: &str) -> String {
    let options = textwrap::Options::new(width)
        .initial_indent(first)
        .subsequent_indent(rest);
    let mut out = String::new();
    for line in textwrap::wrap(text, options) {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The read scenarios' compact table: what each strategy cost the origin and
/// the callers, and a short verdict (`--wide` has every column).
fn compact_reads_table(report: &ScenarioReport) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(vec![
            "strategy",
            "origin calls",
            "vs none",
            "p50 ms",
            "p99 ms",
            "err/stale",
            "waited",
            "verdict",
        ]);
    for s in &report.strategies {
        table.add_row(vec![
            s.name.clone(),
            s.origin_calls.to_string(),
            s.reduction_pct
                .map_or("—".to_string(), |p| format!("−{p:.1}%")),
            ms(s.p50_ms),
            ms(s.p99_ms),
            format!("{}/{}", s.errors + s.timeouts, s.served_stale),
            s.waited.to_string(),
            short_verdict(s),
        ]);
    }
    for i in 1..7 {
        if let Some(col) = table.column_mut(i) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

/// A verdict that fits a table cell: failures first, then whether anyone
/// waited for the origin, then the calls per key.
pub(crate) fn short_verdict(s: &StrategyReport) -> String {
    let failed = s.errors + s.timeouts;
    let per_key = s.origin_calls_per_key;
    if failed > 0 {
        format!("✗ {failed} failed")
    } else if s.waited == 0 {
        "✓ no waits".to_string()
    } else if per_key <= 1.0 {
        "✓ 1 call/key".to_string()
    } else {
        format!("{per_key:.1} calls/key")
    }
}

/// The line that heads a read scenario's verdicts: what to use and why, from
/// the `herdguard` strategy's own figures (none when it did not run).
pub fn recommendation(report: &ScenarioReport) -> Option<String> {
    let h = report
        .strategies
        .iter()
        .find(|s| s.name == Strategy::Herdguard.name())?;
    let mut line = format!(
        "use herdguard: {} origin calls ({:.1} per key",
        h.origin_calls, h.origin_calls_per_key
    );
    if let Some(pct) = h.reduction_pct {
        line.push_str(&format!(", {pct:.1}% fewer than none"));
    }
    line.push_str(&format!(
        "), {}, {}",
        match h.waited {
            0 => "no caller waited for the origin".to_string(),
            // Nothing is cached yet: every caller waits for its key's one load.
            n if report.name == Scenario::Cold.name() => {
                format!("{n} callers shared those loads")
            }
            n => format!("{n} callers waited for the origin"),
        },
        match h.errors + h.timeouts {
            0 => "no errors".to_string(),
            n => format!("{n} errors or timeouts"),
        }
    ));
    if h.served_stale > 0 {
        line.push_str(&format!(", {} served stale", h.served_stale));
    }
    let fleet = report.shared_store;
    let why = match report.name.as_str() {
        "cold" if fleet => "the Redis lease lets one process per key call the origin and hands the value to the whole fleet",
        "cold" => "single flight: one load per key, every other caller gets its value the moment it exists",
        "expiry" => "X-Fetch starts one refresh in the background near expiry and stale-while-revalidate covers a late one, so the expiry of a hot key costs nobody a wait",
        "origin-failure" => "stale-if-error answers with the last good value while the origin fails, and the breaker stops calling it",
        "store-outage" => "when Redis goes away it falls back to in-process single flight and serves on, then rejoins the fleet",
        _ => "one load per key, refreshed before expiry, stale on failure",
    };
    line.push_str(&format!(" — {why}."));
    Some(line)
}

/// Most marks in one sparkline row; longer timelines are summed into wider buckets.
const SPARK_WIDTH: usize = 80;

/// Sparklines of a read scenario: per strategy, origin calls per bucket, then
/// callers that waited per bucket (one scale per block, shared by the strategies).
fn timeline_rows(report: &ScenarioReport) -> String {
    let lines: Vec<(&str, &Timeline)> = report
        .strategies
        .iter()
        .filter_map(|s| s.timeline.as_ref().map(|t| (s.name.as_str(), t)))
        .collect();
    let Some((_, first)) = lines.first() else {
        return String::new();
    };
    let n = first.origin_calls.len();
    let per = n.div_ceil(SPARK_WIDTH).max(1);
    let bucket_ms = first.bucket_ms * per as u64;
    let mut out = String::new();
    type Series = fn(&Timeline) -> &Vec<u64>;
    let blocks: [(&str, Series); 2] = [
        ("origin calls", |t| &t.origin_calls),
        ("callers that waited for the origin", |t| &t.waiting),
    ];
    for (title, series) in blocks {
        let rows: Vec<(&str, Vec<u64>)> = lines
            .iter()
            .map(|(name, t)| (*name, regroup(series(t), per)))
            .collect();
        let max = rows
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .max()
            .unwrap_or(0);
        out.push_str(&format!(
            "{title} per {bucket_ms} ms, {} s shown (█ = {max})\n",
            fmt_secs(n as u64 * first.bucket_ms)
        ));
        for (name, values) in rows {
            out.push_str(&format!("  {name:<14}│{}│\n", sparkline(&values, max)));
        }
    }
    out
}

fn fmt_secs(ms: u64) -> String {
    format!("{:.1}", ms as f64 / 1000.0)
}

/// Sums every `per` consecutive values.
fn regroup(values: &[u64], per: usize) -> Vec<u64> {
    values.chunks(per.max(1)).map(|c| c.iter().sum()).collect()
}

/// One mark per value: blank for 0, else ▁ … █ scaled to `max` (never blank
/// for a non-zero value).
pub fn sparkline(values: &[u64], max: u64) -> String {
    const MARKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    values
        .iter()
        .map(|&v| {
            if v == 0 || max == 0 {
                ' '
            } else {
                let level = (v * 8).div_ceil(max).clamp(1, 8) as usize;
                MARKS[level - 1]
            }
        })
        .collect()
}

/// The write patterns side by side: what a write costs, what a read costs, and
/// what each gives up (fresh reads, the database's lag, writes lost to a crash).
fn patterns_table(report: &ScenarioReport, wide: bool) -> Table {
    let opt = |v: Option<f64>| v.map_or("—".to_string(), ms);
    let count = |v: Option<u64>| v.map_or("—".to_string(), |n| n.to_string());
    // (header, in the compact table too, the cell of each strategy)
    type Cell = Box<dyn Fn(&StrategyReport) -> String>;
    let columns: [(&str, bool, Cell); 12] = [
        ("strategy", true, Box::new(|s| s.name.clone())),
        ("requests", false, Box::new(|s| s.requests.to_string())),
        (
            "write p50 ms",
            false,
            Box::new(move |s| opt(s.write_p50_ms)),
        ),
        ("write p99 ms", true, Box::new(move |s| opt(s.write_p99_ms))),
        ("read p50 ms", false, Box::new(move |s| opt(s.read_p50_ms))),
        ("read p99 ms", true, Box::new(move |s| opt(s.read_p99_ms))),
        (
            "hit rate",
            false,
            Box::new(|s| format!("{:.1}%", s.hit_rate * 100.0)),
        ),
        ("db reads", true, Box::new(|s| s.origin_calls.to_string())),
        ("stale reads", true, Box::new(move |s| count(s.stale_reads))),
        ("db lag p99", true, Box::new(move |s| opt(s.db_lag_p99_ms))),
        (
            "acknowledged writes",
            false,
            Box::new(move |s| count(s.acknowledged_writes)),
        ),
        ("lost writes", true, Box::new(move |s| count(s.lost_writes))),
    ];
    let shown: Vec<_> = columns
        .iter()
        .filter(|(_, compact, _)| wide || *compact)
        .collect();
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(shown.iter().map(|(h, _, _)| *h).collect::<Vec<_>>());
    for s in &report.strategies {
        table.add_row(shown.iter().map(|(_, _, cell)| cell(s)).collect::<Vec<_>>());
    }
    for i in 1..shown.len() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparkline_scales_to_the_max_and_never_hides_a_call() {
        assert_eq!(sparkline(&[0, 1, 32, 64], 64), " ▁▄█");
        assert_eq!(sparkline(&[0, 0], 0), "  ");
        assert_eq!(regroup(&[1, 2, 3, 4, 5], 2), [3, 7, 5]);
    }
}
