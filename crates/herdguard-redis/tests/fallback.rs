//! Where Redis refuses client tracking (before Redis 6 there is no RESP3;
//! `CLIENT` may be renamed away or denied by an ACL), the remote falls back to
//! the broadcast feed, says so once in the log, and keeps its promises
//! through it. Its own test binary: it installs the process's log subscriber.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use herdguard::Cache;
use herdguard_redis::{RedisConfig, RedisRemote};
use herdguard_testkit::RedisServer;

/// Everything logged in this process.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || Sink(Arc::clone(&sink)))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        logs
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn refusals() -> usize {
    let logs = logs().lock().unwrap();
    String::from_utf8_lossy(&logs)
        .lines()
        .filter(|l| l.contains("Redis refuses client tracking"))
        .count()
}

async fn node(url: &str) -> Cache<String, String> {
    let remote = RedisRemote::<String, String>::connect(RedisConfig::new(url))
        .await
        .expect("connect");
    assert!(
        !remote.feed_per_key(),
        "the broadcast feed where tracking is refused"
    );
    assert!(remote.feed_live());
    Cache::builder()
        .ttl(Duration::from_secs(60))
        .shared_store(remote)
        .fleet_poll_interval(Duration::from_secs(5))
        .build()
        .expect("build")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_refuses_tracking_gets_the_broadcast_feed_said_once() {
    logs();
    let renamed = RedisServer::start_with(&["--rename-command", "CLIENT", ""]).unwrap();
    // As on a Redis before 6.0: no HELLO, so no RESP3.
    let no_hello = RedisServer::start_with(&["--rename-command", "HELLO", ""]).unwrap();
    let denied = RedisServer::start().unwrap();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("-client|tracking")
        .query(
            &mut redis::Client::open(denied.url())
                .unwrap()
                .get_connection()
                .unwrap(),
        )
        .unwrap();
    for (why, server) in [
        ("CLIENT renamed away", &renamed),
        ("CLIENT TRACKING denied by an ACL", &denied),
        ("no HELLO", &no_hello),
    ] {
        let before = refusals();
        let (a, b) = (node(&server.url()).await, node(&server.url()).await);
        assert_eq!(refusals() - before, 2, "{why}: one line a remote");
        // One origin call for the fleet, the waiters woken by the channel's
        // announcement (the poll is 5 s).
        let calls = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let node = if i % 2 == 0 { a.clone() } else { b.clone() };
                let calls = Arc::clone(&calls);
                tokio::spawn(async move {
                    node.get_or_load("k".to_string(), move || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok::<_, std::io::Error>("v1".to_string())
                    })
                    .await
                    .map(|v| v.to_string())
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), "v1", "{why}");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{why}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{why}: woken late"
        );
        // An invalidation evicts the other process's copy.
        assert!(a.peek(&"k".to_string()).is_some() && b.peek(&"k".to_string()).is_some());
        a.invalidate(&"k".to_string()).await.unwrap();
        let since = Instant::now();
        while b.peek(&"k".to_string()).is_some() {
            assert!(
                since.elapsed() < Duration::from_millis(50),
                "{why}: copy kept"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    // Nothing more said since: once a remote, not once a call.
    let after = refusals();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(refusals(), after);
}
