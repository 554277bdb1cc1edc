//! Cross-process wake-up: 8 worker processes × 64 callers on one cold key per
//! round, 100 ms loader. For every caller that did not load, the time from the
//! loader's end (it writes `bench:KEY:done <unix nanos>` just before returning,
//! so this is a lower bound of the store) to that caller's return (unix nanos in
//! its process; same machine, same clock). herdguard (pub/sub wake-up) and the
//! classic pattern (SET NX lock, 100 ms → 1 s exponential backoff polling,
//! double check) run round for round, interleaved, so they share the noise.

mod common;
// The worker-process driver of the integration tests, reused as is.
#[path = "../tests/common/mod.rs"]
mod harness;
use harness::Worker;

const PROCESSES: usize = 8;
const CALLERS: &str = "64";
const LOADER_MS: &str = "100";
const ROUNDS: usize = 15;

/// What one mode gathered over its rounds.
#[derive(Default)]
struct Tally {
    wake_us: Vec<u64>,
    /// Each round's own p99, to tell a few noisy rounds from a steady tail.
    round_p99_us: Vec<u64>,
    loads: Vec<i64>,
    errors: u64,
    early: u64,
}

fn round(fleet: &mut [Worker], conn: &mut redis::Connection, key: &str, tally: Option<&mut Tally>) {
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
    tally.round_p99_us.push(common::quantile(&this_round, 0.99));
    tally.wake_us.extend(this_round);
}

fn report(name: &str, tally: &mut Tally) -> (f64, f64) {
    tally.wake_us.sort_unstable();
    let ms = |q| common::quantile(&tally.wake_us, q) as f64 / 1000.0;
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

fn worker_flags(mode: &str) -> [&str; 7] {
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

fn main() {
    let target = common::target();
    let mut conn = redis::Client::open(target.url.as_str())
        .expect("client")
        .get_connection()
        .expect("connection");
    let run = std::process::id();
    let mut herd: Vec<Worker> = (0..PROCESSES)
        .map(|_| Worker::start(&target.url, &worker_flags("herdguard")))
        .collect();
    let mut classic: Vec<Worker> = (0..PROCESSES)
        .map(|_| Worker::start(&target.url, &worker_flags("classic")))
        .collect();
    // Warm-up: connections, scripts loaded, allocators grown.
    round(&mut herd, &mut conn, &format!("warm-h-{run}"), None);
    round(&mut classic, &mut conn, &format!("warm-c-{run}"), None);
    let (mut h, mut c) = (Tally::default(), Tally::default());
    for i in 0..ROUNDS {
        round(
            &mut herd,
            &mut conn,
            &format!("wake-h-{run}-{i}"),
            Some(&mut h),
        );
        round(
            &mut classic,
            &mut conn,
            &format!("wake-c-{run}-{i}"),
            Some(&mut c),
        );
    }
    println!(
        "wake-up: {PROCESSES} processes x {CALLERS} callers, one cold key per round, \
         {LOADER_MS} ms loader; loader end -> waiter return"
    );
    let (h50, h99) = report("herdguard", &mut h);
    let (c50, c99) = report("classic", &mut c);
    println!(
        "wake-up ratio classic/herdguard: p50 {:.1}x  p99 {:.1}x  (goal: herdguard p99 <= 5 ms: {})",
        c50 / h50.max(0.001),
        c99 / h99.max(0.001),
        if h99 <= 5.0 { "met" } else { "NOT met" }
    );
}
