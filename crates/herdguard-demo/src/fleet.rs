//! `--redis` runs: checking the server, `--flush`, and `--processes`.
//!
//! A fleet run starts P copies of this very program (`std::env::current_exe()`,
//! with the hidden `--worker-plan` flag), hands each the same scenario plan — with
//! one run id in every key name and one wall-clock start time — and adds up what
//! they report: their origins' call counts and every request's sample. Each worker
//! has its own simulated origin, as each server of a fleet calls the real origin
//! itself; the sum is what the origin would have seen.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::args::ScenarioPlan;
use crate::error::{bad, runtime, DemoError};
use crate::runner;
use crate::stats::RawRun;
use crate::strategy::connect;

/// What one worker process runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerPlan {
    /// The scenario, with the run id and start time shared by every worker.
    pub scenario: ScenarioPlan,
    /// The run's seed.
    pub seed: u64,
    /// This worker's number (its draws differ from its peers').
    pub worker: u32,
    /// A crash worker of the patterns scenario instead of a scenario's share.
    #[serde(default)]
    pub crash: Option<crate::patterns::CrashPlan>,
}

impl WorkerPlan {
    /// Reads the plan handed over by the parent process.
    pub fn decode(json: &str) -> Result<WorkerPlan, DemoError> {
        serde_json::from_str(json).map_err(|e| bad(format!("--worker-plan: {e}")))
    }
}

/// Runs a worker's scenario and prints its raw runs as JSON on stdout.
pub async fn run_worker(plan: WorkerPlan) -> Result<(), DemoError> {
    if let Some(orders) = &plan.crash {
        return crate::patterns::crash_worker_main(&plan.scenario, orders).await;
    }
    let seed = plan
        .seed
        .wrapping_add(u64::from(plan.worker).wrapping_mul(0xA076_1D64_78BD_642F));
    // The parent's progress bar moves per request: this worker reports its
    // count on stderr (a line `progress N`) every 100 ms while it runs.
    let progress = ProgressBar::hidden();
    let reporter = tokio::spawn(report_progress(progress.clone()));
    let runs = runner::run_scenario(&plan.scenario, seed, &progress).await;
    reporter.abort();
    let runs = runs?;
    let text = serde_json::to_string(&runs)
        .map_err(|e| runtime(format!("cannot encode the worker's runs: {e}")))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").map_err(|e| runtime(format!("cannot write the worker's runs: {e}")))
}

/// The line prefix of a worker's progress reports on stderr.
const PROGRESS: &str = "progress ";

async fn report_progress(progress: ProgressBar) {
    let mut reported = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = progress.position();
        if now != reported {
            reported = now;
            eprintln!("{PROGRESS}{now}");
        }
    }
}

/// Reads a worker's stderr: progress reports move `progress`; the other lines
/// are kept (the last few) to explain a failure.
async fn follow_stderr(
    stderr: tokio::process::ChildStderr,
    progress: ProgressBar,
) -> (u64, Vec<String>) {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let (mut counted, mut other) = (0u64, Vec::new());
    while let Ok(Some(line)) = lines.next_line().await {
        match line
            .strip_prefix(PROGRESS)
            .and_then(|n| n.parse::<u64>().ok())
        {
            Some(n) if n > counted => {
                progress.inc(n - counted);
                counted = n;
            }
            Some(_) => {}
            None => {
                if other.len() == 20 {
                    other.remove(0);
                }
                other.push(line);
            }
        }
    }
    (counted, other)
}

/// Checks that Redis answers (an unreachable server is bad input) and, with
/// `flush`, deletes the demo's keys.
pub async fn check_redis(
    url: &str,
    ca: Option<&std::path::Path>,
    flush: bool,
) -> Result<(), DemoError> {
    let mut conn = connect(url, ca).await?;
    let _: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map_err(|e| {
            bad(format!(
                "Redis at {} does not answer PING: {e}",
                herdguard_redis::redact_url(url)
            ))
        })?;
    if !flush {
        return Ok(());
    }
    delete_matching(&mut conn, &format!("{}:*", crate::KEY_PREFIX))
        .await
        .map_err(|e| runtime(format!("--flush: {e}")))
}

/// Checks that the Redis Cluster of `seeds` answers (else bad input).
pub async fn check_cluster(seeds: &[String]) -> Result<(), DemoError> {
    let mut conn = crate::strategy::connect_cluster(seeds).await?;
    let _: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map_err(|e| bad(format!("the Redis Cluster does not answer PING: {e}")))?;
    Ok(())
}

/// Deletes every key matching `pattern`.
pub(crate) async fn delete_matching(
    conn: &mut redis::aio::ConnectionManager,
    pattern: &str,
) -> Result<(), redis::RedisError> {
    let mut cursor: u64 = 0;
    // SCAN, not KEYS: the server may be shared, and SCAN never blocks it for long.
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        if !keys.is_empty() {
            let _: i64 = redis::cmd("DEL").arg(&keys).query_async(conn).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// Time the workers get to start and connect before they begin together.
const STARTUP: Duration = Duration::from_millis(1500);

/// Runs `plan` in `processes` worker processes that start together, and adds up
/// their runs strategy by strategy.
pub async fn run_processes(
    plan: &ScenarioPlan,
    seed: u64,
    processes: u32,
    progress: &ProgressBar,
) -> Result<Vec<RawRun>, DemoError> {
    let exe = std::env::current_exe()
        .map_err(|e| runtime(format!("cannot find this program to start workers: {e}")))?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut scenario = plan.clone();
    scenario.start_at_unix_ms = Some(now_ms + STARTUP.as_millis() as u64);
    // Bounded: a worker that hangs is killed (kill_on_drop) and the run fails.
    let limit = STARTUP
        + plan.duration
        + plan.deadline * 2
        + plan.origin.latency * 4
        + Duration::from_secs(30);
    let mut children = Vec::new();
    for worker in 0..processes {
        let json = serde_json::to_string(&WorkerPlan {
            scenario: scenario.clone(),
            seed,
            worker,
            crash: None,
        })
        .map_err(|e| runtime(format!("cannot encode the worker plan: {e}")))?;
        let mut child = tokio::process::Command::new(&exe)
            .args(["demo", "--worker-plan", &json])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| runtime(format!("cannot start worker {worker}: {e}")))?;
        let stderr = child
            .stderr
            .take()
            .map(|stderr| tokio::spawn(follow_stderr(stderr, progress.clone())));
        children.push((child, stderr));
    }
    let mut merged: Vec<RawRun> = Vec::new();
    for (worker, (child, stderr)) in children.into_iter().enumerate() {
        let output = tokio::time::timeout(limit, child.wait_with_output())
            .await
            .map_err(|_| runtime(format!("worker {worker} did not finish within {limit:?}")))?
            .map_err(|e| runtime(format!("worker {worker}: {e}")))?;
        let (counted, lines) = match stderr {
            Some(task) => task.await.unwrap_or_default(),
            None => (0, Vec::new()),
        };
        if !output.status.success() {
            let last = lines.last().map_or("no message", String::as_str);
            return Err(runtime(format!(
                "worker {worker} failed ({}): {last}",
                output.status
            )));
        }
        let runs: Vec<RawRun> = serde_json::from_slice(&output.stdout)
            .map_err(|e| runtime(format!("worker {worker} sent an unreadable report: {e}")))?;
        let samples: u64 = runs.iter().map(|r| r.samples.len() as u64).sum();
        progress.inc(samples.saturating_sub(counted));
        for run in runs {
            match merged.iter_mut().find(|m| m.strategy == run.strategy) {
                Some(m) => m.merge(run),
                None => merged.push(run),
            }
        }
    }
    Ok(merged)
}
