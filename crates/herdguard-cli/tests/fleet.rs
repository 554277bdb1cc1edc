//! `herdguard demo --redis … --processes 4` against a real redis-server started by
//! the test: the fleet lease makes one origin call per key across four processes,
//! in-process single flight alone makes one per process.

use std::process::Command;

use herdguard_testkit::RedisServer;
use serde_json::Value;

mod common;
use common::calls;

#[test]
fn fleet_lease_makes_one_call_per_key_across_four_processes() {
    let redis = RedisServer::start().expect("redis-server starts");
    let out = Command::new(env!("CARGO_BIN_EXE_herdguard"))
        .args(["demo", "--json", "--seed", "11", "--redis", &redis.url()])
        .args(["--processes", "4", "--flush", "--scenario", "cold"])
        .args(["--strategy", "none,classic,single-flight,fleet"])
        .args(["-t", "10", "-k", "3", "--origin-latency", "150ms"])
        .output()
        .expect("the herdguard binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(report["processes"], 4);
    assert_eq!(report["store"], "redis");
    let (keys, processes, threads) = (3, 4, 10);
    assert_eq!(
        calls(&report, "fleet"),
        keys,
        "one call per key across the fleet"
    );
    assert_eq!(
        calls(&report, "single-flight"),
        keys * processes,
        "one per key per process"
    );
    assert_eq!(
        calls(&report, "classic"),
        keys,
        "SET NX over real Redis: one per key"
    );
    assert_eq!(calls(&report, "none"), keys * processes * threads);
}

#[test]
fn unreachable_redis_and_processes_without_redis_are_bad_input() {
    let port = herdguard_testkit::free_port().expect("a free port");
    let url = format!("redis://127.0.0.1:{port}/");
    for args in [
        vec!["demo", "--redis", url.as_str()],
        vec!["demo", "--processes", "4"],
        vec!["demo", "--flush"],
        vec!["demo", "--strategy", "fleet"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_herdguard"))
            .args(&args)
            .output()
            .expect("the herdguard binary runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && !stderr.contains("panicked"),
            "{stderr}"
        );
    }
}
