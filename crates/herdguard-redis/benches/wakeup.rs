//! Cross-process wake-up: 8 worker processes × 64 callers on one cold key per
//! round, 100 ms loader; loader end to each waiter's return (see
//! `common/wake.rs`). herdguard (its default per-key feed: the waiters' tracked
//! re-check, woken by Redis's invalidation push), herdguard on the broadcast
//! feed (`--broadcast-feed`: every change published to every process) and the
//! classic pattern (SET NX lock, 100 ms → 1 s exponential backoff polling,
//! double check) run round for round, interleaved, so they share the noise.

mod common;
// The worker-process driver of the integration tests, reused as is.
#[path = "../tests/common/mod.rs"]
mod harness;
use harness::Worker;

#[path = "common/wake.rs"]
mod wake;
use wake::{report, round, worker_flags, Tally, CALLERS, LOADER_MS, PROCESSES};

const ROUNDS: usize = 15;

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
    let mut broadcast_flags = worker_flags("herdguard").to_vec();
    broadcast_flags.push("--broadcast-feed");
    let mut broadcast: Vec<Worker> = (0..PROCESSES)
        .map(|_| Worker::start(&target.url, &broadcast_flags))
        .collect();
    let mut classic: Vec<Worker> = (0..PROCESSES)
        .map(|_| Worker::start(&target.url, &worker_flags("classic")))
        .collect();
    // Warm-up: connections, scripts loaded, allocators grown.
    round(&mut herd, &mut conn, &format!("warm-h-{run}"), None);
    round(&mut broadcast, &mut conn, &format!("warm-b-{run}"), None);
    round(&mut classic, &mut conn, &format!("warm-c-{run}"), None);
    let (mut h, mut b, mut c) = (Tally::default(), Tally::default(), Tally::default());
    for i in 0..ROUNDS {
        round(
            &mut herd,
            &mut conn,
            &format!("wake-h-{run}-{i}"),
            Some(&mut h),
        );
        round(
            &mut broadcast,
            &mut conn,
            &format!("wake-b-{run}-{i}"),
            Some(&mut b),
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
    let (b50, b99) = report("broadcast", &mut b);
    let (c50, c99) = report("classic", &mut c);
    println!(
        "wake-up ratio per-key/broadcast feed: p50 {:.2}x  p99 {:.2}x",
        h50 / b50.max(0.001),
        h99 / b99.max(0.001)
    );
    println!(
        "wake-up ratio classic/herdguard: p50 {:.1}x  p99 {:.1}x  (goal: herdguard p99 <= 5 ms: {})",
        c50 / h50.max(0.001),
        c99 / h99.max(0.001),
        if h99 <= 5.0 { "met" } else { "NOT met" }
    );
}
