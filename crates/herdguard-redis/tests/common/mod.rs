//! Fleet workers as child processes, driven over stdin, read line by line.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

/// Limit for any single answer of a worker: a hung worker fails the test.
const ANSWER_LIMIT: Duration = Duration::from_secs(40);

pub struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Worker {
    /// Starts one with these flags and waits for its `ready`.
    pub fn start(url: &str, flags: &[&str]) -> Worker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_herdguard-redis-worker"))
            .arg("--url")
            .arg(url)
            .args(flags)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn worker");
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut w = Worker {
            child,
            stdin,
            lines,
        };
        assert_eq!(w.line(), "ready");
        w
    }

    pub fn line(&mut self) -> String {
        self.lines
            .recv_timeout(ANSWER_LIMIT)
            .expect("worker answered in time")
    }

    /// Starts a round on `key` (returns at once).
    pub fn go(&mut self, key: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "go {key}").expect("write to worker");
        stdin.flush().expect("flush");
    }

    /// The result of the round started last.
    pub fn result(&mut self) -> serde_json::Value {
        let line = self.line();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad worker line {line:?}: {e}"))
    }

    /// Whether it uses the shared store now (not degraded).
    pub fn healthy(&mut self) -> bool {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "health").expect("write to worker");
        stdin.flush().expect("flush");
        let line = self.line();
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad worker line {line:?}: {e}"));
        v["healthy"].as_bool().expect("healthy field")
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn redis_conn(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

pub fn count(conn: &mut redis::Connection, key: &str) -> i64 {
    redis::Commands::get::<_, Option<i64>>(conn, format!("count:{key}"))
        .unwrap()
        .unwrap_or(0)
}

/// Waits (bounded) until the loader of `key` has been called `n` times.
pub fn wait_count(conn: &mut redis::Connection, key: &str, n: i64) {
    for _ in 0..2000 {
        if count(conn, key) >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("loader of {key} not called {n} times within 10 s");
}

pub fn u(v: &serde_json::Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("field {field} in {v}"))
}

/// `per_node` concurrent callers of `key` on every node, each load taking
/// 150 ms: returns (origin calls, caller errors).
pub async fn stampede(
    nodes: &[herdguard::Cache<String, String>],
    key: &str,
    per_node: usize,
) -> (usize, usize) {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for n in nodes {
        for _ in 0..per_node {
            let (n, calls, key) = (n.clone(), std::sync::Arc::clone(&calls), key.to_string());
            tasks.push(tokio::spawn(async move {
                n.get_or_load(key, move || async move {
                    calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    Ok::<_, std::io::Error>("v".to_string())
                })
                .await
            }));
        }
    }
    let mut errors = 0;
    for t in tasks {
        if !matches!(t.await, Ok(Ok(_))) {
            errors += 1;
        }
    }
    (calls.load(std::sync::atomic::Ordering::SeqCst), errors)
}

/// For each key: `holder` loads `"old"` into its memory, then `writer`
/// overwrites (even keys) or invalidates (odd keys) it, and `holder` must stop
/// serving `"old"` within 2 s. Returns how long each took.
pub async fn changes_reach(
    writer: &herdguard::Cache<String, String>,
    holder: &herdguard::Cache<String, String>,
    keys: &[String],
) -> Vec<Duration> {
    let mut hops = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let held = holder
            .get_or_load(key.clone(), || async {
                Ok::<_, std::io::Error>("old".to_string())
            })
            .await
            .expect("load");
        assert_eq!(held.as_str(), "old", "{key}");
        assert!(holder.get(key).is_some(), "{key}: held in memory");
        if i % 2 == 0 {
            writer.insert(key.clone(), "new".to_string()).await.unwrap();
        } else {
            writer.invalidate(key).await.unwrap();
        }
        let changed = std::time::Instant::now();
        while holder.get(key).is_some_and(|v| v.as_str() == "old") {
            assert!(
                changed.elapsed() < Duration::from_secs(2),
                "{key}: the old value still served 2 s after the change"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        hops.push(changed.elapsed());
    }
    hops.sort();
    hops
}

/// Waits until Redis no longer has `key` (it expired): bounded, so a mark that
/// never expires fails the test instead of hanging it.
pub fn wait_gone(conn: &mut redis::Connection, key: &str, limit: Duration) {
    let start = std::time::Instant::now();
    while redis::cmd("EXISTS").arg(key).query::<i64>(conn).unwrap() == 1 {
        assert!(start.elapsed() < limit, "{key} still there after {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An entry of `value`, created now, fresh for a minute.
pub fn entry(value: &str) -> herdguard::Entry<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    herdguard::Entry::new(
        value.to_string(),
        herdguard::EntryMeta {
            created: herdguard::Timestamp::from_unix_nanos(now.as_nanos() as u64),
            ttl: Duration::from_secs(60),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            load_duration: Duration::ZERO,
            version: 0,
        },
    )
}
