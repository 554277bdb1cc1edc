//! `herdguard demo --redis-cluster … --processes 4` on a real six-node Redis
//! Cluster started by the test: the fleet lease makes one origin call per key
//! across four processes (keys on whichever shards their hash tags land),
//! in-process single flight alone one per process; and the cluster flag's bad
//! input is exit code 2 with one line.

use std::process::Command;

use herdguard_testkit::RedisCluster;
use serde_json::Value;

mod common;
use common::{calls, count, strategy};

#[test]
fn fleet_lease_on_a_cluster_makes_one_call_per_key_across_four_processes() {
    let cluster = RedisCluster::start().expect("a six-node cluster starts");
    let seeds = cluster.urls().join(",");
    let out = Command::new(env!("CARGO_BIN_EXE_herdguard"))
        .args(["demo", "--json", "--seed", "13", "--redis-cluster", &seeds])
        .args(["--processes", "4", "--scenario", "cold"])
        .args(["--strategy", "none,classic,single-flight,fleet,herdguard"])
        .args(["-t", "10", "-k", "6", "--origin-latency", "150ms"])
        .output()
        .expect("the herdguard binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(report["processes"], 4);
    assert_eq!(report["store"], "redis-cluster");
    let (keys, processes, threads) = (6, 4, 10);
    for name in ["fleet", "herdguard"] {
        assert_eq!(
            calls(&report, name),
            keys,
            "{name}: one call per key across the fleet"
        );
        let s = strategy(&report["scenarios"][0], name);
        assert_eq!(count(s, "errors"), 0, "{name}: {s}");
        assert_eq!(count(s, "requests"), keys * processes * threads, "{s}");
    }
    assert_eq!(
        calls(&report, "single-flight"),
        keys * processes,
        "one per key per process"
    );
    assert_eq!(
        calls(&report, "classic"),
        keys,
        "SET NX on the cluster: one per key"
    );
    assert_eq!(calls(&report, "none"), keys * processes * threads);
}

#[test]
fn bad_cluster_flags_and_an_unreachable_cluster_are_bad_input() {
    let port = herdguard_testkit::free_port().expect("a free port");
    let url = format!("redis://127.0.0.1:{port}/");
    for args in [
        vec!["demo", "--redis-cluster", url.as_str()],
        vec!["demo", "--redis-cluster", &url, "--redis", &url],
        vec!["demo", "--redis-cluster", &url, "--fleet"],
        vec!["demo", "--redis-cluster", &url, "--flush"],
        vec![
            "demo",
            "--redis-cluster",
            &url,
            "--scenario",
            "store-outage",
        ],
        vec!["demo", "--redis-cluster", "127.0.0.1:7000"],
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
