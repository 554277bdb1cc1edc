//! The randomized fault test, in the spirit of Jepsen: four worker processes
//! run random `get_or_load` / `insert` / `invalidate` calls on six keys while a
//! fault driver kills and restarts Redis, freezes it (SIGSTOP), makes it sleep
//! (`DEBUG SLEEP`) and kills the pub/sub connections, at random but seeded.
//! The checker (`common/history.rs`) then reads every process's history.
//!
//! `HERDGUARD_FAULT_SECS` (default 30) sets the length and
//! `HERDGUARD_FAULT_SEED` (default 8) the seed: the same seed injects the same
//! faults at the same times.

#[path = "common/history.rs"]
mod history;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herdguard_testkit::RedisServer;
use history::{check, Bounds, FaultCounts, Record};

const PROCESSES: usize = 4;
const MS: u64 = 1_000_000;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Injects faults until `until`; returns the boundaries (start and end of
/// each) and the counts by kind.
fn drive_faults(redis: &mut RedisServer, seed: u64, until: Instant) -> (Vec<u64>, FaultCounts) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut boundaries = Vec::new();
    let mut counts = FaultCounts::new();
    let url = redis.url();
    loop {
        std::thread::sleep(Duration::from_millis(rng.u64(600..1800)));
        if Instant::now() + Duration::from_millis(1500) > until {
            return (boundaries, counts);
        }
        let down = Duration::from_millis(rng.u64(150..1000));
        boundaries.push(unix_nanos());
        let kind = match rng.u32(..4) {
            0 => {
                redis.kill();
                std::thread::sleep(down);
                redis.restart().expect("restart redis-server");
                "kill and restart"
            }
            1 => {
                redis.pause().expect("SIGSTOP");
                std::thread::sleep(down);
                redis.resume().expect("SIGCONT");
                "freeze (SIGSTOP)"
            }
            2 => {
                let mut conn = redis::Client::open(url.as_str())
                    .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
                    .expect("side connection");
                let _: () = redis::cmd("DEBUG")
                    .arg("SLEEP")
                    .arg(down.as_secs_f64())
                    .query(&mut conn)
                    .expect("DEBUG SLEEP");
                "DEBUG SLEEP"
            }
            _ => {
                let mut conn = redis::Client::open(url.as_str())
                    .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
                    .expect("side connection");
                let _: i64 = redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("TYPE")
                    .arg("pubsub")
                    .query(&mut conn)
                    .expect("CLIENT KILL");
                "CLIENT KILL TYPE pubsub"
            }
        };
        boundaries.push(unix_nanos());
        *counts.entry(kind).or_default() += 1;
    }
}

#[test]
fn random_faults_break_no_promise() {
    let secs = env("HERDGUARD_FAULT_SECS", 30);
    let seed = env("HERDGUARD_FAULT_SEED", 8);
    let mut redis = RedisServer::start().expect("redis-server");
    let url = redis.url();
    let mut workers = Workers(Vec::new());
    let mut readers = Vec::new();
    for index in 0..PROCESSES {
        let mut child = Command::new(env!("CARGO_BIN_EXE_herdguard-redis-chaos"))
            .args(["--url", &url, "--secs", &secs.to_string()])
            .args(["--seed", &seed.to_string(), "--index", &index.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn worker");
        let stdout = child.stdout.take().expect("stdout");
        workers.0.push(child);
        readers.push(std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        }));
    }
    let until = Instant::now() + Duration::from_secs(secs);
    let (fault_times, faults) = drive_faults(&mut redis, seed, until);
    if let Some(path) = std::env::var_os("HERDGUARD_FAULT_HISTORY") {
        let faults: Vec<String> = fault_times
            .iter()
            .map(|t| format!("{{\"kind\":\"fault\",\"at\":{t}}}"))
            .collect();
        std::fs::write(
            format!("{}.faults", path.to_string_lossy()),
            faults.join("\n"),
        )
        .expect("fault file");
    }

    let mut records: Vec<Record> = fault_times
        .into_iter()
        .map(|at| Record::Fault { at })
        .collect();
    let mut done = Vec::new();
    // HERDGUARD_FAULT_HISTORY=FILE keeps the whole history for a closer look.
    let mut keep = std::env::var_os("HERDGUARD_FAULT_HISTORY")
        .map(|path| std::fs::File::create(path).expect("history file"));
    for reader in readers {
        let lines = reader.join().expect("reader");
        if let Some(file) = keep.as_mut() {
            use std::io::Write as _;
            for line in &lines[1..] {
                writeln!(file, "{line}").expect("write history");
            }
        }
        assert_eq!(
            lines.first().map(String::as_str),
            Some("ready"),
            "a worker failed to start"
        );
        for line in &lines[1..] {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}"));
            if v["kind"] == "done" {
                done.push(v.clone());
            }
            records.extend(Record::parse(&v));
        }
    }
    for w in &mut workers.0 {
        let status = w.wait().expect("worker exit");
        assert!(status.success(), "a worker failed: {status}");
    }
    assert_eq!(done.len(), PROCESSES, "every worker finished its run");

    let verdict = check(
        &records,
        Bounds {
            call_bound: 2500 * MS,
            // How long the change feed vouches for a process's copies (its
            // ping interval, 100 ms, plus the workers' operation timeout,
            // 100 ms): past it, a process that has not read a notice checks
            // them first.
            hop: 200 * MS,
            ttl: 1000 * MS,
            processes: PROCESSES,
        },
    );
    let sum = |f: &str| done.iter().map(|d| d[f].as_u64().unwrap_or(0)).sum::<u64>();
    println!(
        "fault history ({secs} s, seed {seed}, {PROCESSES} processes): {} operations \
         ({} gets, {} barriers of which {} failed while Redis was down, {} origin calls, \
         max {} in one fresh period); faults injected: {} {faults:?}; \
         answers marked stale or unconfirmed after a barrier: {}; degradations {}, \
         recoveries {}, feed resyncs {}, evictions by other processes {}, superseded {}; \
         violations: {}",
        verdict.gets + verdict.barriers,
        verdict.gets,
        verdict.barriers,
        verdict.failed_barriers,
        verdict.loads,
        verdict.max_loads_in_a_period,
        faults.values().sum::<usize>(),
        verdict.outdated_allowed,
        sum("degradations"),
        sum("recoveries"),
        sum("resyncs"),
        sum("remote_evictions"),
        sum("superseded"),
        verdict.violations.len(),
    );
    for v in verdict.violations.iter().take(20) {
        println!("violation: {v}");
    }
    assert!(
        faults.values().sum::<usize>() >= secs as usize / 3,
        "faults were injected"
    );
    assert!(verdict.gets > 1000, "the workers made calls");
    assert!(
        verdict.violations.is_empty(),
        "{} violations",
        verdict.violations.len()
    );
}
