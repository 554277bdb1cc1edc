//! Reading `herdguard demo --json` reports, shared by the integration tests.

#![allow(dead_code)] // each test file uses a different subset

use std::path::PathBuf;

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

/// Origin calls of strategy `name` in a report's first scenario.
pub fn calls(report: &Value, name: &str) -> u64 {
    count(strategy(&report["scenarios"][0], name), "origin_calls")
}

/// A counter field of a strategy.
pub fn count(strategy: &Value, field: &str) -> u64 {
    strategy[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {strategy}"))
}

/// Debian's `chromium` (the test command installs it when missing and root).
pub fn chromium() -> PathBuf {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| {
            std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("chromium is required for the browser tests: install it (Debian: apt-get install chromium)")
        })
}

/// How many distinct colours a PNG shows, and its size.
pub fn colours(png_path: &std::path::Path) -> (usize, u32, u32) {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png_path).expect("the screenshot exists"),
    ));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("a size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let step = info.color_type.samples();
    let distinct: std::collections::HashSet<&[u8]> =
        buf[..info.buffer_size()].chunks(step).collect();
    (distinct.len(), info.width, info.height)
}
