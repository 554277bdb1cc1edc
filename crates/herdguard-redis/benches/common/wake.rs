//! The cross-process wake-up measurement the `wakeup` and `cluster` benchmarks
//! share: a fleet of worker processes runs one round on a cold key; for every
//! caller that did not load, the time from the loader's end (it writes
//! `bench:KEY:done <unix nanos>` just before returning, so this is a lower
//! bound of the store) to that caller's return (unix nanos in its process; same
//! machine, same clock).
//!
//! Included with `#[path]` next to `mod harness` (the tests' worker driver).

use crate::common::quantile;
use crate::harness::Worker;

pub const PROCESSES: usize = 8;
pub const CALLERS: &str = "64";
pub const LOADER_MS: &str = "100";

/// What one fleet gathered over its rounds.
#[derive(Default)]
pub struct Tally {
    pub wake_us: Vec<u64>,
    /// Each round's own p99, to tell a few noisy rounds from a steady tail.
    pub round_p99_us: Vec<u64>,
    pub loads: Vec<i64>,
    pub errors: u64,
    pub early: u64,
}

/// The worker flags of a wake-up fleet in `mode` (`herdguard` or `classic`).
pub fn worker_flags(mode: &str) -> [&str; 7] {
    [
        "--mode",
        mode,
        "--mark-done",
        "--callers",
        CALLERS,
        "--loader-ms",
        LOADER_MS,
    ]
}

/// One round of `fleet` on `key`; its wake-ups go to `tally` (none: warm-up).
/// `conn` reads the loader's marks from the store the fleet uses.
pub fn round(
    fleet: &mut [Worker],
    conn: &mut impl redis::ConnectionLike,
    key: &str,
    tally: Option<&mut Tally>,
) {
    for w in fleet.iter_mut() {
        w.go(key);
    }
    let results: Vec<_> = fleet.iter_mut().map(Worker::result).collect();
    let Some(tally) = tally else { return };
    let done: u64 = redis::Commands::get::<_, Option<u64>>(conn, format!("bench:{key}:done"))
        .expect("GET done")
        .expect("the loader marked its end");
    let loads: Option<i64> = redis::Commands::get(conn, format!("count:{key}")).expect("GET count");
    tally.loads.push(loads.unwrap_or(0));
    let mut this_round = Vec::new();
    for r in &results {
        tally.errors += r["errors"].as_u64().unwrap_or(0);
        for t in r["waiter_returned_unix_ns"].as_array().expect("field") {
            let t = t.as_u64().expect("unix nanos");
            if t < done {
                tally.early += 1;
            }
            this_round.push(t.saturating_sub(done) / 1000);
        }
    }
    this_round.sort_unstable();
    tally.round_p99_us.push(quantile(&this_round, 0.99));
    tally.wake_us.extend(this_round);
}

/// Prints `tally`'s percentiles under `name`; returns (p50, p99) in ms.
pub fn report(name: &str, tally: &mut Tally) -> (f64, f64) {
    tally.wake_us.sort_unstable();
    let ms = |q| quantile(&tally.wake_us, q) as f64 / 1000.0;
    let (p50, p99, max) = (ms(0.5), ms(0.99), ms(1.0));
    tally.round_p99_us.sort_unstable();
    let rounds: Vec<String> = tally
        .round_p99_us
        .iter()
        .map(|us| format!("{:.1}", *us as f64 / 1000.0))
        .collect();
    println!(
        "wake-up {name:<9} p50 {p50:8.2} ms  p99 {p99:8.2} ms  max {max:8.2} ms  \
         ({} waiters over {} rounds; origin calls per round {:?}; errors {}; before the mark {})\n\
         wake-up {name:<9} per-round p99, sorted (ms): {}",
        tally.wake_us.len(),
        tally.loads.len(),
        tally.loads,
        tally.errors,
        tally.early,
        rounds.join(" "),
    );
    (p50, p99)
}
