//! `herdguard demo --web`: the demonstrator as a page.
//!
//! Two things to do on it. **Run** a scenario — the same plan, the same
//! runner and the same report as the command line, so a run with a seed shows
//! the numbers `herdguard demo --json --seed N` prints — and watch each
//! strategy's origin calls, latency percentiles and errors fill in while it
//! runs. Or start a **live load** and break it: "Cache stampede" forgets every
//! key at once and sends a burst of concurrent callers, "Network partition"
//! cuts Redis (or the origin, without Redis) for a few seconds.
//!
//! The page gets a status update every 250 ms over server-sent events
//! (`/api/events`); the final report of a run is at `/api/report`.
//!
//! # Layout
//!
//! - this file: the server, its routes, the run job and the status updates.
//! - `live`: the live load and its two faults.
//! - `page.html`: the page (charts from `herdguard-web`).

mod live;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use indicatif::ProgressBar;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tokio_stream::StreamExt;

use crate::args::{DemoArgs, Scenario};
use crate::error::{runtime, DemoError};
use crate::report::{recommendation, scenario_report, short_verdict, ScenarioReport};
use crate::runner::run_scenario_counted;
use crate::strategy::Strategy;
use crate::tally::Tally;

pub use live::{LiveLoad, LiveSettings};

const PAGE: &str = include_str!("page.html");
/// How often the page gets a status update.
const UPDATE_EVERY: Duration = Duration::from_millis(250);

/// A run the page asked for.
#[derive(Clone, Debug, Deserialize)]
pub struct RunRequest {
    /// The scenario (not `patterns`).
    pub scenario: Scenario,
    /// Strategies side by side (empty: all that apply).
    #[serde(default)]
    pub strategies: Vec<Strategy>,
    /// Keys.
    pub keys: u32,
    /// Concurrent callers per key (cold).
    pub threads: u32,
    /// Origin latency, ms.
    pub origin_latency_ms: u64,
    /// Requests per second (steady scenarios).
    pub rate: u32,
    /// Length of a steady scenario, ms.
    pub duration_ms: u64,
    /// TTL, ms.
    pub ttl_ms: u64,
    /// The seed (none: a random one, reported).
    pub seed: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
struct RunStatus {
    id: u64,
    state: &'static str,
    scenario: String,
    seed: u64,
    elapsed_ms: u64,
    strategies: Vec<crate::tally::Live>,
    error: Option<String>,
}

struct Job {
    status: RunStatus,
    tally: Option<Arc<Tally>>,
    started: Instant,
    report: Option<ScenarioReport>,
}

struct Web {
    base: DemoArgs,
    jobs: Mutex<Job>,
    live: Mutex<Option<Arc<LiveLoad>>>,
    live_runs: Mutex<u64>,
    updates: watch::Sender<String>,
}

type Shared = Arc<Web>;

/// Serves the demonstrator on `args.listen` until Ctrl-C (or SIGTERM).
pub async fn serve(args: DemoArgs) -> Result<(), DemoError> {
    if let Some(url) = &args.redis {
        crate::fleet::check_redis(url, args.redis_ca.as_deref(), args.flush).await?;
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| crate::error::bad(format!("--listen {}: {e}", args.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| runtime(format!("--listen: {e}")))?;
    let (updates, _) = watch::channel(String::new());
    let web = Arc::new(Web {
        base: args,
        jobs: Mutex::new(Job {
            status: RunStatus {
                id: 0,
                state: "idle",
                scenario: String::new(),
                seed: 0,
                elapsed_ms: 0,
                strategies: Vec::new(),
                error: None,
            },
            tally: None,
            started: Instant::now(),
            report: None,
        }),
        live: Mutex::new(None),
        live_runs: Mutex::new(0),
        updates,
    });
    tokio::spawn(publish(Arc::clone(&web)));
    let app = Router::new()
        .route("/", get(|| async { html(PAGE) }))
        .route(
            "/assets/chart.js",
            get(|| async { asset(herdguard_web::CHART_JS, herdguard_web::JS_TYPE) }),
        )
        .route(
            "/assets/style.css",
            get(|| async { asset(herdguard_web::STYLE_CSS, herdguard_web::CSS_TYPE) }),
        )
        .route("/api/options", get(options))
        .route("/api/events", get(events))
        .route("/api/status", get(status))
        .route("/api/run", post(start_run))
        .route("/api/report", get(last_report))
        .route("/api/live/start", post(start_live))
        .route("/api/live/stop", post(stop_live))
        .route("/api/live/stampede", post(stampede))
        .route("/api/live/partition", post(partition))
        .with_state(web);
    eprintln!("herdguard demo: the web demonstrator is at http://{addr}/ (Ctrl-C stops it)");
    axum::serve(listener, app)
        .with_graceful_shutdown(stopped())
        .await
        .map_err(|e| runtime(format!("the web demonstrator stopped: {e}")))
}

/// Ctrl-C or SIGTERM: the normal end of a web session.
async fn stopped() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn html(page: &'static str) -> Response {
    asset(page, herdguard_web::HTML_TYPE)
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn refuse(status: StatusCode, error: impl ToString) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": error.to_string() })),
    )
        .into_response()
}

/// The status update every [`UPDATE_EVERY`], for every open page at once.
async fn publish(web: Shared) {
    let mut tick = tokio::time::interval(UPDATE_EVERY);
    let mut live_every = 0u32;
    let mut last_live = serde_json::Value::Null;
    loop {
        tick.tick().await;
        // The live load is sampled every 4th update (once a second): rates
        // over a second are what a person reads.
        live_every = (live_every + 1) % 4;
        if live_every == 0 {
            let live = web.live.lock().clone();
            last_live = live.map_or(serde_json::Value::Null, |l| l.sample());
        }
        let update = serde_json::json!({
            "run": current(&web),
            "live": last_live,
        });
        let _ = web.updates.send(update.to_string());
    }
}

fn current(web: &Web) -> RunStatus {
    let mut job = web.jobs.lock();
    if job.status.state == "running" {
        job.status.elapsed_ms = job.started.elapsed().as_millis() as u64;
        if let Some(tally) = &job.tally {
            job.status.strategies = tally.live();
        }
    }
    job.status.clone()
}

async fn events(
    State(web): State<Shared>,
) -> Sse<impl tokio_stream::Stream<Item = Result<Event, Infallible>>> {
    let stream = WatchStream::new(web.updates.subscribe())
        .filter(|u| !u.is_empty())
        .map(|u| Ok(Event::default().data(u)));
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn status(State(web): State<Shared>) -> Response {
    Json(current(&web)).into_response()
}

async fn options(State(web): State<Shared>) -> Response {
    let redis = web.base.redis.is_some();
    let scenarios: Vec<_> = [
        Scenario::Cold,
        Scenario::Expiry,
        Scenario::OriginFailure,
        Scenario::StoreOutage,
    ]
    .into_iter()
    .filter(|s| redis || *s != Scenario::StoreOutage)
    .map(|s| {
        serde_json::json!({
            "name": s.name(),
            "strategies": s.strategies(redis).iter().map(|x| x.name()).collect::<Vec<_>>(),
        })
    })
    .collect();
    let b = &web.base;
    Json(serde_json::json!({
        "redis": redis,
        "scenarios": scenarios,
        "live_strategies": [
            "none", "classic", "single-flight", if redis { "fleet" } else { "swr" }, "herdguard"
        ],
        "live_default": ["none", if redis { "fleet" } else { "single-flight" }, "herdguard"],
        "partition": if redis { "Redis" } else { "origin" },
        "defaults": {
            "keys": b.keys, "threads": b.threads,
            "origin_latency_ms": b.origin_latency.as_millis() as u64,
            "rate": b.rate, "duration_ms": b.duration.as_millis() as u64,
            "ttl_ms": b.ttl.as_millis() as u64, "seed": b.seed,
        },
    }))
    .into_response()
}

async fn start_run(State(web): State<Shared>, Json(req): Json<RunRequest>) -> Response {
    if req.scenario == Scenario::Patterns {
        return refuse(
            StatusCode::BAD_REQUEST,
            "the patterns scenario runs on the command line only (demo --scenario patterns)",
        );
    }
    let mut args = web.base.clone();
    args.scenario = vec![req.scenario];
    args.strategy = req.strategies.clone();
    args.keys = req.keys;
    args.threads = req.threads;
    args.origin_latency = Duration::from_millis(req.origin_latency_ms);
    args.origin_jitter = Duration::ZERO;
    args.rate = req.rate;
    args.duration = Duration::from_millis(req.duration_ms);
    args.ttl = Duration::from_millis(req.ttl_ms);
    args.seed = req.seed;
    args.processes = 1;
    let plan = match args.plan() {
        Ok(plan) => plan,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e),
    };
    let Some(scenario) = plan.scenarios.into_iter().next() else {
        return refuse(StatusCode::BAD_REQUEST, "no scenario to run");
    };
    let tally = Arc::new(Tally::new(&scenario.strategies, scenario.requests()));
    let id = {
        let mut job = web.jobs.lock();
        if job.status.state == "running" {
            return refuse(StatusCode::CONFLICT, "a run is in progress");
        }
        let id = job.status.id + 1;
        *job = Job {
            status: RunStatus {
                id,
                state: "running",
                scenario: scenario.scenario.name().to_string(),
                seed: plan.seed,
                elapsed_ms: 0,
                strategies: tally.live(),
                error: None,
            },
            tally: Some(Arc::clone(&tally)),
            started: Instant::now(),
            report: None,
        };
        id
    };
    let seed = plan.seed;
    let web2 = Arc::clone(&web);
    tokio::spawn(async move {
        let result = run_scenario_counted(
            &scenario,
            seed,
            &ProgressBar::hidden(),
            Some(Arc::clone(&tally)),
        )
        .await;
        let mut job = web2.jobs.lock();
        job.status.elapsed_ms = job.started.elapsed().as_millis() as u64;
        job.status.strategies = tally.live();
        match result {
            Ok(runs) => {
                job.status.state = "done";
                job.report = Some(scenario_report(&scenario, &runs));
            }
            Err(e) => {
                job.status.state = "failed";
                job.status.error = Some(e.to_string());
            }
        }
    });
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "id": id, "seed": seed })),
    )
        .into_response()
}

async fn last_report(State(web): State<Shared>) -> Response {
    let job = web.jobs.lock();
    match &job.report {
        Some(report) => Json(serde_json::json!({
            "id": job.status.id,
            "seed": job.status.seed,
            "recommendation": recommendation(report),
            // The command line's compact verdicts, per strategy in table order.
            "verdicts": report.strategies.iter().map(short_verdict).collect::<Vec<_>>(),
            "report": report,
        }))
        .into_response(),
        None => refuse(StatusCode::NOT_FOUND, "no finished run yet"),
    }
}

async fn start_live(State(web): State<Shared>, Json(settings): Json<LiveSettings>) -> Response {
    let run = {
        let mut n = web.live_runs.lock();
        *n += 1;
        format!("web{}-{}", std::process::id(), *n)
    };
    // The one running is stopped first (dropped), so two never compete.
    web.live.lock().take();
    let seed = web.base.seed.unwrap_or_else(|| fastrand::u64(..));
    match LiveLoad::start(settings, web.base.redis.as_deref(), run, seed).await {
        Ok(load) => {
            *web.live.lock() = Some(load);
            Json(serde_json::json!({ "ok": true })).into_response()
        }
        Err(e) => refuse(StatusCode::BAD_REQUEST, e),
    }
}

async fn stop_live(State(web): State<Shared>) -> Response {
    let was = web.live.lock().take().is_some();
    Json(serde_json::json!({ "stopped": was })).into_response()
}

async fn stampede(State(web): State<Shared>) -> Response {
    match web.live.lock().as_ref() {
        Some(load) => {
            load.stampede();
            Json(serde_json::json!({ "ok": true })).into_response()
        }
        None => refuse(StatusCode::CONFLICT, "start the live load first"),
    }
}

async fn partition(State(web): State<Shared>) -> Response {
    match web.live.lock().as_ref() {
        Some(load) => {
            load.partition();
            Json(serde_json::json!({ "ok": true })).into_response()
        }
        None => refuse(StatusCode::CONFLICT, "start the live load first"),
    }
}
