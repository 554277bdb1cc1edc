//! `--report FILE.html`: the run as one self-contained page — inline SVG charts
//! (origin calls and waiting callers per 100 ms, every strategy on one chart per
//! scenario) and the tables. No script, no style sheet or font from elsewhere:
//! it opens offline, in any browser, and prints.

use std::fmt::Write as _;

use crate::report::{recommendation, DemoReport, ScenarioReport};
use crate::stats::{StrategyReport, Timeline};

/// The page for `report`.
pub fn render(report: &DemoReport) -> String {
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>herdguard demo report</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>herdguard demo</h1>\n<p class=\"meta\">herdguard {}; seed {} (<code>--seed {}</code> \
         reproduces the origin's draws); {} process(es), {} store; {:.1} s</p>\n",
        esc(&report.version),
        report.seed,
        report.seed,
        report.processes,
        esc(&report.store),
        report.wall_ms / 1000.0
    );
    for scenario in &report.scenarios {
        section(&mut page, scenario);
    }
    page.push_str("</body>\n</html>\n");
    page
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:72em;padding:0 1em;color:#222}\
h2{margin-top:2em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;font-size:0.9em;margin:1em 0}\
th,td{border:1px solid #ccc;padding:0.25em 0.5em;text-align:right}\
th:first-child,td:first-child{text-align:left}\
tr.herdguard{background:#eaf6ea;font-weight:bold}\
.meta,.window{color:#555}\
.recommend{font-size:1.05em;background:#eaf6ea;padding:0.5em;border-left:4px solid #2a9d3a}\
svg{display:block;max-width:100%;height:auto}\
svg text{font-family:system-ui,sans-serif}";

fn section(page: &mut String, s: &ScenarioReport) {
    let _ = write!(
        page,
        "<section id=\"{}\">\n<h2>{}</h2>\n<p>{}</p>\n",
        esc(&s.name),
        esc(&s.name),
        esc(&s.description)
    );
    if let Some((from, until)) = s.failure_window_ms {
        let _ = writeln!(
            page,
            "<p class=\"window\">origin down from {from:.0} ms to {until:.0} ms</p>"
        );
    }
    if let Some((from, until)) = s.outage_window_ms {
        let _ = writeln!(
            page,
            "<p class=\"window\">Redis down from {from:.0} ms to {until:.0} ms</p>"
        );
    }
    if let Some(line) = recommendation(s) {
        let _ = writeln!(page, "<p class=\"recommend\">{}</p>", esc(&line));
    }
    if s.strategies.iter().any(|r| r.timeline.is_some()) {
        chart(page, s);
    }
    table(page, s);
    page.push_str("<ul>\n");
    for r in &s.strategies {
        let _ = writeln!(page, "<li>{}</li>", esc(&r.verdict));
    }
    page.push_str("</ul>\n</section>\n");
}

/// Colour of a strategy's line.
fn colour(name: &str) -> &'static str {
    match name {
        "none" => "#d62728",
        "classic" => "#ff7f0e",
        "single-flight" => "#1f77b4",
        "fleet" => "#9467bd",
        "xfetch" => "#17becf",
        "swr" => "#8c564b",
        "sie" => "#e377c2",
        "breaker" => "#7f7f7f",
        "herdguard" => "#2a9d3a",
        _ => "#bcbd22",
    }
}

const WIDTH: f64 = 860.0;
const PANEL: f64 = 170.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 28.0;
const GAP: f64 = 52.0;

/// Two panels in one SVG: origin calls per bucket, then callers that waited per
/// bucket; one step line per strategy, `herdguard` drawn last and thickest.
fn chart(page: &mut String, s: &ScenarioReport) {
    let lines: Vec<(&StrategyReport, &Timeline)> = s
        .strategies
        .iter()
        .filter_map(|r| r.timeline.as_ref().map(|t| (r, t)))
        .collect();
    let buckets = lines
        .iter()
        .map(|(_, t)| t.origin_calls.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let bucket_ms = lines.first().map_or(100, |(_, t)| t.bucket_ms);
    let height = TOP + PANEL * 2.0 + GAP + 40.0;
    let _ = writeln!(
        page,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {height}\" width=\"{WIDTH}\" height=\"{height}\" role=\"img\" aria-label=\"{}: origin calls and waiting callers per {bucket_ms} ms\">",
        esc(&s.name)
    );
    type Series = fn(&Timeline) -> &Vec<u64>;
    let panels: [(&str, Series); 2] = [
        ("origin calls per {b} ms", |t| &t.origin_calls),
        ("callers that waited for the origin, per {b} ms", |t| {
            &t.waiting
        }),
    ];
    let plot_w = WIDTH - LEFT - RIGHT;
    for (i, (title, series)) in panels.iter().enumerate() {
        let top = TOP + i as f64 * (PANEL + GAP);
        let max = lines
            .iter()
            .flat_map(|(_, t)| series(t).iter().copied())
            .max()
            .unwrap_or(0)
            .max(1);
        let x = |b: usize| LEFT + plot_w * b as f64 / buckets as f64;
        let y = |v: u64| top + PANEL - PANEL * v as f64 / max as f64;
        let _ = writeln!(
            page,
            "<text x=\"{LEFT}\" y=\"{:.1}\" font-size=\"13\" font-weight=\"bold\">{}</text>",
            top - 8.0,
            esc(&title.replace("{b}", &bucket_ms.to_string()))
        );
        // Axes, with the maximum and the time at a few ticks.
        let _ = writeln!(
            page,
            "<path d=\"M{LEFT} {top} V{:.1} H{:.1}\" fill=\"none\" stroke=\"#444\"/>",
            top + PANEL,
            LEFT + plot_w
        );
        let _ = writeln!(
            page,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{max}</text>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">0</text>",
            LEFT - 4.0,
            top + 10.0,
            LEFT - 4.0,
            top + PANEL
        );
        // The window in which the origin (or Redis) was down, shaded.
        if let Some((from, until)) = s.failure_window_ms.or(s.outage_window_ms) {
            let at = |ms: f64| LEFT + plot_w * (ms / (buckets as f64 * bucket_ms as f64)).min(1.0);
            let _ = writeln!(
                page,
                "<rect x=\"{:.1}\" y=\"{top}\" width=\"{:.1}\" height=\"{PANEL}\" fill=\"#f4d9d9\"><title>{} down</title></rect>",
                at(from),
                (at(until) - at(from)).max(0.0),
                if s.failure_window_ms.is_some() { "origin" } else { "Redis" }
            );
        }
        let span_ms = buckets as u64 * bucket_ms;
        let step = tick_step_ms(span_ms);
        let mut t = 0;
        while t <= span_ms {
            let _ = writeln!(
                page,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{:.1} s</text>",
                LEFT + plot_w * t as f64 / span_ms.max(1) as f64,
                top + PANEL + 14.0,
                t as f64 / 1000.0
            );
            t += step;
        }
        // herdguard last, on top of the others.
        let mut order: Vec<&(&StrategyReport, &Timeline)> = lines.iter().collect();
        order.sort_by_key(|(r, _)| r.name == "herdguard");
        for (r, t) in order {
            let values = series(t);
            let mut d = format!(
                "M{:.1} {:.1}",
                x(0),
                y(values.first().copied().unwrap_or(0))
            );
            for (b, &v) in values.iter().enumerate() {
                let _ = write!(d, " V{:.1} H{:.1}", y(v), x(b + 1));
            }
            let bold = r.name == "herdguard";
            let _ = writeln!(
                page,
                "<path d=\"{d}\" fill=\"none\" stroke=\"{}\" stroke-width=\"{}\" stroke-linejoin=\"round\"><title>{}</title></path>",
                colour(&r.name),
                if bold { 3.0 } else { 1.5 },
                esc(&r.name)
            );
        }
        // Legend, in table order, with each strategy's total.
        for (n, (r, t)) in lines.iter().enumerate() {
            let ly = top + 12.0 + n as f64 * 16.0;
            let total: u64 = series(t).iter().sum();
            let _ = writeln!(
                page,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"14\" height=\"4\" fill=\"{}\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\"{}>{} ({total})</text>",
                LEFT + plot_w + 12.0,
                ly - 4.0,
                colour(&r.name),
                LEFT + plot_w + 30.0,
                ly,
                if r.name == "herdguard" {
                    " font-weight=\"bold\""
                } else {
                    ""
                },
                esc(&r.name)
            );
        }
    }
    page.push_str("</svg>\n");
}

/// A round step between time ticks, so at most 10 ticks cover `span_ms`.
fn tick_step_ms(span_ms: u64) -> u64 {
    const STEPS: [u64; 12] = [
        100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000,
    ];
    STEPS
        .iter()
        .copied()
        .find(|step| span_ms / step <= 10)
        .unwrap_or(600_000)
}

fn table(page: &mut String, s: &ScenarioReport) {
    let patterns = s.strategies.iter().any(|r| r.write_p50_ms.is_some());
    let opt = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.1}"));
    page.push_str("<table>\n<thead><tr>");
    let heads: &[&str] = if patterns {
        &[
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
            "lost writes",
        ]
    } else {
        &[
            "strategy",
            "requests",
            "origin calls",
            "vs none",
            "hit rate",
            "stale",
            "errors",
            "timeouts",
            "p50 ms",
            "p99 ms",
            "max ms",
            "waited",
        ]
    };
    for h in heads {
        let _ = write!(page, "<th>{}</th>", esc(h));
    }
    page.push_str("</tr></thead>\n<tbody>\n");
    for r in &s.strategies {
        let cells: Vec<String> = if patterns {
            vec![
                r.requests.to_string(),
                opt(r.write_p50_ms),
                opt(r.write_p99_ms),
                opt(r.read_p50_ms),
                opt(r.read_p99_ms),
                format!("{:.1}%", r.hit_rate * 100.0),
                r.origin_calls.to_string(),
                r.stale_reads.map_or("—".to_string(), |n| n.to_string()),
                opt(r.db_lag_p99_ms),
                r.lost_writes.map_or("—".to_string(), |n| n.to_string()),
            ]
        } else {
            vec![
                r.requests.to_string(),
                r.origin_calls.to_string(),
                r.reduction_pct
                    .map_or("—".to_string(), |p| format!("−{p:.1}%")),
                format!("{:.1}%", r.hit_rate * 100.0),
                r.served_stale.to_string(),
                r.errors.to_string(),
                r.timeouts.to_string(),
                format!("{:.1}", r.p50_ms),
                format!("{:.1}", r.p99_ms),
                format!("{:.1}", r.max_ms),
                r.waited.to_string(),
            ]
        };
        let _ = write!(
            page,
            "<tr{}><td title=\"{}\">{}</td>",
            if r.name == "herdguard" {
                " class=\"herdguard\""
            } else {
                ""
            },
            esc(&r.description),
            esc(&r.name)
        );
        for c in cells {
            let _ = write!(page, "<td>{}</td>", esc(&c));
        }
        page.push_str("</tr>\n");
    }
    page.push_str("</tbody>\n</table>\n");
}

/// Text made safe for HTML content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_ticks_are_round_and_few() {
        assert_eq!(tick_step_ms(400), 100);
        assert_eq!(tick_step_ms(4_200), 500);
        assert_eq!(tick_step_ms(60_000), 10_000);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
