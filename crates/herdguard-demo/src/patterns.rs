//! The `patterns` scenario: reads are only half of a cache. Three ways to
//! write, side by side, against a simulated database (reads and writes take
//! their latency), each under the same mix of reads and writes:
//!
//! - `cache-aside`: write the database, then invalidate the key; reads load
//!   on a miss (herdguard's barrier keeps a read that began before the write
//!   from storing the older value after it);
//! - `write-through`: `Cache::write_through` — the database, then the cache;
//! - `write-behind`: `Cache::write_behind` — the cache now, the database
//!   later (durably through Redis with `--redis`);
//! - `write-behind-naive` (with `--redis`): the hand-written version — an
//!   in-memory channel drained by a task — as the baseline of the crash below.
//!
//! Every read checks read-after-write consistency: a read that returns a value
//! older than the last write of its key acknowledged before the read began is
//! a *stale read*. Values are numbers that grow per key, so "older" is `<`.
//!
//! With `--redis`, the write-behind strategies also run a **crash**: a worker
//! process writes and is killed (SIGKILL) halfway, another process takes over,
//! and every write the killed one acknowledged is looked for in the database
//! (which lives in Redis for this, so it outlives the worker): `lost_writes`
//! counts those that never arrived.

use std::collections::HashMap;
use std::io::Write as _;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herdguard::{BoxError, BoxFuture, Cache, Served, Write, WriteBehind, Writer};
use herdguard_redis::{QueueConfig, RedisRemote, RedisWriteQueue};
use indicatif::ProgressBar;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::args::ScenarioPlan;
use crate::error::{runtime, DemoError};
use crate::report::ScenarioReport;
use crate::stats::{PatternFigures, StrategyReport};
use crate::strategy::{connect, Strategy};

/// Share of the requests that are writes.
const WRITE_SHARE: f64 = 0.2;

/// A database row's cache key, and back.
fn key_name(k: u32) -> String {
    format!("row-{k}")
}

fn key_number(name: &str) -> Option<u32> {
    name.strip_prefix("row-")?.parse().ok()
}

/// Where the simulated database keeps its rows: in this process, or (for the
/// crash runs, so it outlives the worker) in Redis.
enum Rows {
    Memory(Mutex<HashMap<u32, u64>>),
    Redis {
        conn: redis::aio::ConnectionManager,
        hash: String,
        apply: redis::Script,
    },
}

/// Applies a write only if newer than what the row holds. KEYS: hash. ARGV:
/// (row, value) pairs.
const APPLY: &str = r"
for i = 1, #ARGV, 2 do
  local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  if tonumber(ARGV[i + 1]) > cur then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return 1
";

/// The simulated database: reads and writes take their latency; a write
/// applies only if newer than what the row holds (an idempotent writer).
struct Db {
    rows: Rows,
    read: Duration,
    write: Duration,
    reads: AtomicU64,
    /// When each (row, value) was applied: the database's lag behind the cache.
    applied: Mutex<HashMap<(u32, u64), Instant>>,
}

impl Db {
    fn memory(plan: &ScenarioPlan) -> Self {
        Db {
            rows: Rows::Memory(Mutex::default()),
            read: plan.db_read,
            write: plan.db_write,
            reads: AtomicU64::new(0),
            applied: Mutex::default(),
        }
    }

    async fn in_redis(
        plan: &ScenarioPlan,
        strategy: Strategy,
        url: &str,
    ) -> Result<Self, DemoError> {
        Ok(Db {
            rows: Rows::Redis {
                conn: connect(url, plan.redis_ca.as_deref()).await?,
                hash: crash_db(plan, strategy),
                apply: redis::Script::new(APPLY),
            },
            read: plan.db_read,
            write: plan.db_write,
            reads: AtomicU64::new(0),
            applied: Mutex::default(),
        })
    }

    async fn read(&self, row: u32) -> u64 {
        self.reads.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(self.read).await;
        match &self.rows {
            Rows::Memory(rows) => rows.lock().get(&row).copied().unwrap_or(0),
            Rows::Redis { .. } => 0, // the crash runs only write
        }
    }

    async fn write(&self, writes: &[(u32, u64)]) -> Result<(), BoxError> {
        tokio::time::sleep(self.write).await;
        match &self.rows {
            Rows::Memory(rows) => {
                let now = Instant::now();
                let mut rows = rows.lock();
                let mut applied = self.applied.lock();
                for &(row, value) in writes {
                    let current = rows.entry(row).or_insert(0);
                    if value > *current {
                        *current = value;
                        applied.insert((row, value), now);
                    }
                }
            }
            Rows::Redis { conn, hash, apply } => {
                let mut invocation = apply.key(hash);
                for &(row, value) in writes {
                    invocation.arg(row).arg(value);
                }
                let _: i64 = invocation.invoke_async(&mut conn.clone()).await?;
            }
        }
        Ok(())
    }
}

/// The database as write-behind's writer sees it.
struct DbWriter(Arc<Db>);

impl Writer<String, u64> for DbWriter {
    fn write<'a>(&'a self, batch: &'a [Write<String, u64>]) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            let writes: Vec<(u32, u64)> = batch
                .iter()
                .filter_map(|w| Some((key_number(w.key())?, *w.value())))
                .collect();
            self.0.write(&writes).await
        })
    }
}

/// How one strategy writes (reads are the same for all: `get_or_load`).
enum Client {
    CacheAside(Cache<String, u64>),
    WriteThrough(Cache<String, u64>),
    WriteBehind(Cache<String, u64>),
    /// The cache, and a channel into a task that writes the database.
    Naive(
        Cache<String, u64>,
        tokio::sync::mpsc::UnboundedSender<(u32, u64)>,
    ),
}

impl Client {
    /// One strategy's client. With `redis` (a key prefix) and `--redis`, the
    /// cache is shared through Redis and write-behind's queue is a Redis
    /// Stream: the fleet setting, whose figures the table shows.
    async fn new(
        plan: &ScenarioPlan,
        strategy: Strategy,
        db: &Arc<Db>,
        redis: Option<String>,
    ) -> Result<Client, DemoError> {
        let settings = |e: herdguard::ConfigError| runtime(format!("cache settings: {e}"));
        let mut builder = Cache::builder().ttl(plan.ttl);
        let config = match (redis, &plan.redis) {
            (Some(prefix), Some(url)) => {
                Some(crate::strategy::redis_config(url, plan.redis_ca.as_deref()).prefix(prefix))
            }
            _ => None,
        };
        if let Some(config) = &config {
            let remote = RedisRemote::<String, u64>::connect(config.clone())
                .await
                .map_err(|e| runtime(format!("the shared store: {e}")))?;
            builder = builder.shared_store(remote);
        }
        Ok(match strategy {
            Strategy::CacheAside => Client::CacheAside(builder.build().map_err(settings)?),
            Strategy::WriteThrough => Client::WriteThrough(builder.build().map_err(settings)?),
            Strategy::WriteBehind => {
                let mut behind = WriteBehind::new(DbWriter(Arc::clone(db))).max_batch(256);
                if let Some(config) = config {
                    let queue = RedisWriteQueue::<String, u64>::connect(
                        config,
                        QueueConfig::new()
                            .owner_ttl(Duration::from_millis(500))
                            .claim_idle(Duration::from_millis(500)),
                    )
                    .await
                    .map_err(|e| runtime(format!("the write-behind queue: {e}")))?;
                    behind = behind.queue(queue);
                }
                Client::WriteBehind(builder.write_behind(behind).build().map_err(settings)?)
            }
            _ => {
                // The hand-written write-behind.
                let cache = builder.build().map_err(settings)?;
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u32, u64)>();
                let db = Arc::clone(db);
                tokio::spawn(async move {
                    while let Some(write) = rx.recv().await {
                        let _ = db.write(&[write]).await;
                    }
                });
                Client::Naive(cache, tx)
            }
        })
    }

    fn cache(&self) -> &Cache<String, u64> {
        match self {
            Client::CacheAside(c)
            | Client::WriteThrough(c)
            | Client::WriteBehind(c)
            | Client::Naive(c, _) => c,
        }
    }

    /// Writes `value` to `row`; whether it was acknowledged.
    async fn write(&self, db: &Arc<Db>, row: u32, value: u64) -> bool {
        let name = key_name(row);
        match self {
            Client::CacheAside(cache) => {
                db.write(&[(row, value)]).await.is_ok() && cache.invalidate(&name).await.is_ok()
            }
            Client::WriteThrough(cache) => {
                let db = Arc::clone(db);
                cache
                    .write_through(name, value, move |_, v| {
                        let v = *v;
                        Box::pin(async move { db.write(&[(row, v)]).await })
                    })
                    .await
                    .is_ok()
            }
            Client::WriteBehind(cache) => cache.write_behind(name, value).await.is_ok(),
            Client::Naive(cache, tx) => {
                let _ = cache.insert(name, value).await;
                tx.send((row, value)).is_ok()
            }
        }
    }

    /// Reads `row` through the cache: its value, and whether it was a hit.
    async fn read(&self, db: &Arc<Db>, row: u32) -> Option<(u64, bool)> {
        let db = Arc::clone(db);
        let got = self
            .cache()
            .get_or_load(key_name(row), move || async move {
                Ok::<_, std::io::Error>(db.read(row).await)
            })
            .await
            .ok()?;
        Some((*got, got.served() == Served::Hit))
    }
}

/// Runs the scenario: every strategy one after the other (run together they
/// would disturb each other's write latencies), then the crashes.
pub(crate) async fn run(
    plan: &ScenarioPlan,
    seed: u64,
    progress: &ProgressBar,
) -> Result<ScenarioReport, DemoError> {
    let mut reports = Vec::new();
    for &strategy in &plan.strategies {
        let figures = run_strategy(plan, strategy, seed, progress).await?;
        let crash = match (&plan.redis, strategy) {
            (Some(_), Strategy::WriteBehind | Strategy::WriteBehindNaive) => {
                Some(crash(plan, strategy).await?)
            }
            _ => None,
        };
        reports.push(StrategyReport::patterns(strategy, &figures, crash));
    }
    if let Some(url) = &plan.redis {
        // The run's queues, shared entries and crash databases.
        let pattern = format!("{}:{}:patterns:*", crate::KEY_PREFIX, plan.run_id);
        crate::fleet::delete_matching(&mut connect(url, plan.redis_ca.as_deref()).await?, &pattern)
            .await
            .map_err(|e| runtime(format!("cleaning up the run's keys in Redis: {e}")))?;
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(ScenarioReport {
        name: plan.scenario.name().to_string(),
        description: format!(
            "{} requests/s for {:.1} s across {} rows, {:.0}% writes; database reads {:.0} ms, writes {:.0} ms{}",
            plan.rate,
            plan.duration.as_secs_f64(),
            plan.keys,
            WRITE_SHARE * 100.0,
            ms(plan.db_read),
            ms(plan.db_write),
            if plan.redis.is_some() {
                "; then a write-behind process is killed halfway through its writes and another takes over"
            } else {
                ""
            }
        ),
        shared_store: plan.redis.is_some(),
        keys: plan.keys,
        threads: None,
        rate: Some(plan.rate),
        duration_ms: Some(ms(plan.duration)),
        ttl_ms: ms(plan.ttl),
        origin_latency_ms: ms(plan.db_read),
        failure_window_ms: None,
        outage_window_ms: None,
        strategies: reports,
    })
}

enum Op {
    Write {
        took: Duration,
    },
    Read {
        took: Duration,
        hit: bool,
        stale: bool,
    },
    Failed,
}

async fn run_strategy(
    plan: &ScenarioPlan,
    strategy: Strategy,
    seed: u64,
    progress: &ProgressBar,
) -> Result<PatternFigures, DemoError> {
    let db = Arc::new(Db::memory(plan));
    let client =
        Arc::new(Client::new(plan, strategy, &db, Some(run_prefix(plan, strategy))).await?);
    // The last acknowledged value of each row, and when each was acknowledged.
    let acked: Arc<Mutex<HashMap<u32, u64>>> = Arc::default();
    let acked_at: Arc<Mutex<HashMap<(u32, u64), Instant>>> = Arc::default();
    let next_value = Arc::new(AtomicU64::new(1));
    let mut rng = fastrand::Rng::with_seed(seed);
    let every = Duration::from_secs_f64(1.0 / f64::from(plan.rate));
    let start = Instant::now() + Duration::from_millis(30);
    let requests = crate::args::steady_requests(plan.rate, plan.duration);
    let mut tasks = Vec::new();
    for i in 0..requests {
        let row = rng.u32(..plan.keys);
        let is_write = rng.f64() < WRITE_SHARE;
        let at = start + every.mul_f64(i as f64);
        let (client, db, acked, acked_at, next_value, progress) = (
            Arc::clone(&client),
            Arc::clone(&db),
            Arc::clone(&acked),
            Arc::clone(&acked_at),
            Arc::clone(&next_value),
            progress.clone(),
        );
        let deadline = plan.deadline;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let began = Instant::now();
            let op = if is_write {
                let value = next_value.fetch_add(1, Ordering::Relaxed);
                let done = tokio::time::timeout(deadline, client.write(&db, row, value)).await;
                if matches!(done, Ok(true)) {
                    let now = Instant::now();
                    let mut acked = acked.lock();
                    let last = acked.entry(row).or_insert(0);
                    *last = (*last).max(value);
                    acked_at.lock().insert((row, value), now);
                    Op::Write {
                        took: began.elapsed(),
                    }
                } else {
                    Op::Failed
                }
            } else {
                let before = acked.lock().get(&row).copied().unwrap_or(0);
                match tokio::time::timeout(deadline, client.read(&db, row)).await {
                    Ok(Some((value, hit))) => Op::Read {
                        took: began.elapsed(),
                        hit,
                        stale: value < before,
                    },
                    _ => Op::Failed,
                }
            };
            progress.inc(1);
            op
        }));
    }
    let mut f = PatternFigures::default();
    for task in tasks {
        match task
            .await
            .map_err(|e| runtime(format!("a request task failed: {e}")))?
        {
            Op::Write { took } => {
                f.acknowledged += 1;
                f.writes_us.push(micros(took));
            }
            Op::Read { took, hit, stale } => {
                f.reads_us.push(micros(took));
                f.hits += u64::from(hit);
                f.stale_reads += u64::from(stale);
            }
            Op::Failed => f.errors += 1,
        }
    }
    // The database catches up (write-behind); its lag is from a write's
    // acknowledgement to its application.
    let _ = client.cache().flush_writes(Duration::from_secs(30)).await;
    if matches!(strategy, Strategy::WriteBehind | Strategy::WriteBehindNaive) {
        // The naive drainer has no flush: give it time to finish.
        let give_up = Instant::now() + Duration::from_secs(30);
        while db.applied.lock().len() < acked.lock().len() && Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let applied = db.applied.lock();
        for ((row, value), at) in acked_at.lock().iter() {
            if let Some(done) = applied.get(&(*row, *value)) {
                f.db_lag_us
                    .push(micros(done.saturating_duration_since(*at)));
            }
        }
    }
    f.db_reads = db.reads.load(Ordering::Relaxed);
    Ok(f)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The Redis prefix of one run's crash (its queue, shared store, database).
fn crash_prefix(plan: &ScenarioPlan, strategy: Strategy) -> String {
    format!("{}:crash", run_prefix(plan, strategy))
}

fn crash_db(plan: &ScenarioPlan, strategy: Strategy) -> String {
    format!("{}:db", crash_prefix(plan, strategy))
}

/// The Redis prefix of one strategy's keys in one run.
fn run_prefix(plan: &ScenarioPlan, strategy: Strategy) -> String {
    format!(
        "{}:{}:patterns:{}",
        crate::KEY_PREFIX,
        plan.run_id,
        strategy.name()
    )
}

/// What a crash worker process does.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CrashRole {
    /// Writes until killed, printing `ack ROW VALUE` per acknowledged write.
    Write,
    /// Takes over the queue a killed one left, drains it, prints `drained`.
    Drain,
}

/// One crash worker's orders.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CrashPlan {
    /// What it does.
    pub role: CrashRole,
    /// Which write-behind.
    pub strategy: Strategy,
}

/// What a crash run found: writes acknowledged by the killed process, and
/// those of them the database never got.
pub(crate) struct Crash {
    pub(crate) acknowledged: u64,
    pub(crate) lost: u64,
}

/// Kills a writing worker halfway and counts the acknowledged writes lost.
async fn crash(plan: &ScenarioPlan, strategy: Strategy) -> Result<Crash, DemoError> {
    let mut writer = crash_worker(plan, CrashRole::Write, strategy)?;
    let stdout = writer
        .stdout
        .take()
        .ok_or_else(|| runtime("the crash worker has no stdout"))?;
    let acks: Arc<Mutex<Vec<(u32, u64)>>> = Arc::default();
    let reading = {
        let acks = Arc::clone(&acks);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut parts = line.split(' ');
                if let (Some("ack"), Some(row), Some(value)) =
                    (parts.next(), parts.next(), parts.next())
                {
                    if let (Ok(row), Ok(value)) = (row.parse(), value.parse()) {
                        acks.lock().push((row, value));
                    }
                }
            }
        })
    };
    // Halfway through its writes (after its start-up), the process dies.
    tokio::time::sleep(Duration::from_millis(500) + plan.duration / 2).await;
    writer
        .kill()
        .await
        .map_err(|e| runtime(format!("cannot kill the crash worker: {e}")))?;
    let _ = reading.await;
    if strategy == Strategy::WriteBehind {
        // Another process takes over what the killed one queued.
        let drainer = crash_worker(plan, CrashRole::Drain, strategy)?;
        let limit = Duration::from_secs(60);
        let output = tokio::time::timeout(limit, drainer.wait_with_output())
            .await
            .map_err(|_| {
                runtime(format!(
                    "the draining worker did not finish within {limit:?}"
                ))
            })?
            .map_err(|e| runtime(format!("the draining worker: {e}")))?;
        if !String::from_utf8_lossy(&output.stdout).contains("drained") {
            return Err(runtime("the draining worker did not drain the queue"));
        }
    } else {
        // Nothing can take over an in-memory queue: wait as long as a drain would.
        tokio::time::sleep(plan.db_write * 4).await;
    }
    let url = plan.redis.as_deref().unwrap_or_default();
    let mut conn = connect(url, plan.redis_ca.as_deref()).await?;
    let rows: HashMap<u32, u64> = redis::cmd("HGETALL")
        .arg(crash_db(plan, strategy))
        .query_async(&mut conn)
        .await
        .map_err(|e| runtime(format!("reading the crash database: {e}")))?;
    let acks = acks.lock();
    let lost = acks
        .iter()
        .filter(|(row, value)| rows.get(row).is_none_or(|have| have < value))
        .count() as u64;
    Ok(Crash {
        acknowledged: acks.len() as u64,
        lost,
    })
}

fn crash_worker(
    plan: &ScenarioPlan,
    role: CrashRole,
    strategy: Strategy,
) -> Result<tokio::process::Child, DemoError> {
    let exe = std::env::current_exe()
        .map_err(|e| runtime(format!("cannot find this program to start a worker: {e}")))?;
    let json = serde_json::to_string(&crate::fleet::WorkerPlan {
        scenario: plan.clone(),
        seed: 0,
        worker: 0,
        crash: Some(CrashPlan { role, strategy }),
    })
    .map_err(|e| runtime(format!("cannot encode the worker plan: {e}")))?;
    tokio::process::Command::new(exe)
        .args(["demo", "--worker-plan", &json])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| runtime(format!("cannot start a crash worker: {e}")))
}

/// A crash worker: writes (printing acknowledgements) until killed, or drains.
pub(crate) async fn crash_worker_main(
    plan: &ScenarioPlan,
    orders: &CrashPlan,
) -> Result<(), DemoError> {
    let url = plan
        .redis
        .clone()
        .ok_or_else(|| runtime("a crash worker needs --redis"))?;
    let db = Arc::new(Db::in_redis(plan, orders.strategy, &url).await?);
    let client = Client::new(
        plan,
        orders.strategy,
        &db,
        Some(crash_prefix(plan, orders.strategy)),
    )
    .await?;
    match orders.role {
        CrashRole::Write => {
            let every = Duration::from_secs_f64(1.0 / f64::from(plan.rate));
            let mut value = 0u64;
            loop {
                value += 1;
                let row = (value % u64::from(plan.keys)) as u32;
                if client.write(&db, row, value).await {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "ack {row} {value}");
                    let _ = out.flush();
                }
                tokio::time::sleep(every).await;
            }
        }
        CrashRole::Drain => {
            let drained = client.cache().flush_writes(Duration::from_secs(50)).await;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", if drained { "drained" } else { "not drained" });
            Ok(())
        }
    }
}
