//! The demo's story, run as a user runs it: `herdguard demo --fleet 4` (the demo
//! starts and stops its own redis-server) with the `herdguard` strategy — at most
//! one origin call per key per TTL, nobody waiting — against `none` and `fleet`;
//! `--fleet` without redis-server on PATH; the `--report` HTML page, read by a
//! real HTML parser.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

mod common;
use common::{chromium, colours, count, strategy};

fn herdguard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herdguard"))
        .args(args)
        .output()
        .expect("the herdguard binary runs")
}

fn series(s: &Value, field: &str) -> Vec<u64> {
    s["timeline"][field]
        .as_array()
        .unwrap_or_else(|| panic!("timeline.{field} in {s}"))
        .iter()
        .map(|v| v.as_u64().expect("a count"))
        .collect()
}

/// The most origin calls in any `window` consecutive buckets.
fn most_in_window(calls: &[u64], window: usize) -> u64 {
    calls
        .windows(window.min(calls.len()).max(1))
        .map(|w| w.iter().sum())
        .max()
        .unwrap_or(0)
}

/// One key, so the timeline's origin calls are that key's. Four processes at
/// 100 requests/s each (400/s on the key), TTL 400 ms, origin 100 ms, 2 s.
///
/// "At most one origin call per key per TTL": no 400 ms window (4 consecutive
/// 100 ms buckets: two calls at least 400 ms apart always fall 4 buckets apart)
/// holds two calls. "Nobody waits after warm-up": no request that arrived after
/// the first TTL of the load waited for an origin call (the keys are also warmed
/// before the load starts, unmeasured).
#[test]
fn herdguard_makes_one_origin_call_per_key_per_ttl_across_a_fleet_of_4_and_nobody_waits() {
    let (ttl_ms, bucket_ms) = (400u64, 100u64);
    let out = herdguard(&[
        "demo",
        "--json",
        "--seed",
        "3",
        "--fleet",
        "4",
        "--scenario",
        "expiry",
        "--strategy",
        "none,fleet,herdguard",
        "-k",
        "1",
        "--rate",
        "100",
        "--duration",
        "2s",
        "--ttl",
        "400ms",
        "--origin-latency",
        "100ms",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo --fleet 4 failed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(report["processes"], 4);
    assert_eq!(report["store"], "redis");
    let expiry = &report["scenarios"][0];
    assert_eq!(expiry["name"], "expiry");
    let window = (ttl_ms / bucket_ms) as usize;

    let h = strategy(expiry, "herdguard");
    assert_eq!(count(h, "requests"), 4 * 200, "every process's requests");
    assert_eq!(h["timeline"]["bucket_ms"], bucket_ms);
    let calls = series(h, "origin_calls");
    let waiting = series(h, "waiting");
    assert_eq!(calls.iter().sum::<u64>(), count(h, "origin_calls"), "{h}");
    assert_eq!(waiting.iter().sum::<u64>(), count(h, "waited"), "{h}");
    // 2 s of a 400 ms TTL: the key is refreshed, again and again, by one process.
    assert!(count(h, "origin_calls") >= 3, "herdguard refreshed: {h}");
    assert!(
        most_in_window(&calls, window) <= 1,
        "herdguard: two origin calls within one TTL: {calls:?}"
    );
    let after_warm_up: u64 = waiting.iter().skip(window).sum();
    assert_eq!(
        after_warm_up, 0,
        "herdguard: callers waited after the first TTL: {waiting:?}"
    );
    assert_eq!(count(h, "errors") + count(h, "timeouts"), 0, "{h}");

    // The same checks fail for the others: the test can tell.
    let none = strategy(expiry, "none");
    assert!(
        most_in_window(&series(none, "origin_calls"), window) > 1,
        "none stampedes: {none}"
    );
    let fleet = strategy(expiry, "fleet");
    assert!(
        series(fleet, "waiting").iter().skip(window).sum::<u64>() > 0,
        "the lease alone lets callers wait at each expiry: {fleet}"
    );
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("herdguard-story-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

#[test]
fn fleet_without_redis_server_on_path_exits_2_with_the_install_line() {
    // PATH holds one empty directory: no redis-server anywhere on it.
    let empty = temp_dir("empty-path");
    let out = Command::new(env!("CARGO_BIN_EXE_herdguard"))
        .args([
            "demo",
            "--fleet",
            "--scenario",
            "cold",
            "-t",
            "2",
            "-k",
            "1",
        ])
        .env("PATH", &empty)
        .output()
        .expect("the herdguard binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("apt-get install redis-server"),
        "says how to install it: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.stdout.is_empty());
    let _ = std::fs::remove_dir_all(&empty);
}

#[test]
fn fleet_with_redis_or_processes_is_a_usage_error() {
    for args in [
        &["demo", "--fleet", "--redis", "redis://127.0.0.1:6379/"][..],
        &["demo", "--fleet", "2", "--processes", "3"],
        &["demo", "--fleet", "0"],
    ] {
        let out = herdguard(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: --fleet"), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn html_report_parses_and_has_one_chart_per_scenario() {
    let dir = temp_dir("report");
    let path = dir.join("report.html");
    let path_text = path.to_str().expect("a UTF-8 path");
    let out = herdguard(&[
        "demo",
        "--seed",
        "5",
        "--report",
        path_text,
        "-t",
        "5",
        "-k",
        "2",
        "--origin-latency",
        "20ms",
        "--ttl",
        "100ms",
        "--rate",
        "200",
        "--duration",
        "500ms",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo --report failed: {stderr}");
    let text = std::fs::read_to_string(&path).expect("the report was written");
    let page = scraper::Html::parse_document(&text);
    assert!(
        page.errors.is_empty(),
        "HTML parse errors: {:?}",
        page.errors
    );
    let select = |css: &str| scraper::Selector::parse(css).expect("a selector");

    let scenarios = ["cold", "expiry", "origin-failure"];
    let sections: Vec<_> = page.select(&select("section")).collect();
    assert_eq!(sections.len(), scenarios.len());
    assert_eq!(page.select(&select("svg")).count(), scenarios.len());
    for (section, name) in sections.iter().zip(scenarios) {
        assert_eq!(section.value().attr("id"), Some(name));
        let charts: Vec<_> = section.select(&select("svg")).collect();
        assert_eq!(charts.len(), 1, "{name}: one chart");
        // A line per strategy in each of the chart's two panels, herdguard's among them.
        let rows = section.select(&select("tbody tr")).count();
        assert!(rows >= 4, "{name}: the table has every strategy");
        assert_eq!(charts[0].select(&select("path title")).count(), rows * 2);
        assert!(
            section.select(&select("tr.herdguard")).count() == 1,
            "{name}: herdguard's row"
        );
        let recommend: String = section
            .select(&select("p.recommend"))
            .flat_map(|p| p.text())
            .collect();
        assert!(
            recommend.starts_with("use herdguard"),
            "{name}: {recommend}"
        );
    }
    // Self-contained: nothing loaded from anywhere.
    assert_eq!(page.select(&select("script, link, img, iframe")).count(), 0);
    assert!(!text.contains("src=") && !text.contains("url("));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_report_path_that_cannot_be_written_is_bad_input() {
    let dir = temp_dir("bad-report");
    let missing = dir.join("no-such-directory").join("report.html");
    let out = herdguard(&[
        "demo",
        "--scenario",
        "cold",
        "-t",
        "2",
        "-k",
        "1",
        "--report",
        missing.to_str().expect("a UTF-8 path"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: --report") && !stderr.contains("panicked"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "fails before running");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_report_renders_in_a_real_browser() {
    let dir = temp_dir("browser");
    let path = dir.join("report.html");
    let out = herdguard(&[
        "demo",
        "--seed",
        "7",
        "--report",
        path.to_str().expect("a UTF-8 path"),
        "--scenario",
        "expiry",
        "--duration",
        "2s",
    ]);
    assert!(
        out.status.success(),
        "demo --report failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&shots).expect("a screenshot directory");
    let shot = shots.join("demo-report.png");
    let _ = std::fs::remove_file(&shot);
    let url = format!("file://{}", path.display());
    let browser = |extra: &[&str]| {
        Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .args(extra)
            .arg(&url)
            .output()
            .expect("chromium runs")
    };
    // What the browser built from the page: the chart is there, as SVG paths.
    let run = browser(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&run.stdout);
    assert!(
        dom.contains("<svg"),
        "the browser's DOM has the chart: {dom}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        dom.matches("<path").count() >= 12,
        "a line per strategy and panel"
    );
    // What a person sees: a rendered page, not a blank one.
    let run = browser(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1200,1500",
    ]);
    assert!(
        shot.is_file(),
        "chromium wrote no screenshot: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let (distinct, width, height) = colours(&shot);
    assert_eq!((width, height), (1200, 1500));
    assert!(
        distinct > 50,
        "the screenshot shows text and coloured lines ({distinct} colours)"
    );
    println!("screenshot: {}", shot.display());
    let _ = std::fs::remove_dir_all(&dir);
}
