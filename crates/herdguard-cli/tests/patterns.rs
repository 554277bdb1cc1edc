//! `herdguard demo --scenario patterns`: the three write patterns side by side
//! against the simulated database, and (with a real redis-server the test
//! starts) the crash — a write-behind worker process SIGKILLed mid-run loses no
//! acknowledged write, while the hand-written in-memory write-behind loses them.

use std::process::Command;

use herdguard_testkit::RedisServer;
use serde_json::Value;

mod common;
use common::{count, strategy};

fn patterns(extra: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_herdguard"))
        .args(["demo", "--json", "--seed", "3", "--scenario", "patterns"])
        .args(["-k", "4", "--rate", "200", "--duration", "1500ms"])
        .args(["--db-read", "20ms", "--db-write", "60ms"])
        .args(extra)
        .output()
        .expect("the herdguard binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let scenarios = report["scenarios"].as_array().expect("scenarios");
    assert_eq!(scenarios.len(), 1, "{report}");
    assert_eq!(scenarios[0]["name"], "patterns");
    scenarios[0].clone()
}

fn ms(strategy: &Value, field: &str) -> f64 {
    strategy[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} in {strategy}"))
}

#[test]
fn the_three_patterns_pay_for_writes_where_they_say_and_read_their_writes() {
    let report = patterns(&[]);
    let names: Vec<&str> = report["strategies"]
        .as_array()
        .expect("strategies")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["cache-aside", "write-through", "write-behind"]);
    for name in names {
        let s = strategy(&report, name);
        assert_eq!(count(s, "requests"), 300, "{s}");
        assert_eq!(count(s, "errors"), 0, "{s}");
        assert_eq!(count(s, "stale_reads"), 0, "read-after-write: {s}");
        assert_eq!(count(s, "lost_writes"), 0, "{s}");
        assert!(count(s, "acknowledged_writes") > 20, "{s}");
    }
    // The synchronous patterns wait for the database's 60 ms write.
    for name in ["cache-aside", "write-through"] {
        let s = strategy(&report, name);
        assert!(ms(s, "write_p50_ms") >= 60.0, "{s}");
    }
    // Write-behind acknowledges from memory and writes the database later.
    let behind = strategy(&report, "write-behind");
    assert!(ms(behind, "write_p50_ms") < 10.0, "{behind}");
    assert!(ms(behind, "db_lag_p99_ms") >= 60.0, "{behind}");
    // Cache-aside drops the key on every write, so it reads the database more.
    assert!(
        count(strategy(&report, "cache-aside"), "origin_calls")
            > count(strategy(&report, "write-through"), "origin_calls"),
        "{report}"
    );
}

#[test]
fn a_killed_write_behind_process_loses_no_acknowledged_write_and_the_naive_one_does() {
    let redis = RedisServer::start().expect("redis-server starts");
    let report = patterns(&["--redis", &redis.url()]);
    let durable = strategy(&report, "write-behind");
    assert!(
        count(durable, "acknowledged_writes") > 50,
        "the worker wrote before it died: {durable}"
    );
    assert_eq!(count(durable, "lost_writes"), 0, "{durable}");
    assert!(ms(durable, "write_p99_ms") < 50.0, "{durable}");

    let naive = strategy(&report, "write-behind-naive");
    assert!(count(naive, "acknowledged_writes") > 50, "{naive}");
    assert!(
        count(naive, "lost_writes") > 0,
        "an in-memory queue dies with its process: {naive}"
    );
    // The run cleans up after itself.
    let left = Command::new("redis-cli")
        .args([
            "-p",
            &redis.port().to_string(),
            "--scan",
            "--pattern",
            "hgdemo:*",
        ])
        .output()
        .expect("redis-cli runs");
    assert!(left.status.success());
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(left.trim().is_empty(), "keys left in Redis: {left}");
}
