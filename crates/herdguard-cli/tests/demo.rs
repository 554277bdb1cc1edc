//! The built `herdguard` binary, run as a user runs it: `demo --json` parsed, and
//! bad input checked for exit code 2 with one line on stderr.

use std::process::{Command, Output};

use serde_json::Value;

mod common;
use common::strategy;

fn herdguard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herdguard"))
        .args(args)
        .output()
        .expect("the herdguard binary runs")
}

fn demo_json(args: &[&str]) -> Value {
    let mut all = vec!["demo", "--json", "--seed", "7"];
    all.extend_from_slice(args);
    let out = herdguard(&all);
    assert!(
        out.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON document")
}

#[test]
fn cold_protected_strategies_call_the_origin_once_per_key() {
    let (threads, keys) = (20, 3);
    let report = demo_json(&[
        "--scenario",
        "cold",
        "-t",
        "20",
        "-k",
        "3",
        "--origin-latency",
        "50ms",
    ]);
    let scenarios = report["scenarios"].as_array().expect("scenarios");
    assert_eq!(scenarios.len(), 1);
    let cold = &scenarios[0];
    assert_eq!(cold["name"], "cold");
    let none = strategy(cold, "none");
    assert_eq!(none["requests"], threads * keys);
    assert_eq!(
        none["origin_calls"],
        threads * keys,
        "unprotected: one call per caller"
    );
    for name in ["classic", "single-flight", "herdguard"] {
        let s = strategy(cold, name);
        assert_eq!(s["requests"], threads * keys);
        assert_eq!(s["origin_calls"], keys, "{name}: one call per key");
        assert_eq!(s["errors"], 0);
        assert!(s["p50_ms"].as_f64().is_some() && s["p99_ms"].as_f64().is_some());
    }
}

#[test]
fn every_scenario_reports_every_applicable_strategy() {
    let report = demo_json(&[
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
    let names: Vec<&str> = report["scenarios"]
        .as_array()
        .expect("scenarios")
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["cold", "expiry", "origin-failure"]);
    let strategies = |n: usize| -> Vec<&str> {
        report["scenarios"][n]["strategies"]
            .as_array()
            .expect("strategies")
            .iter()
            .map(|s| s["name"].as_str().expect("name"))
            .collect()
    };
    assert_eq!(
        strategies(0),
        ["none", "classic", "single-flight", "herdguard"]
    );
    assert_eq!(
        strategies(1),
        [
            "none",
            "classic",
            "single-flight",
            "xfetch",
            "swr",
            "herdguard"
        ]
    );
    assert_eq!(
        strategies(2),
        ["none", "single-flight", "sie", "breaker", "herdguard"]
    );
    // Every strategy has its timeline, one span per scenario.
    for scenario in report["scenarios"].as_array().expect("scenarios") {
        let lengths: Vec<usize> = scenario["strategies"]
            .as_array()
            .expect("strategies")
            .iter()
            .map(|s| {
                assert_eq!(s["timeline"]["bucket_ms"], 100, "{s}");
                let calls = s["timeline"]["origin_calls"].as_array().expect("calls");
                let waiting = s["timeline"]["waiting"].as_array().expect("waiting");
                assert_eq!(calls.len(), waiting.len());
                calls.len()
            })
            .collect();
        assert!(lengths.windows(2).all(|w| w[0] == w[1]), "{lengths:?}");
    }
    let failure = &report["scenarios"][2];
    // The origin fails for a window: the unprotected cache passes errors on, the
    // stale-if-error strategies serve stale values instead.
    assert!(
        strategy(failure, "none")["errors"]
            .as_u64()
            .expect("errors")
            > 0
    );
    for name in ["sie", "breaker", "herdguard"] {
        let s = strategy(failure, name);
        assert_eq!(s["errors"], 0, "{name} serves stale instead of errors");
        assert!(s["served_stale"].as_u64().expect("stale") > 0);
    }
    let expiry = &report["scenarios"][1];
    assert_eq!(strategy(expiry, "swr")["errors"], 0);
}

#[test]
fn strategy_filter_keeps_only_the_named_ones() {
    let report = demo_json(&[
        "--scenario",
        "cold",
        "--strategy",
        "none,single-flight",
        "-t",
        "3",
        "-k",
        "1",
        "--origin-latency",
        "10ms",
    ]);
    let names: Vec<&str> = report["scenarios"][0]["strategies"]
        .as_array()
        .expect("strategies")
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["none", "single-flight"]);
}

fn assert_bad_input(args: &[&str]) {
    let out = herdguard(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?} exits 2; stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "{args:?}: one line: {stderr}"
    );
    assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
}

#[test]
fn bad_input_exits_2_with_one_line() {
    assert_bad_input(&["demo", "--threads", "0"]);
    assert_bad_input(&["demo", "--keys", "0"]);
    assert_bad_input(&["demo", "--failure-rate", "2"]);
    assert_bad_input(&["demo", "--origin-latency", "2h"]);
    assert_bad_input(&["demo", "--scenario", "cold", "--strategy", "swr"]);
}

#[test]
fn clap_usage_errors_exit_2_without_a_panic() {
    for args in [
        &["demo", "--threads", "many"][..],
        &["demo", "--scenario", "nope"],
        &["nope"],
    ] {
        let out = herdguard(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    }
}

/// The widest line of a run's text output at `COLUMNS=100`, in characters
/// (what a terminal counts): tables, timelines and the wrapped prose.
fn widest_line(args: &[&str]) -> (usize, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_herdguard"))
        .args(args)
        .env("COLUMNS", "100")
        .output()
        .expect("the herdguard binary runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .map(|l| (l.chars().count(), l.to_string()))
        .max()
        .expect("some output")
}

#[test]
fn the_default_output_fits_in_100_columns_and_wide_shows_every_column() {
    for scenario in ["cold", "expiry", "origin-failure", "patterns"] {
        let args = [
            "demo",
            "--scenario",
            scenario,
            "-k",
            "2",
            "-t",
            "10",
            "--duration",
            "1s",
            "--seed",
            "7",
        ];
        let (width, line) = widest_line(&args);
        assert!(width <= 100, "{scenario}: {width} columns: {line}");
        let wide: Vec<&str> = args.iter().copied().chain(["--wide"]).collect();
        let (width, line) = widest_line(&wide);
        assert!(
            width > 100,
            "{scenario} --wide has every column: {width}: {line}"
        );
    }
}
