//! Durable write-behind against a real redis-server and real processes: a
//! process killed with writes queued loses none of them, a Redis restart loses
//! none, each key's versions reach the system of record in order.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write as _};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use herdguard::{Cache, WriteBehind, WriteError};
use herdguard_redis::{QueueConfig, RedisConfig, RedisRemote, RedisSetupError, RedisWriteQueue};
use herdguard_testkit::RedisServer;
use redis::Commands;

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
