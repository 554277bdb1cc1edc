//! The per-key change feed (Redis's client tracking) against a real
//! redis-server, at the moments it could lose a change: a copy this process
//! wrote itself, a tracking connection killed while another process
//! invalidates, Redis's tracking table overflowing. Each "node" is a `Cache`
//! with its own `RedisRemote`, as in `faults.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use herdguard::Cache;
use herdguard_redis::{RedisConfig, RedisRemote};
use herdguard_testkit::RedisServer;

type Node = Cache<String, String>;

async fn node(url: &str) -> (Node, Arc<RedisRemote<String, String>>) {
    let remote = RedisRemote::<String, String>::connect(RedisConfig::new(url))
        .await
        .expect("connect");
    assert!(remote.feed_per_key(), "Redis 6+ tracks keys");
    let cache = Cache::builder()
        .ttl(Duration::from_secs(60))
        .shared_store(remote.clone())
        .fleet_poll_interval(Duration::from_millis(200))
        .build()
        .expect("build");
    (cache, remote)
}

fn redis(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

async fn load(node: &Node, key: &str, value: &str) -> String {
    let value = value.to_string();
    node.get_or_load(key.to_string(), move || async move {
        Ok::<_, std::io::Error>(value)
    })
    .await
    .expect("get_or_load")
    .to_string()
}

/// Waits (at most 2 s) until `node` holds no copy of `key`; how long it took.
async fn evicted(node: &Node, key: &str) -> Duration {
    let since = Instant::now();
    while node.peek(&key.to_string()).is_some() {
        assert!(
            since.elapsed() < Duration::from_secs(2),
            "{key}: the copy is still held 2 s after the invalidation"
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    since.elapsed()
}

/// Kills every connection with client tracking on (flag `t`); how many.
fn kill_tracking_connections(url: &str) -> usize {
    let mut conn = redis(url);
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut conn).unwrap();
    let mut killed = 0;
    for line in list.lines() {
        let field = |name: &str| {
            line.split(' ')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .unwrap_or("")
                .to_string()
        };
        if field("flags").contains('t') {
            let _: i64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(field("id"))
                .query(&mut conn)
                .unwrap();
            killed += 1;
        }
    }
    killed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_a_process_wrote_itself_is_evicted_when_another_invalidates_it() {
    let server = RedisServer::start().unwrap();
    let ((a, _), (b, _)) = (node(&server.url()).await, node(&server.url()).await);
    for round in 0..20 {
        // Loaded here (the origin called here, the entry written here) ...
        let key = format!("own-load-{round}");
        assert_eq!(load(&a, &key, "v1").await, "v1");
        assert!(a.peek(&key).is_some());
        b.invalidate(&key).await.unwrap();
        evicted(&a, &key).await;
        // ... or inserted here.
        let key = format!("own-insert-{round}");
        a.insert(key.clone(), "i1".to_string()).await.unwrap();
        assert!(a.peek(&key).is_some());
        b.invalidate(&key).await.unwrap();
        evicted(&a, &key).await;
    }
    // Its own writes were kept (Redis tells the writer of them too).
    assert_eq!(a.metrics().superseded, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_held_across_a_killed_tracking_connection_is_not_served_stale() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let ((a, a_remote), (b, _)) = (node(&url).await, node(&url).await);
    for round in 0..10 {
        let key = format!("k{round}");
        assert_eq!(load(&a, &key, "old").await, "old");
        assert!(kill_tracking_connections(&url) >= 2, "both nodes track");
        // Meanwhile: Redis no longer tracks A's read, and tells A nothing.
        b.invalidate(&key).await.unwrap();
        b.insert(key.clone(), "new".to_string()).await.unwrap();
        // A reconnects (the feed down, then up), and must check its copy.
        let since = Instant::now();
        while !a_remote.feed_live() || since.elapsed() < Duration::from_millis(50) {
            assert!(since.elapsed() < Duration::from_secs(2), "no reconnection");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let got = load(&a, &key, "reloaded").await;
        assert_eq!(
            got, "new",
            "round {round}: stale copy served after the reconnect"
        );
        // Tracked again on the new connection: the next change evicts it.
        b.invalidate(&key).await.unwrap();
        let hop = evicted(&a, &key).await;
        assert!(hop < Duration::from_millis(50), "round {round}: {hop:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflowing_tracking_table_loses_no_invalidation() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("tracking-table-max-keys")
        .arg(10)
        .query(&mut redis(&url))
        .unwrap();
    let ((a, _), (b, _)) = (node(&url).await, node(&url).await);
    const KEYS: usize = 100;
    // Redis drops keys from a full table at random, in whichever client's
    // command comes: three rounds, so that A's own commands do it too.
    for round in 0..3 {
        let keys: Vec<String> = (0..KEYS).map(|i| format!("r{round}-k{i}")).collect();
        for key in &keys {
            assert_eq!(load(&b, key, "old").await, "old");
            // A reads B's entry: a copy here, tracked.
            assert_eq!(load(&a, key, "unused").await, "old");
        }
        // Redis made room by telling A that keys changed that did not: those
        // copies went (a spurious eviction costs a read, never a stale answer).
        tokio::time::sleep(Duration::from_millis(50)).await;
        let held = keys.iter().filter(|k| a.peek(k).is_some()).count();
        println!("round {round}: copies left after the table overflowed: {held} of {KEYS}");
        assert!(held < KEYS, "the table overflowed and Redis said so");
        for key in &keys {
            b.insert(key.clone(), "new".to_string()).await.unwrap();
        }
        for key in &keys {
            evicted(&a, key).await;
            assert_eq!(load(&a, key, "reloaded").await, "new", "{key}");
        }
    }
}

/// A listener that holds the last handle on its remote, as a `Cache` does (it
/// owns its remote, which calls it through a weak handle), and stops in
/// `feed_down` until the test has dropped its own handle. Fields drop in
/// order: `gone` tells the test that the remote finished dropping.
struct LastHandle {
    _remote: Arc<RedisRemote<String, String>>,
    down: std::sync::mpsc::Sender<()>,
    proceed: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
    _gone: Gone,
}

struct Gone(std::sync::mpsc::Sender<()>);

impl Drop for Gone {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

impl herdguard::ChangeListener<String> for LastHandle {
    fn changed(&self, _: &String, _: u64) {}
    fn changed_unknown(&self, _: &String) {}
    fn feed_down(&self) {
        let _ = self.down.send(());
        let proceed = self.proceed.lock().unwrap_or_else(|e| e.into_inner());
        let _ = proceed.recv_timeout(Duration::from_secs(5));
    }
    fn feed_up(&self) {}
    fn feed_current(&self, _: Duration) {}
}

#[test]
fn a_remote_whose_last_handle_goes_while_its_feed_reports_a_loss_drops_without_hanging() {
    use herdguard::Remote;
    use std::sync::mpsc;
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (down_tx, down_rx) = mpsc::channel();
    let (proceed_tx, proceed_rx) = mpsc::channel();
    let (gone_tx, gone_rx) = mpsc::channel();
    let listener = rt.block_on(async {
        let remote = RedisRemote::<String, String>::connect(RedisConfig::new(url.as_str()))
            .await
            .expect("connect");
        assert!(remote.feed_per_key(), "Redis 6+ tracks keys");
        let listener = Arc::new(LastHandle {
            _remote: remote.clone(),
            down: down_tx,
            proceed: std::sync::Mutex::new(proceed_rx),
            _gone: Gone(gone_tx),
        });
        let as_listener: Arc<dyn herdguard::ChangeListener<String>> = listener.clone();
        remote.listen(Arc::downgrade(&as_listener));
        listener
    });
    // The feed's session ends: the feed tells its listeners, from its own task.
    assert_eq!(kill_tracking_connections(&url), 1);
    down_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the feed reports its loss");
    // Now the feed's call holds the last handle, and drops it when it returns.
    drop(listener);
    proceed_tx.send(()).unwrap();
    if gone_rx.recv_timeout(Duration::from_secs(5)).is_err() {
        // A runtime thread is stuck: dropping the runtime would wait for it.
        std::mem::forget(rt);
        panic!("the remote dropped from inside its feed's loss report never finished dropping");
    }
}
