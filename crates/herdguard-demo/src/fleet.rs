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
    let runs = runner::run_scenario(&plan.scenario, seed, &ProgressBar::hidden()).await?;
    let text = serde_json::to_string(&runs)
        .map_err(|e| runtime(format!("cannot encode the worker's runs: {e}")))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").map_err(|e| runtime(format!("cannot write the worker's runs: {e}")))
}

/// Checks that Redis answers (an unreachable server is bad input) and, with
/// `flush`, deletes the demo's keys.
pub async fn check_redis(url: &str, flush: bool) -> Result<(), DemoError> {
    let mut conn = connect(url).await?;
    let _: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map_err(|e| bad(format!("Redis at {url} does not answer PING: {e}")))?;
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
        let child = tokio::process::Command::new(&exe)
            .args(["demo", "--worker-plan", &json])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| runtime(format!("cannot start worker {worker}: {e}")))?;
        children.push(child);
    }
    let mut merged: Vec<RawRun> = Vec::new();
    for (worker, child) in children.into_iter().enumerate() {
        let output = tokio::time::timeout(limit, child.wait_with_output())
            .await
            .map_err(|_| runtime(format!("worker {worker} did not finish within {limit:?}")))?
            .map_err(|e| runtime(format!("worker {worker}: {e}")))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr.lines().last().unwrap_or("no message");
            return Err(runtime(format!(
                "worker {worker} failed ({}): {last}",
                output.status
            )));
        }
        let runs: Vec<RawRun> = serde_json::from_slice(&output.stdout)
            .map_err(|e| runtime(format!("worker {worker} sent an unreadable report: {e}")))?;
        for run in runs {
            progress.inc(run.samples.len() as u64);
            match merged.iter_mut().find(|m| m.strategy == run.strategy) {
                Some(m) => m.merge(run),
                None => merged.push(run),
            }
        }
    }
    Ok(merged)
}
