//! Durable write-behind against a real redis-server and real processes: a
//! process killed with writes queued loses none of them, a Redis restart loses
//! none, each key's versions reach the system of record in order.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write as _};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herdguard::{Cache, WriteBehind, WriteError};
use herdguard_redis::{QueueConfig, RedisConfig, RedisRemote, RedisSetupError, RedisWriteQueue};
use herdguard_testkit::RedisServer;
use redis::{AsyncCommands as _, Commands};

/// One `herdguard-redis-writer` process.
struct Writer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Writer {
    fn start(url: &str, flags: &[&str]) -> Writer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_herdguard-redis-writer"))
            .args(["--url", url])
            .args(flags)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn writer");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut w = Writer {
            stdin: child.stdin.take(),
            child,
            lines,
        };
        assert_eq!(w.line(), "ready");
        w
    }

    fn line(&mut self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(40))
            .expect("the writer answered in time")
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write");
        stdin.flush().expect("flush");
    }

    /// Writes `n` values over `keys` keys; returns the acknowledged writes in order.
    fn write_many(&mut self, n: usize, keys: usize) -> Vec<(String, String)> {
        let mut acked = Vec::new();
        for i in 0..n {
            self.send(&format!("w k{} v{i}", i % keys));
            let line = self.line();
            let mut parts = line.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("ack"), Some(k), Some(v)) => acked.push((k.to_string(), v.to_string())),
                _ => panic!("write {i} not acknowledged: {line}"),
            }
        }
        acked
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stdin.take();
        self.kill();
    }
}

/// A writer that never finishes: what is queued stays queued.
struct Never;
impl herdguard::Writer<String, String> for Never {
    fn write<'a>(
        &'a self,
        _: &'a [herdguard::Write<String, String>],
    ) -> herdguard::BoxFuture<'a, Result<(), herdguard::BoxError>> {
        Box::pin(std::future::pending())
    }
}

/// Runs `call` while Redis holds writes back (`CLIENT PAUSE pause WRITE`), so
/// it gets no answer; then waits out the pause, writes once more and settles
/// for `settle`: every change sent before has been made by then.
async fn unanswered<T>(
    c: &mut redis::aio::MultiplexedConnection,
    pause: Duration,
    settle: Duration,
    call: impl std::future::Future<Output = T>,
) -> T {
    let paused_at = tokio::time::Instant::now();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(pause.as_millis() as u64)
        .arg("WRITE")
        .query_async(c)
        .await
        .unwrap();
    let out = call.await;
    tokio::time::sleep_until(paused_at + pause).await;
    let _: () = c.set("after-the-pause", 1).await.unwrap();
    tokio::time::sleep(settle).await;
    out
}

/// A write-behind cache on the store at `store` with its queue at `queue`,
/// and a reader on the same store (another process), both with `op_timeout`.
async fn writer_and_reader(
    store: &str,
    queue: &str,
    op_timeout: Duration,
) -> (Cache<String, String>, Cache<String, String>) {
    let queue = RedisWriteQueue::<String, String>::connect(
        RedisConfig::new(queue.to_string()),
        QueueConfig::new(),
    )
    .await
    .unwrap();
    let connect = || {
        RedisRemote::<String, String>::connect(
            RedisConfig::new(store.to_string()).op_timeout(op_timeout),
        )
    };
    let cache = Cache::builder()
        .shared_store(connect().await.unwrap())
        .write_behind(WriteBehind::new(Never).queue(queue))
        .build()
        .unwrap();
    let reader = Cache::builder()
        .shared_store(connect().await.unwrap())
        .build()
        .unwrap();
    (cache, reader)
}

/// An async connection to `url`.
async fn aconn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn conn(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

/// Waits (bounded) until nothing is queued.
fn wait_drained(url: &str, limit: Duration) {
    let mut c = conn(url);
    let started = Instant::now();
    loop {
        let mut queued = 0u64;
        for n in 0..8 {
            queued += c.xlen::<_, u64>(format!("hg:{{wb}}:s{n}")).unwrap_or(0);
        }
        if queued == 0 {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "{queued} writes still queued after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last acknowledged value of each key, against the system of record:
/// returns the keys whose record does not hold it (lost writes).
fn lost(url: &str, acked: &[(String, String)]) -> Vec<String> {
    let mut last: HashMap<&str, &str> = HashMap::new();
    for (k, v) in acked {
        last.insert(k, v);
    }
    let mut c = conn(url);
    let mut lost = Vec::new();
    for (k, v) in last {
        let recorded: Option<String> = c.hget("db:val", k).unwrap();
        if recorded.as_deref() != Some(v) {
            lost.push(format!("{k}: acknowledged {v}, recorded {recorded:?}"));
        }
    }
    lost
}

/// Every key's applied versions, in the order the record applied them.
fn out_of_order(url: &str, keys: usize) -> Vec<String> {
    let mut c = conn(url);
    (0..keys)
        .filter_map(|i| {
            let log: Vec<u64> = c.lrange(format!("db:log:k{i}"), 0, -1).unwrap();
            (!log.windows(2).all(|p| p[0] < p[1])).then(|| format!("k{i}: {log:?}"))
        })
        .collect()
}

#[test]
fn a_process_killed_with_writes_queued_loses_none_another_finishes_them() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    // A slow system of record: the writes pile up in the queue.
    let mut a = Writer::start(&url, &["--writer-delay-ms", "300", "--batch", "10"]);
    let acked = a.write_many(300, 30);
    // Let it write a few batches, and take the next one, then kill it mid-write.
    std::thread::sleep(Duration::from_millis(800));
    let mut c = conn(&url);
    let queued: u64 = (0..8)
        .map(|n| c.xlen::<_, u64>(format!("hg:{{wb}}:s{n}")).unwrap())
        .sum();
    assert!(queued > 0, "writes were still queued when the process died");
    a.kill();
    let written_before: u64 = c.hlen("db:val").unwrap();
    let taken_by_the_dead: u64 = (0..8)
        .map(|n| {
            redis::cmd("XPENDING")
                .arg(format!("hg:{{wb}}:s{n}"))
                .arg("drain")
                .query::<(
                    u64,
                    Option<String>,
                    Option<String>,
                    Option<Vec<(String, String)>>,
                )>(&mut c)
                .map_or(0, |p| p.0)
        })
        .sum();
    assert!(written_before > 0, "it had written some before it died");
    assert!(
        taken_by_the_dead > 0,
        "it died holding taken, unacknowledged writes"
    );
    // Another process (which never writes) finishes what the dead one left.
    let mut b = Writer::start(&url, &["--writer-delay-ms", "1", "--batch", "50"]);
    wait_drained(&url, Duration::from_secs(20));
    b.send("flush");
    assert_eq!(b.line(), "flushed");
    let lost = lost(&url, &acked);
    println!(
        "crash: {} writes acknowledged, {queued} queued when the process was killed \
         ({taken_by_the_dead} taken by it and unacknowledged; {written_before} keys recorded \
         by then); lost_writes: {}",
        acked.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "lost writes: {lost:?}");
    assert!(
        out_of_order(&url, 30).is_empty(),
        "{:?}",
        out_of_order(&url, 30)
    );
}

#[test]
fn a_redis_restart_with_writes_queued_loses_none() {
    let mut redis = RedisServer::start_durable().unwrap();
    let url = redis.url();
    let mut a = Writer::start(&url, &["--writer-delay-ms", "200", "--batch", "10"]);
    let acked = a.write_many(100, 10);
    // Redis crashes with writes queued, and comes back from its append-only file.
    redis.kill();
    std::thread::sleep(Duration::from_millis(300));
    redis.restart().unwrap();
    wait_drained(&url, Duration::from_secs(30));
    a.send("flush");
    assert_eq!(a.line(), "flushed");
    let lost = lost(&url, &acked);
    assert!(lost.is_empty(), "lost writes: {lost:?}");
    assert!(
        out_of_order(&url, 10).is_empty(),
        "{:?}",
        out_of_order(&url, 10)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_durable_queue_refuses_and_shows_nothing() {
    let redis = RedisServer::start().unwrap();
    struct Stuck;
    impl herdguard::Writer<String, String> for Stuck {
        fn write<'a>(
            &'a self,
            _: &'a [herdguard::Write<String, String>],
        ) -> herdguard::BoxFuture<'a, Result<(), herdguard::BoxError>> {
            Box::pin(std::future::pending())
        }
    }
    let config = RedisConfig::new(redis.url());
    let queue = RedisWriteQueue::<String, String>::connect(config.clone(), QueueConfig::new())
        .await
        .unwrap();
    let remote = RedisRemote::<String, String>::connect(config)
        .await
        .unwrap();
    let cache: Cache<String, String> = Cache::builder()
        .shared_store(remote)
        .write_behind(
            WriteBehind::new(Stuck)
                .queue(queue)
                .max_queue(8)
                .max_batch(1),
        )
        .build()
        .unwrap();
    let mut refused = 0;
    for i in 0..40 {
        let key = format!("k{i}");
        match cache.write_behind(key.clone(), "x".to_string()).await {
            Ok(()) => {}
            Err(WriteError::QueueFull) => {
                refused += 1;
                assert!(cache.get(&key).is_none(), "a refused write is not shown");
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused > 0, "the queue never filled");
}

/// A write whose round trip fails after Redis ran it (here: the tracked
/// read-back that follows the write is refused, so the write's reply is an
/// error though the script ran) is not made again on another connection:
/// the write is queued once, never twice, and the key invalidated.
#[tokio::test]
async fn a_write_that_failed_after_it_ran_is_not_queued_twice() {
    let redis = RedisServer::start().unwrap();
    let config = RedisConfig::new(redis.url());
    let queue = RedisWriteQueue::<String, String>::connect(config.clone(), QueueConfig::new())
        .await
        .unwrap();
    let remote = RedisRemote::<String, String>::connect(config)
        .await
        .unwrap();
    let cache: Cache<String, String> = Cache::builder()
        .shared_store(remote)
        .write_behind(WriteBehind::new(Never).queue(queue))
        .build()
        .unwrap();
    cache
        .write_behind("warm".to_string(), "x".to_string())
        .await
        .unwrap();
    let mut c = aconn(&redis.url()).await;
    // The fault: every connection may still write, but not say `CLIENT CACHING`.
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("-client|caching")
        .query_async(&mut c)
        .await
        .unwrap();
    let _ = cache.write_behind("k".to_string(), "v".to_string()).await;
    let mut pushed = 0;
    for n in 0..8 {
        let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(format!("hg:{{wb}}:s{n}"))
            .arg("-")
            .arg("+")
            .query_async(&mut c)
            .await
            .unwrap();
        pushed += entries.iter().filter(|(_, f)| f["k"] == "k").count();
    }
    let shown: Option<Vec<u8>> = c.get("hg:{k}:v").await.unwrap();
    assert_eq!(
        pushed, 1,
        "queued {pushed} times (the fault came after it ran)"
    );
    // In one step it is shown exactly when it is queued.
    assert!(shown.is_some(), "queued but not shown");
}

/// Two processes racing writes of one key: the stream holds that key's
/// writes in version order, so no older write is queued after a newer one
/// (with the write and the push in two steps, one process's push could land
/// after the other's newer write and push).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_queue_a_keys_versions_in_order() {
    const WRITES: usize = 300;
    let redis = RedisServer::start().unwrap();
    let config = RedisConfig::new(redis.url());
    let mut caches = Vec::new();
    for _ in 0..2 {
        let queue = RedisWriteQueue::<String, String>::connect(
            config.clone(),
            QueueConfig::new().partitions(1),
        )
        .await
        .unwrap();
        let remote = RedisRemote::<String, String>::connect(config.clone())
            .await
            .unwrap();
        let cache: Cache<String, String> = Cache::builder()
            .shared_store(remote)
            .write_behind(WriteBehind::new(Never).queue(queue))
            .build()
            .unwrap();
        caches.push(cache);
    }
    let mut tasks = Vec::new();
    for (p, cache) in caches.iter().enumerate() {
        for i in 0..WRITES {
            let cache = cache.clone();
            tasks.push(tokio::spawn(async move {
                cache
                    .write_behind("k".to_string(), format!("p{p}-{i}"))
                    .await
            }));
        }
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let mut c = aconn(&redis.url()).await;
    let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg("hg:{wb}:s0")
        .arg("-")
        .arg("+")
        .query_async(&mut c)
        .await
        .unwrap();
    let versions: Vec<u64> = entries
        .iter()
        .map(|(_, f)| f["v"].parse().unwrap())
        .collect();
    assert_eq!(versions.len(), 2 * WRITES);
    let inversions = versions.windows(2).filter(|w| w[0] >= w[1]).count();
    assert_eq!(
        inversions, 0,
        "{inversions} older writes queued after newer ones"
    );
}

#[tokio::test]
async fn bad_queue_settings_are_typed_errors() {
    let err = RedisWriteQueue::<String, String>::connect(
        RedisConfig::new("redis://127.0.0.1:1/"),
        QueueConfig::new().partitions(0),
    )
    .await
    .err()
    .expect("refused");
    assert!(
        matches!(
            err,
            RedisSetupError::InvalidConfig {
                field: "queue partitions",
                ..
            }
        ),
        "{err}"
    );
}

/// A system of record in memory: every write it was given, in order.
#[derive(Clone, Default)]
struct Recorded(Arc<Mutex<Vec<(String, String)>>>);

impl herdguard::Writer<String, String> for Recorded {
    fn write<'a>(
        &'a self,
        batch: &'a [herdguard::Write<String, String>],
    ) -> herdguard::BoxFuture<'a, Result<(), herdguard::BoxError>> {
        Box::pin(async move {
            let mut log = self.0.lock().unwrap();
            for w in batch {
                log.push((w.key().clone(), w.value().clone()));
            }
            Ok(())
        })
    }
}

/// The adversary writes raw bytes into the queue's stream, ahead of good
/// writes. The entry is moved to the dead-letter stream once (not claimed and
/// logged again at every claim period), logged once, and the good writes
/// behind it are written; the queue then counts as empty.
// One thread: the drainer runs under the test's log recorder.
#[tokio::test]
async fn an_undecodable_queued_entry_goes_to_the_dead_letter_stream_once_and_the_drain_goes_on() {
    let log = herdguard_testkit::LogRecorder::start();
    let redis = RedisServer::start().unwrap();
    let claim = Duration::from_millis(50);
    let queue = RedisWriteQueue::<String, String>::connect(
        RedisConfig::new(redis.url()),
        QueueConfig::new().partitions(1).claim_idle(claim),
    )
    .await
    .unwrap();
    let mut c = aconn(&redis.url()).await;
    let raw: &[u8] = &[0xff, 0xfe, 0x00, 0x80, b'\n'];
    let poison: String = redis::cmd("XADD")
        .arg("hg:{wb}:s0")
        .arg("*")
        .arg("k")
        .arg(raw)
        .arg("d")
        .arg(raw)
        .query_async(&mut c)
        .await
        .unwrap();
    let db = Recorded::default();
    let cache: Cache<String, String> = Cache::builder()
        .write_behind(WriteBehind::new(db.clone()).queue(queue))
        .build()
        .unwrap();
    for i in 0..5 {
        cache
            .write_behind(format!("k{i}"), format!("v{i}"))
            .await
            .unwrap();
    }
    let flushed = cache.flush_writes(Duration::from_secs(10)).await;
    // Ten claim periods more: an entry left pending would be claimed again.
    tokio::time::sleep(claim * 10).await;

    let written = db.0.lock().unwrap().clone();
    let expected: Vec<(String, String)> =
        (0..5).map(|i| (format!("k{i}"), format!("v{i}"))).collect();
    assert_eq!(written, expected, "the good writes behind it were written");
    let dead: Vec<(String, HashMap<String, Vec<u8>>)> = redis::cmd("XRANGE")
        .arg("hg:{wb}:dead")
        .arg("-")
        .arg("+")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(
        dead.len(),
        1,
        "one copy in the dead-letter stream: {dead:?}"
    );
    let fields = &dead[0].1;
    assert_eq!(fields.get("k").map(Vec::as_slice), Some(raw), "{fields:?}");
    assert_eq!(fields.get("d").map(Vec::as_slice), Some(raw), "{fields:?}");
    assert_eq!(
        fields.get("id").map(Vec::as_slice),
        Some(poison.as_bytes()),
        "{fields:?}"
    );
    let logged: Vec<String> = log
        .lines()
        .iter()
        .filter(|l| l.contains("undecodable"))
        .cloned()
        .collect();
    assert_eq!(logged.len(), 1, "logged once: {logged:?}");
    let left: u64 = c.xlen("hg:{wb}:s0").await.unwrap();
    assert_eq!(left, 0, "nothing left in the stream");
    // XPENDING's summary: count, smallest id, largest id, per consumer.
    type Summary = (
        u64,
        Option<String>,
        Option<String>,
        Option<Vec<(String, String)>>,
    );
    let pending: Summary = redis::cmd("XPENDING")
        .arg("hg:{wb}:s0")
        .arg("drain")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(pending.0, 0, "nothing left pending");
    assert!(flushed, "the queue counted as empty");
}

/// The queue's bound is checked by each process against the length it last
/// saw, so two processes pushing in turn into one partition: the one whose
/// knowledge is stale passes the bound once, learns the length from that
/// push's own reply, and is refused after. (A bound counted from this
/// process's own pushes alone would let each process fill it: 20 here.)
#[tokio::test]
async fn the_queue_bound_holds_across_processes_past_it_by_one_stale_push() {
    use herdguard::{QueueError, Write, WriteQueue};
    let redis = RedisServer::start().unwrap();
    let connect = || {
        RedisWriteQueue::<String, String>::connect(
            RedisConfig::new(redis.url()),
            QueueConfig::new().partitions(1),
        )
    };
    let processes = [connect().await.unwrap(), connect().await.unwrap()];
    let max = 10;
    let mut accepted = 0u64;
    for i in 0..60u64 {
        // In turns, then in runs of three, so each sees the other's pushes late.
        let q = &processes[usize::from(i % 2 == 0 || i % 6 < 3)];
        let write = Write::new(format!("k{i}"), "x".to_string(), i + 1);
        match q.push(&write, max).await {
            Ok(()) => accepted += 1,
            Err(QueueError::Full) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let mut c = conn(&redis.url());
    let queued: u64 = c.xlen("hg:{wb}:s0").unwrap();
    assert_eq!(queued, accepted);
    assert!(
        (max..=max + 1).contains(&accepted),
        "{accepted} writes queued under a bound of {max}"
    );
}

/// The durability promise, at its worst moment: the process is SIGKILLed the
/// instant its last acknowledgement is read, with a writer too slow to have
/// written anything. Every acknowledged write is in the queue's streams, with
/// its value.
#[test]
fn every_acknowledged_write_is_in_the_stream_when_the_process_dies_right_after_the_ack() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let mut w = Writer::start(&url, &["--writer-delay-ms", "60000", "--batch", "1"]);
    let acked = w.write_many(40, 40);
    w.kill();
    let mut c = conn(&url);
    let mut queued: HashMap<String, Vec<u8>> = HashMap::new();
    for n in 0..8 {
        let entries: Vec<(String, HashMap<String, Vec<u8>>)> = redis::cmd("XRANGE")
            .arg(format!("hg:{{wb}}:s{n}"))
            .arg("-")
            .arg("+")
            .query(&mut c)
            .unwrap();
        for (_, fields) in entries {
            let key = String::from_utf8(fields["k"].clone()).unwrap();
            queued.insert(key, fields["d"].clone());
        }
    }
    for (k, v) in &acked {
        let payload = queued
            .get(k)
            .unwrap_or_else(|| panic!("acknowledged {k}={v} is not in the stream"));
        // postcard: the length, then the bytes.
        assert!(
            payload.ends_with(v.as_bytes()),
            "{k}: {payload:?} is not {v}"
        );
    }
}

/// The fault at the worst moment for a write and its push: the process is
/// SIGKILLed with hundreds of write-behinds in flight, some written to the
/// shared store and not yet acknowledged. Whatever the shared store shows
/// for a key (its entry's version) is in the queue's stream with that
/// version: the fleet never shows a value the system of record will not get.
#[test]
fn a_process_killed_mid_write_leaves_no_shown_value_unqueued() {
    const WRITES: usize = 400;
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let mut w = Writer::start(&url, &["--writer-delay-ms", "60000", "--batch", "1"]);
    w.send(&format!("burst {WRITES}"));
    // Killed once a few are acknowledged: the rest are somewhere between
    // sent, written and queued.
    for _ in 0..20 {
        let line = w.line();
        assert!(line.starts_with("ack "), "{line}");
    }
    w.kill();
    let mut c = conn(&url);
    let mut queued: HashMap<String, Vec<u64>> = HashMap::new();
    for n in 0..8 {
        let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(format!("hg:{{wb}}:s{n}"))
            .arg("-")
            .arg("+")
            .query(&mut c)
            .unwrap();
        for (_, fields) in entries {
            queued
                .entry(fields["k"].clone())
                .or_default()
                .push(fields["v"].parse().unwrap());
        }
    }
    let mut shown = 0;
    let mut unqueued = Vec::new();
    for i in 0..WRITES {
        let key = format!("b{i}");
        let digits: String = redis::cmd("GETRANGE")
            .arg(format!("hg:{{{key}}}:v"))
            .arg(1)
            .arg(20)
            .query(&mut c)
            .unwrap();
        let Ok(version) = digits.parse::<u64>() else {
            continue;
        };
        shown += 1;
        let versions = queued.get(&key).map(Vec::as_slice).unwrap_or_default();
        if versions != [version] {
            unqueued.push(format!("{key}: shown at {version}, queued {versions:?}"));
        }
    }
    assert!(shown >= 20, "only {shown} values shown");
    assert!(
        unqueued.is_empty(),
        "{} of {shown} shown values not queued once: {unqueued:?}",
        unqueued.len()
    );
}

/// Entries (or fields, or members) the queue keeps in Redis beside its
/// streams and dead letters: what a key space written through it can grow.
async fn queue_records(c: &mut redis::aio::MultiplexedConnection) -> u64 {
    let keys: Vec<String> = c.keys("hg:{wb}:*").await.unwrap();
    let mut records = 0;
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query_async(c).await.unwrap();
        records += match kind.as_str() {
            "hash" => c.hlen::<_, u64>(&key).await.unwrap(),
            "zset" => c.zcard::<_, u64>(&key).await.unwrap(),
            "set" => c.scard::<_, u64>(&key).await.unwrap(),
            _ => 0,
        };
    }
    records
}

/// The adversary of the written-versions record: a million distinct keys
/// written (acknowledged in batches of 10,000, sent in parts past what Lua's `unpack` takes
/// at once). The record stays within its bound; a key still remembered keeps
/// the ordering promise (its older write, pushed late, is skipped); a key
/// forgotten for it (written longest ago) has its older write delivered —
/// what the promise degrades to, documented at `max_written_keys`, for the
/// writer's version check to refuse.
#[tokio::test]
async fn the_written_versions_stay_within_their_bound_after_a_million_keys() {
    use herdguard::{QueueId, Queued, Timestamp, Write, WriteQueue};
    const KEYS: u64 = 1_000_000;
    const BATCH: u64 = 10_000;
    const BOUND: u64 = 1_000;
    let redis = RedisServer::start().unwrap();
    let queue = RedisWriteQueue::<String, String>::connect(
        RedisConfig::new(redis.url()),
        QueueConfig::new().partitions(1).max_written_keys(BOUND),
    )
    .await
    .unwrap();
    let queued = |key: String, version: u64| Queued {
        // No such entry: acknowledging it acknowledges nothing in the stream.
        id: QueueId(format!("hg:{{wb}}:s0 0-{version}")),
        write: Write::new(key, "x".to_string(), version),
        queued_at: Timestamp::EPOCH,
    };
    let mut version = 1_000_000;
    for first in (0..KEYS).step_by(BATCH as usize) {
        let batch: Vec<_> = (first..first + BATCH)
            .map(|i| {
                version += 1;
                queued(format!("k{i}"), version)
            })
            .collect();
        queue.ack(&batch).await.unwrap();
    }
    let mut c = aconn(&redis.url()).await;
    let records = queue_records(&mut c).await;
    assert!(
        records <= BOUND,
        "{records} records kept for {KEYS} keys under a bound of {BOUND}"
    );
    // Older writes of the newest key (remembered) and of the first (forgotten).
    let newest = format!("k{}", KEYS - 1);
    for w in [
        Write::new(newest.clone(), "older".to_string(), version - 1),
        Write::new("k0".to_string(), "older".to_string(), 1),
    ] {
        queue.push(&w, u64::MAX).await.unwrap();
    }
    let taken = queue.take(10, Duration::from_secs(1)).await.unwrap();
    let keys: Vec<&str> = taken.iter().map(|q| q.write.key().as_str()).collect();
    assert_eq!(keys, ["k0"], "the remembered key's older write is skipped");
}

/// A push is one `XADD`: it asks the partition's length only when its view
/// is past half the share or older than 100 ms. 2,000 pushes back to back
/// make a handful of `XLEN` calls, not one each.
#[tokio::test]
async fn a_push_asks_the_length_only_when_its_view_is_old_or_half_full() {
    use herdguard::{Write, WriteQueue};
    let redis = RedisServer::start().unwrap();
    let queue = RedisWriteQueue::<String, String>::connect(
        RedisConfig::new(redis.url()),
        QueueConfig::new().partitions(1),
    )
    .await
    .unwrap();
    let mut c = aconn(&redis.url()).await;
    let xlen_calls = |info: String| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_xlen:calls="))
            .and_then(|rest| rest.split(',').next()?.parse().ok())
            .unwrap_or(0)
    };
    let info = |c: &mut redis::aio::MultiplexedConnection| {
        let mut c = c.clone();
        async move {
            redis::cmd("INFO")
                .arg("commandstats")
                .query_async::<String>(&mut c)
                .await
                .unwrap()
        }
    };
    let before = xlen_calls(info(&mut c).await);
    let started = Instant::now();
    let pushes = 2_000u64;
    for i in 0..pushes {
        let write = Write::new(format!("k{i}"), "x".to_string(), i + 1);
        queue.push(&write, 1_000_000).await.unwrap();
    }
    let asked = xlen_calls(info(&mut c).await) - before;
    // One to start, then one per 100 ms (at most) of pushing.
    let most = 1 + started.elapsed().as_millis() as u64 / 100 + 1;
    assert!(
        asked <= most,
        "{asked} XLEN calls for {pushes} pushes in {:?} (at most {most})",
        started.elapsed()
    );
    let queued: u64 = c.xlen("hg:{wb}:s0").await.unwrap();
    assert_eq!(queued, pushes, "every push is in the stream");
}

/// What the bound without a length per push degrades to, at its worst: a
/// process whose view is fresh (read under 100 ms ago) and under half the
/// share pushes past a bound another process just filled — by at most half
/// the share — and once its view is older than 100 ms it asks, and is
/// refused. Nothing acknowledged is ever dropped: every accepted push is in
/// the stream.
#[tokio::test]
async fn a_fresh_view_passes_the_bound_by_at_most_half_the_share_then_is_refused() {
    use herdguard::{QueueError, Write, WriteQueue};
    let redis = RedisServer::start().unwrap();
    let connect = || {
        RedisWriteQueue::<String, String>::connect(
            RedisConfig::new(redis.url()),
            QueueConfig::new().partitions(1),
        )
    };
    let (late, filler) = (connect().await.unwrap(), connect().await.unwrap());
    let max = 20u64;
    let write = |i: u64| Write::new(format!("k{i}"), "x".to_string(), i + 1);
    // `late` reads the length (empty) with its first push.
    late.push(&write(0), max).await.unwrap();
    let mut accepted = 1;
    let mut i = 1;
    while filler.push(&write(i), max).await.is_ok() {
        accepted += 1;
        i += 1;
    }
    let mut passed = 0;
    loop {
        i += 1;
        match late.push(&write(i), max).await {
            Ok(()) => passed += 1,
            Err(QueueError::Full) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(passed <= max, "never refused");
    }
    assert!(
        passed <= max / 2,
        "{passed} pushes past a full bound of {max} (at most half of it)"
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(matches!(
        late.push(&write(i + 1), max).await,
        Err(QueueError::Full)
    ));
    let mut c = aconn(&redis.url()).await;
    let queued: u64 = c.xlen("hg:{wb}:s0").await.unwrap();
    assert_eq!(queued, accepted + passed);
}

/// A system of record in memory that keeps each write's version too.
#[derive(Clone, Default)]
struct Versioned(Arc<Mutex<Vec<(String, String, u64)>>>);

impl herdguard::Writer<String, String> for Versioned {
    fn write<'a>(
        &'a self,
        batch: &'a [herdguard::Write<String, String>],
    ) -> herdguard::BoxFuture<'a, Result<(), herdguard::BoxError>> {
        Box::pin(async move {
            let mut log = self.0.lock().unwrap();
            for w in batch {
                log.push((w.key().clone(), w.value().clone(), w.version()));
            }
            Ok(())
        })
    }
}

/// Without a shared store, versions are made in process (at or above
/// `LOCAL_VERSIONS`, 2^63), where a double holds only multiples of 2,048. The
/// adversary: a key written at 2^63 + 1,500 (a score of 2^63 + 2,048), then
/// written again at 2^63 + 1,501. The newer write reaches the writer; a
/// skip check on the rounded score would drop it as already written.
#[tokio::test]
async fn a_newer_in_process_version_is_written_even_where_a_double_cannot_tell_it_apart() {
    let redis = RedisServer::start().unwrap();
    let queue = RedisWriteQueue::<String, String>::connect(
        RedisConfig::new(redis.url()),
        QueueConfig::new().partitions(1),
    )
    .await
    .unwrap();
    let db = Versioned::default();
    let cache: Cache<String, String> = Cache::builder()
        .write_behind(WriteBehind::new(db.clone()).queue(queue))
        .build()
        .unwrap();
    // Each insert takes the next in-process version: the write below gets 1,500.
    for _ in 1..1_500 {
        cache
            .insert("other".to_string(), "x".to_string())
            .await
            .unwrap();
    }
    cache
        .write_behind("k".to_string(), "old".to_string())
        .await
        .unwrap();
    assert!(cache.flush_writes(Duration::from_secs(10)).await);
    cache
        .write_behind("k".to_string(), "new".to_string())
        .await
        .unwrap();
    assert!(cache.flush_writes(Duration::from_secs(10)).await);

    let written = db.0.lock().unwrap().clone();
    let first = herdguard::LOCAL_VERSIONS + 1_500;
    assert_eq!(
        written.first(),
        Some(&("k".to_string(), "old".to_string(), first)),
        "the first write at the version whose score rounds up: {written:?}"
    );
    assert_eq!(
        (first as f64) as u64,
        first + 548,
        "its score is past the next version"
    );
    assert_eq!(
        written.last().map(|(k, v, _)| (k.as_str(), v.as_str())),
        Some(("k", "new")),
        "the newer write reached the writer: {written:?}"
    );
}

/// In-process versions are counted by each process from 1: another
/// process's (or this one's before a restart) is no older or newer. A key
/// written by one process at 2^63 + 5,000 and then by another at 2^63 + 3:
/// the second write is delivered, not skipped as older.
#[tokio::test]
async fn an_in_process_version_is_never_compared_with_another_processs() {
    use herdguard::{QueueId, Queued, Timestamp, Write, WriteQueue};
    let redis = RedisServer::start().unwrap();
    let connect = || {
        RedisWriteQueue::<String, String>::connect(
            RedisConfig::new(redis.url()),
            QueueConfig::new().partitions(1),
        )
    };
    let (first, second) = (connect().await.unwrap(), connect().await.unwrap());
    first
        .ack(&[Queued {
            // No such entry: acknowledging it only records the key written.
            id: QueueId("hg:{wb}:s0 0-1".to_string()),
            write: Write::new(
                "k".to_string(),
                "a".to_string(),
                herdguard::LOCAL_VERSIONS + 5_000,
            ),
            queued_at: Timestamp::EPOCH,
        }])
        .await
        .unwrap();
    let later = Write::new(
        "k".to_string(),
        "b".to_string(),
        herdguard::LOCAL_VERSIONS + 3,
    );
    second.push(&later, u64::MAX).await.unwrap();
    let taken = second.take(10, Duration::from_secs(1)).await.unwrap();
    let values: Vec<&str> = taken.iter().map(|q| q.write.value().as_str()).collect();
    assert_eq!(values, ["b"], "the other process's write is delivered");
}

/// The fault at the worst moment for the two-step path (the shared store and
/// the queue on different servers): the shared store's write gets no answer
/// in time (its server paused for writes), so it is not queued, and Redis
/// runs it after all once the pause ends. Whatever the shared store then
/// holds for the key, another process never reads a value the queue does not
/// hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_write_with_no_answer_is_not_shown_unqueued() {
    let (store, queue_server) = (RedisServer::start().unwrap(), RedisServer::start().unwrap());
    let op_timeout = Duration::from_millis(100);
    let (cache, reader) = writer_and_reader(&store.url(), &queue_server.url(), op_timeout).await;
    cache
        .write_behind("warm".to_string(), "x".to_string())
        .await
        .unwrap();
    let mut on_store = aconn(&store.url()).await;
    // Long enough for the write, and a change after it, to go unanswered.
    let written = unanswered(&mut on_store, op_timeout * 10, op_timeout, async {
        cache.write_behind("k".to_string(), "v".to_string()).await
    })
    .await;
    assert!(written.is_err(), "the write was answered: {written:?}");
    let mut on_queue = aconn(&queue_server.url()).await;
    let mut queued = 0;
    for n in 0..8 {
        let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(format!("hg:{{wb}}:s{n}"))
            .arg("-")
            .arg("+")
            .query_async(&mut on_queue)
            .await
            .unwrap();
        queued += entries.iter().filter(|(_, f)| f["k"] == "k").count();
    }
    let shown: Option<Vec<u8>> = on_store.get("hg:{k}:v").await.unwrap();
    let read = reader
        .get_or_load("k".to_string(), || async {
            Ok::<_, std::io::Error>("record".to_string())
        })
        .await
        .unwrap();
    assert!(
        queued == 1 || (shown.is_none() && *read == "record"),
        "queued {queued} times; the shared store holds {:?}, another process reads {read:?}",
        shown.map(|b| String::from_utf8_lossy(&b).into_owned())
    );
}

/// Giving up is retried by the drain when its reply is lost (a timeout after
/// Redis made it): the same batch given up twice — more writes than one
/// script takes — leaves each write in the dead-letter stream once.
#[tokio::test]
async fn a_batch_given_up_twice_leaves_each_dead_letter_once() {
    use herdguard::{Write, WriteQueue};
    const WRITES: usize = 2_500;
    let redis = RedisServer::start().unwrap();
    let queue = RedisWriteQueue::<String, String>::connect(
        RedisConfig::new(redis.url()),
        QueueConfig::new().partitions(1),
    )
    .await
    .unwrap();
    for i in 0..WRITES {
        let w = Write::new(format!("k{i}"), format!("v{i}"), i as u64 + 1);
        queue.push(&w, u64::MAX).await.unwrap();
    }
    let mut taken = Vec::new();
    for _ in 0..WRITES {
        if taken.len() == WRITES {
            break;
        }
        let more = queue.take(WRITES, Duration::from_secs(1)).await.unwrap();
        assert!(!more.is_empty(), "only {} of {WRITES} taken", taken.len());
        taken.extend(more);
    }
    assert_eq!(taken.len(), WRITES);
    queue.give_up(&taken).await.unwrap();
    queue.give_up(&taken).await.unwrap();
    let mut c = aconn(&redis.url()).await;
    let dead: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg("hg:{wb}:dead")
        .arg("-")
        .arg("+")
        .query_async(&mut c)
        .await
        .unwrap();
    let mut copies: HashMap<String, usize> = HashMap::new();
    for (_, fields) in &dead {
        *copies.entry(fields["k"].clone()).or_default() += 1;
    }
    let twice = copies.values().filter(|n| **n > 1).count();
    assert_eq!(twice, 0, "{twice} writes copied more than once");
    assert_eq!(copies.len(), WRITES, "every given-up write is kept");
    let left: u64 = c.xlen("hg:{wb}:s0").await.unwrap();
    assert_eq!(left, 0, "nothing left in the stream");
}

/// The other side of the write with no answer, in one step (store and queue
/// on one server): an acknowledged write `a` not yet in the system of record,
/// then a write `b` that gets no answer. Voiding the key then would hand
/// readers the record's older row for the whole TTL; they must read `a` or `b`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_with_no_answer_never_voids_an_acknowledged_one() {
    let server = RedisServer::start().unwrap();
    let op_timeout = Duration::from_millis(100);
    let (cache, reader) = writer_and_reader(&server.url(), &server.url(), op_timeout).await;
    cache
        .write_behind("k".to_string(), "a".to_string())
        .await
        .unwrap();
    let mut c = aconn(&server.url()).await;
    let written = unanswered(&mut c, op_timeout * 10, op_timeout, async {
        cache.write_behind("k".to_string(), "b".to_string()).await
    })
    .await;
    assert!(written.is_err(), "the write was answered: {written:?}");
    let read = reader
        .get_or_load("k".to_string(), || async {
            Ok::<_, std::io::Error>("record".to_string())
        })
        .await
        .unwrap();
    assert!(
        *read == "a" || *read == "b",
        "a reader got {read:?}: an acknowledged write was voided"
    );
}
