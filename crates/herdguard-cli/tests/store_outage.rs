//! `herdguard demo --redis … --scenario store-outage` against a real redis-server
//! started by the test: Redis (through the demo's relay) goes away mid-run and
//! comes back. herdguard's fleet tier degrades to in-process single flight — no
//! caller errors, origin calls bounded — while the classic SET NX lock passes
//! Redis errors on to its callers.

use std::process::Command;

use herdguard_testkit::RedisServer;
use serde_json::Value;

mod common;
use common::{count, strategy};

#[test]
fn fleet_rides_out_a_redis_outage_that_classic_passes_on_as_errors() {
    let redis = RedisServer::start().expect("redis-server starts");
    let (keys, duration_ms, ttl_ms) = (3u64, 2000u64, 300u64);
    let out = Command::new(env!("CARGO_BIN_EXE_herdguard"))
        .args(["demo", "--json", "--seed", "5", "--redis", &redis.url()])
        .args(["--scenario", "store-outage", "-k", "3", "--rate", "200"])
        .args([
            "--duration",
            "2s",
            "--ttl",
            "300ms",
            "--origin-latency",
            "30ms",
        ])
        .output()
        .expect("the herdguard binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let scenarios = report["scenarios"].as_array().expect("scenarios");
    assert_eq!(scenarios.len(), 1);
    let outage = &scenarios[0];
    assert_eq!(outage["name"], "store-outage");
    let window = outage["outage_window_ms"]
        .as_array()
        .expect("outage window");
    let (from, until) = (
        window[0].as_f64().expect("from"),
        window[1].as_f64().expect("until"),
    );
    assert!(
        0.0 < from && from < until && until < duration_ms as f64,
        "{window:?}"
    );

    let fleet = strategy(outage, "fleet");
    assert_eq!(count(fleet, "requests"), 400);
    assert_eq!(
        count(fleet, "errors"),
        0,
        "fleet degrades, never fails: {fleet}"
    );
    assert_eq!(count(fleet, "timeouts"), 0, "{fleet}");
    let calls = count(fleet, "origin_calls");
    // Keys expire every TTL, so the origin is called again and again — during
    // the outage by the in-process single flight — but about once per key per
    // TTL, never once per caller.
    let per_key_bound = duration_ms / ttl_ms + 3;
    assert!(
        calls > keys,
        "fleet kept loading through the outage: {calls}"
    );
    assert!(
        calls <= keys * per_key_bound,
        "fleet: {calls} origin calls, bound {}",
        keys * per_key_bound
    );
    assert!(
        calls < count(strategy(outage, "none"), "origin_calls"),
        "fewer calls than no protection"
    );

    // The recommended configuration rides it out the same way.
    let h = strategy(outage, "herdguard");
    assert_eq!(count(h, "errors") + count(h, "timeouts"), 0, "{h}");
    assert!(count(h, "origin_calls") < count(strategy(outage, "none"), "origin_calls"));

    let classic = strategy(outage, "classic");
    assert!(
        count(classic, "errors") > 0,
        "classic passes Redis errors to its callers: {classic}"
    );
    assert!(count(strategy(outage, "none"), "errors") > 0);
}

#[test]
fn store_outage_without_redis_is_bad_input() {
    let out = Command::new(env!("CARGO_BIN_EXE_herdguard"))
        .args(["demo", "--scenario", "store-outage"])
        .output()
        .expect("the herdguard binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains("--redis"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn two_processes_each_ride_out_the_outage_through_their_own_relay() {
    let redis = RedisServer::start().expect("redis-server starts");
    let (keys, processes, duration_ms, ttl_ms) = (2u64, 2u64, 1500u64, 300u64);
    let out = Command::new(env!("CARGO_BIN_EXE_herdguard"))
        .args(["demo", "--json", "--seed", "9", "--redis", &redis.url()])
        .args(["--processes", "2", "--scenario", "store-outage"])
        .args(["--strategy", "classic,fleet", "-k", "2", "--rate", "100"])
        .args([
            "--duration",
            "1500ms",
            "--ttl",
            "300ms",
            "--origin-latency",
            "30ms",
        ])
        .output()
        .expect("the herdguard binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(report["processes"], 2);
    let outage = &report["scenarios"][0];
    let fleet = strategy(outage, "fleet");
    assert_eq!(count(fleet, "requests"), 300, "both processes' requests");
    assert_eq!(count(fleet, "errors"), 0, "{fleet}");
    assert_eq!(count(fleet, "timeouts"), 0, "{fleet}");
    // At worst every process loads every key once per TTL (the in-process single
    // flight of the outage), never once per caller.
    let calls = count(fleet, "origin_calls");
    let bound = keys * processes * (duration_ms / ttl_ms + 3);
    assert!(
        calls > 0 && calls <= bound,
        "fleet: {calls} origin calls, bound {bound}"
    );
    assert!(count(strategy(outage, "classic"), "errors") > 0);
}
