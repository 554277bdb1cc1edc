//! Reading `herdguard demo --json` reports, shared by the integration tests.

#![allow(dead_code)] // each test file uses a different subset

use serde_json::Value;

/// The strategy called `name` in one scenario of a report.
pub fn strategy<'a>(scenario: &'a Value, name: &str) -> &'a Value {
    scenario["strategies"]
        .as_array()
        .expect("strategies")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("strategy {name} in {scenario}"))
}

/// A counter field of a strategy.
pub fn count(strategy: &Value, field: &str) -> u64 {
    strategy[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {strategy}"))
}
