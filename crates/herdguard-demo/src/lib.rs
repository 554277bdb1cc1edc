//! The herdguard demo: a cache stampede, shown and stopped, with numbers.
//!
//! A simulated slow origin (a weather API keyed by city) sits behind several
//! caching strategies side by side — no protection, the classic SET NX lock with
//! backoff polling, and herdguard's single flight, X-Fetch, stale-while-revalidate,
//! stale-if-error and circuit breaker — under scenarios that provoke a stampede:
//! a cold start, keys expiring under load, an origin that fails for a while, and
//! (with `--redis`) Redis going away for a while and coming back. Every
//! request is timed from the caller's side; every origin call is counted by the
//! origin itself.
//!
//! The binary (`herdguard demo`, in `herdguard-cli`) is a thin layer over
//! [`DemoArgs`] and [`run`].
//!
//! # Layout
//!
//! - `args`: the flags ([`DemoArgs`]), their validation, the resolved [`Plan`].
//! - `origin`: the simulated slow weather API ([`WeatherOrigin`]) and its call counter.
//! - `strategy`: the strategies ([`Strategy`]) and how each answers a request.
//! - `kv`: the Redis-shaped in-process store under `none` and `classic`.
//! - `relay`: the TCP relay in front of Redis that plays the store-outage
//!   scenario's outage.
//! - `runner`: one scenario, every strategy at once, every request timed.
//! - `patterns`: the write patterns scenario (cache-aside, write-through,
//!   write-behind) against a simulated database, and its crash runs.
//! - `fleet`: `--redis` runs: the reachability check, `--flush`, and `--processes`
//!   (worker copies of this program started together, their counts added up).
//! - `local_redis`: `--fleet`: the private `redis-server` the run starts and stops.
//! - `stats`: outcomes, samples, exact percentiles, verdicts ([`StrategyReport`]).
//! - `report`: tables, timelines (sparklines) and the JSON document ([`DemoReport`]).
//! - `html`: the `--report FILE.html` page (inline SVG charts and the tables).
//! - `tally`: live per-strategy counts of a run in progress.
//! - `web`: `--web`, the demonstrator as a page: runs filling in live, a live
//!   load to break with a stampede or a partition.
//! - `error`: bad input (exit code 2) vs a failed run (exit code 1).

#![warn(missing_docs)]

mod args;
mod error;
mod fleet;
mod html;
mod kv;
mod local_redis;
mod origin;
mod patterns;
mod relay;
mod report;
mod runner;
mod stats;
mod strategy;
mod tally;
mod web;

use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub use args::{DemoArgs, Plan, Scenario, ScenarioPlan};
pub use error::DemoError;
pub use origin::{OriginConfig, OriginError, WeatherOrigin};
pub use patterns::{CrashPlan, CrashRole};
pub use report::{DemoReport, ScenarioReport};
pub use stats::{OriginCall, Outcome, RawRun, Sample, StrategyReport, Timeline, BUCKET_MS};
pub use strategy::Strategy;
pub use tally::{Live, Tally};

/// First part of every Redis key the demo writes (what `--flush` deletes).
pub const KEY_PREFIX: &str = "hgdemo";

/// Runs the demo as `args` say: prints tables (or JSON) to stdout, progress to stderr.
pub fn run(args: DemoArgs) -> Result<(), DemoError> {
    if let Some(json) = &args.worker_plan {
        let worker = fleet::WorkerPlan::decode(json)?;
        return runtime()?.block_on(fleet::run_worker(worker));
    }
    if args.web {
        return run_web(args);
    }
    match args.fleet_args()? {
        None => {
            let plan = args.plan()?;
            let report = open_report(&args)?;
            runtime()?.block_on(interruptible(run_plan(&args, &plan, report)))
        }
        Some(mut args) => {
            let mut plan = args.plan()?;
            let report = open_report(&args)?;
            // Stopped when dropped: at the end, on an error, on Ctrl-C.
            let redis = local_redis::LocalRedis::start()?;
            let url = redis.url();
            args.redis = Some(url.clone());
            for scenario in &mut plan.scenarios {
                scenario.redis = Some(url.clone());
            }
            let result = runtime()?.block_on(interruptible(run_plan(&args, &plan, report)));
            drop(redis);
            result
        }
    }
}

/// `--web`: the demonstrator's server, with the private Redis of `--fleet`
/// when asked (one process: the page's runs share it through the fleet
/// strategy's lease, and the live load's partition cuts it).
fn run_web(mut args: DemoArgs) -> Result<(), DemoError> {
    if args.processes != 1 {
        return Err(error::bad(
            "--web runs in one process: drop --processes (the fleet strategy still uses Redis)",
        ));
    }
    if !args.redis_cluster.is_empty() {
        return Err(error::bad(
            "--web takes --redis URL or --fleet, not --redis-cluster (its partition cuts one server)",
        ));
    }
    let redis = match args.fleet.take() {
        Some(_) if args.redis.is_some() => return Err(error::bad(
            "--fleet starts a private redis-server; --redis URL uses yours: pass one or the other",
        )),
        Some(_) => {
            let redis = local_redis::LocalRedis::start()?;
            args.redis = Some(redis.url());
            Some(redis)
        }
        None => None,
    };
    let result = runtime()?.block_on(web::serve(args));
    drop(redis);
    result
}

/// Runs `run` until it ends or Ctrl-C comes ([`DemoError::Interrupted`]); the
/// run's future is dropped then, and with it the worker processes it started.
async fn interruptible(
    run: impl std::future::Future<Output = Result<(), DemoError>>,
) -> Result<(), DemoError> {
    tokio::select! {
        result = run => result,
        _ = tokio::signal::ctrl_c() => Err(DemoError::Interrupted),
    }
}

/// Creates the `--report` file before the run, so a bad path fails at once.
fn open_report(args: &DemoArgs) -> Result<Option<(std::path::PathBuf, std::fs::File)>, DemoError> {
    let Some(path) = &args.report else {
        return Ok(None);
    };
    let file = std::fs::File::create(path)
        .map_err(|e| error::bad(format!("--report {}: {e}", path.display())))?;
    Ok(Some((path.clone(), file)))
}

fn runtime() -> Result<tokio::runtime::Runtime, DemoError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| error::runtime(format!("cannot start the async runtime: {e}")))
}

async fn run_plan(
    args: &DemoArgs,
    plan: &Plan,
    html_report: Option<(std::path::PathBuf, std::fs::File)>,
) -> Result<(), DemoError> {
    let started = Instant::now();
    if let Some(url) = &args.redis {
        fleet::check_redis(url, args.redis_ca.as_deref(), args.flush).await?;
    }
    if !args.redis_cluster.is_empty() {
        fleet::check_cluster(&args.redis_cluster).await?;
    }
    let show_progress = !args.json && std::io::stderr().is_terminal();
    let mut scenarios = Vec::new();
    let stdout = std::io::stdout();
    for (n, scenario) in plan.scenarios.iter().enumerate() {
        let total = scenario.requests() * scenario.strategies.len() as u64;
        let progress = if show_progress {
            progress_bar(total * u64::from(args.processes), scenario.scenario.name())
        } else {
            ProgressBar::hidden()
        };
        let (report, runs) = if scenario.scenario == Scenario::Patterns {
            (
                patterns::run(scenario, plan.seed, &progress).await?,
                Vec::new(),
            )
        } else {
            let runs = if args.processes > 1 {
                fleet::run_processes(scenario, plan.seed, args.processes, &progress).await?
            } else {
                runner::run_scenario(scenario, plan.seed, &progress).await?
            };
            (report::scenario_report(scenario, &runs), runs)
        };
        progress.finish_and_clear();
        if !args.json {
            let mut out = stdout.lock();
            let _ = write!(
                out,
                "{}",
                report::render(&report, args.wide, report::text_width())
            );
            if args.verbose {
                let _ = write!(out, "{}", per_request_rows(scenario, &runs));
            }
            let _ = out.flush();
            drop(out);
            if args.interactive && n + 1 < plan.scenarios.len() {
                wait_for_enter().await;
            }
        }
        scenarios.push(report);
    }
    let report = DemoReport {
        version: env!("CARGO_PKG_VERSION").to_string(),
        seed: plan.seed,
        store: match (&args.redis, args.redis_cluster.is_empty()) {
            (Some(_), _) => "redis",
            (None, false) => "redis-cluster",
            (None, true) => "embedded",
        }
        .to_string(),
        processes: args.processes,
        wall_ms: started.elapsed().as_secs_f64() * 1000.0,
        scenarios,
    };
    if let Some((path, mut file)) = html_report {
        file.write_all(html::render(&report).as_bytes())
            .and_then(|()| file.flush())
            .map_err(|e| error::runtime(format!("--report {}: {e}", path.display())))?;
        if !args.json {
            let _ = writeln!(stdout.lock(), "\nreport written to {}", path.display());
        }
    }
    let mut out = stdout.lock();
    if args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| error::runtime(format!("cannot encode the report: {e}")))?;
        let _ = writeln!(out, "{text}");
    } else {
        let line = format!(
            "seed {} (--seed {} reproduces the origin's draws); {} process(es), {} store; {:.1} s",
            report.seed,
            report.seed,
            report.processes,
            report.store,
            report.wall_ms / 1000.0
        );
        let _ = write!(
            out,
            "\n{}",
            report::wrap(&line, report::text_width(), "", "")
        );
    }
    Ok(())
}

fn progress_bar(total: u64, name: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:>15} [{bar:40}] {pos}/{len} requests {elapsed}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(name.to_string());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

fn per_request_rows(plan: &ScenarioPlan, runs: &[RawRun]) -> String {
    let mut out = format!(
        "\nper request ({}): strategy key start_ms latency_ms outcome\n",
        plan.scenario.name()
    );
    for run in runs {
        let mut samples = run.samples.clone();
        samples.sort_by_key(|s| s.start_us);
        for s in samples {
            out.push_str(&format!(
                "{} {} {:.1} {:.1} {}\n",
                run.strategy.name(),
                origin::city(s.key),
                s.start_us as f64 / 1000.0,
                s.latency_us as f64 / 1000.0,
                s.outcome.as_str()
            ));
        }
    }
    out
}

/// Waits for Enter when stdin is a terminal; otherwise goes straight on.
async fn wait_for_enter() {
    if !std::io::stdin().is_terminal() {
        return;
    }
    eprint!("press Enter for the next scenario… ");
    let _ = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
    })
    .await;
}
