//! The loader's lease grant against a real redis-server: what a cold miss
//! costs in round trips before its origin call, and the moments around the
//! grant when another process changes the key — between this process's
//! read and its grant, or right after the grant. Another process is another
//! `RedisRemote` (its own connections and change feed); the moment is hit by
//! a `Remote` that hands each call to the real one and lets the other process
//! act around the grant.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use herdguard::{
    BoxFuture, Cache, ChangeListener, Entry, Lease, Marker, Notified, PutOutcome, Remote,
    RemoteError, Shared,
};
use herdguard_redis::{RedisConfig, RedisRemote};
use herdguard_testkit::RedisServer;

type Node = Cache<String, String>;
type Real = RedisRemote<String, String>;

/// What the other process does around this process's next grant.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Act {
    /// Writes the key (as `Cache::insert`) before the grant.
    WriteBefore,
    /// Invalidates the key before the grant.
    InvalidateBefore,
    /// Writes the key right after the grant, before the loader goes on.
    WriteAfter,
}

/// This process's shared store: the real one, with the other process's act
/// once around the next grant.
struct AroundGrant {
    real: Arc<Real>,
    other: Node,
    act: Mutex<Option<(Act, String)>>,
}

impl AroundGrant {
    fn arm(&self, act: Act, value: &str) {
        *self.act.lock().unwrap() = Some((act, value.to_string()));
    }

    fn take(&self, when: &[Act]) -> Option<(Act, String)> {
        let mut act = self.act.lock().unwrap();
        act.take_if(|(a, _)| when.contains(a))
    }

    async fn apply(&self, key: &str, act: Option<(Act, String)>) {
        match act {
            Some((Act::InvalidateBefore, _)) => {
                self.other.invalidate(&key.to_string()).await.unwrap();
            }
            Some((_, value)) => self.other.insert(key.to_string(), value).await.unwrap(),
            None => {}
        }
    }
}

impl Remote<String, String> for AroundGrant {
    fn get<'a>(&'a self, key: &'a String) -> BoxFuture<'a, Result<Shared<String>, RemoteError>> {
        self.real.get(key)
    }

    fn try_lease<'a>(
        &'a self,
        key: &'a String,
    ) -> BoxFuture<'a, Result<Option<Lease>, RemoteError>> {
        Box::pin(async move {
            let before = self.take(&[Act::WriteBefore, Act::InvalidateBefore]);
            self.apply(key, before).await;
            let lease = self.real.try_lease(key).await;
            let after = self.take(&[Act::WriteAfter]);
            self.apply(key, after).await;
            lease
        })
    }

    fn renew<'a>(
        &'a self,
        key: &'a String,
        lease: &'a Lease,
    ) -> BoxFuture<'a, Result<bool, RemoteError>> {
        self.real.renew(key, lease)
    }

    fn release<'a>(
        &'a self,
        key: &'a String,
        lease: &'a Lease,
        marker: Option<(&'a Marker, Duration)>,
    ) -> BoxFuture<'a, Result<(), RemoteError>> {
        self.real.release(key, lease, marker)
    }

    fn watch(&self, key: &String) -> Notified {
        self.real.watch(key)
    }

    fn put<'a>(
        &'a self,
        key: &'a String,
        lease: Option<&'a Lease>,
        entry: &'a Entry<String>,
        retain: Duration,
    ) -> BoxFuture<'a, Result<PutOutcome, RemoteError>> {
        self.real.put(key, lease, entry, retain)
    }

    fn invalidate<'a>(&'a self, key: &'a String) -> BoxFuture<'a, Result<u64, RemoteError>> {
        self.real.invalidate(key)
    }

    fn lease_ttl(&self) -> Duration {
        self.real.lease_ttl()
    }

    fn renews(&self) -> bool {
        self.real.renews()
    }

    fn feed_bound(&self) -> Option<Duration> {
        self.real.feed_bound()
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), RemoteError>> {
        self.real.ping()
    }

    fn listen(&self, listener: Weak<dyn ChangeListener<String>>) {
        self.real.listen(listener)
    }
}

async fn remote(url: &str, config: impl FnOnce(RedisConfig) -> RedisConfig) -> Arc<Real> {
    let remote = Real::connect(config(RedisConfig::new(url)))
        .await
        .expect("connect");
    assert!(remote.feed_per_key(), "Redis 6+ tracks keys");
    remote
}

fn cache(store: Arc<dyn Remote<String, String>>) -> Node {
    Cache::builder()
        .ttl(Duration::from_secs(60))
        .shared_store(store)
        .fleet_poll_interval(Duration::from_millis(200))
        .build()
        .expect("build")
}

/// A process whose shared store lets another process act around its grant
/// (armed with `act`), that store, and another process.
async fn pair(
    url: &str,
    act: Act,
    value: &str,
    config: impl FnOnce(RedisConfig) -> RedisConfig,
) -> (Node, Arc<AroundGrant>, Node) {
    let around = Arc::new(AroundGrant {
        real: remote(url, config).await,
        other: cache(remote(url, |c| c).await),
        act: Mutex::new(None),
    });
    around.arm(act, value);
    let other = cache(remote(url, |c| c).await);
    (cache(around.clone()), around, other)
}

/// Loads `key` on `node` with an origin that answers `value` and counts its calls.
async fn load(node: &Node, key: &str, value: &str, calls: &Arc<AtomicUsize>) -> String {
    let (value, calls) = (value.to_string(), calls.clone());
    node.get_or_load(key.to_string(), move || async move {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok::<_, std::io::Error>(value)
    })
    .await
    .expect("get_or_load")
    .to_string()
}

fn redis(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

/// The figure after `prefix` in `INFO <section>` (0 when absent).
fn info(conn: &mut redis::Connection, section: &str, prefix: &str) -> u64 {
    let text: String = redis::cmd("INFO").arg(section).query(conn).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map(|rest| rest.split(',').next().unwrap_or(rest))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Requests Redis has read from its clients (a round trip is one, a
/// pipeline included), less this reading's own `INFO` calls; the `PING`s
/// among them; the scripts run (`EVALSHA`).
fn requests(conn: &mut redis::Connection) -> (i64, u64, u64) {
    let reads = info(conn, "stats", "total_reads_processed:");
    let stats = [
        "cmdstat_info:calls=",
        "cmdstat_ping:calls=",
        "cmdstat_evalsha:calls=",
    ];
    let [infos, pings, scripts] = stats.map(|s| info(conn, "commandstats", s));
    (reads as i64 - infos as i64, pings, scripts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_miss_makes_three_round_trips_the_read_the_grant_and_the_write() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let node = cache(remote(&url, |c| c).await);
    let mut conn = redis(&url);
    let calls = Arc::new(AtomicUsize::new(0));
    let mut per_miss = Vec::new();
    // The change feed pings every 100 ms, alone or beside a call on its
    // connection (one request or two): a miss it fell in says nothing. And
    // Redis may read one request in two parts on a busy machine, never two
    // in one: each miss reads at least as many times as it makes round
    // trips, and its round trips are the same every time — so the fewest
    // reads of ten misses are its round trips.
    for round in 0..200 {
        if per_miss.len() == 10 {
            break;
        }
        let (reads, pings, scripts) = requests(&mut conn);
        load(&node, &format!("cold{round}"), "v", &calls).await;
        let (reads_after, pings_after, scripts_after) = requests(&mut conn);
        if pings_after == pings {
            per_miss.push((reads_after - reads, scripts_after - scripts));
        }
    }
    assert_eq!(per_miss.len(), 10, "ten misses without a ping");
    let fewest = per_miss.iter().map(|(reads, _)| *reads).min();
    assert_eq!(
        fewest,
        Some(3),
        "round trips of a cold miss: the read, the grant and the write — no re-read between \
         the grant and the origin call ({per_miss:?}: requests read, scripts run)"
    );
    assert!(
        per_miss.iter().all(|(_, scripts)| *scripts == 2),
        "two scripts each, the grant and the write: {per_miss:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_written_between_the_read_and_the_grant_is_served_without_an_origin_call() {
    let server = RedisServer::start().unwrap();
    let (node, _, _) = pair(&server.url(), Act::WriteBefore, "theirs", |c| c).await;
    let calls = Arc::new(AtomicUsize::new(0));
    assert_eq!(load(&node, "k", "mine", &calls).await, "theirs");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no second origin call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_right_after_the_grant_is_neither_lost_nor_shadowed() {
    let server = RedisServer::start().unwrap();
    let (node, _, other) = pair(&server.url(), Act::WriteAfter, "theirs", |c| c).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let first = load(&node, "k", "mine", &calls).await;
    // Whichever this caller got, the fleet keeps the other's write: the
    // load's fenced write does not replace it, and no copy shadows it.
    let never = Arc::new(AtomicUsize::new(0));
    let third = cache(remote(&server.url(), |c| c).await);
    assert_eq!(load(&third, "k", "none", &never).await, "theirs");
    assert_eq!(load(&other, "k", "none", &never).await, "theirs");
    let since = Instant::now();
    while node
        .peek(&"k".to_string())
        .is_some_and(|e| e.value() != "theirs")
    {
        assert!(
            since.elapsed() < Duration::from_secs(2),
            "the loader still holds {first:?} over the other's write"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(load(&node, "k", "none", &never).await, "theirs");
    assert_eq!(never.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_kept_after_an_invalidation_before_the_grant_still_hears_the_next_change() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    // Too large to share: the loader keeps its copy in process (unfenced),
    // and only the change feed can tell it of a later change.
    let (node, around, other) =
        pair(&url, Act::InvalidateBefore, "", |c| c.max_value_bytes(64)).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let big = "x".repeat(1000);
    for round in 0..5 {
        let key = format!("big{round}");
        around.arm(Act::InvalidateBefore, "");
        assert_eq!(load(&node, &key, &big, &calls).await, big);
        assert!(
            node.peek(&key).is_some(),
            "round {round}: nothing changed the key while it loaded: the copy is kept"
        );
        other.invalidate(&key).await.unwrap();
        let since = Instant::now();
        while node.peek(&key).is_some() {
            assert!(
                since.elapsed() < Duration::from_secs(2),
                "round {round}: the copy is still held 2 s after another process's invalidation"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// A process refused the lease of a key that has an entry (another process
/// refreshes it) pays for the script and the version's twenty digits, not
/// for the entry: the grant's tracked read-back carries no value. (With the
/// read-back an `MGET`, each refused attempt carried the whole entry.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_grant_on_a_key_with_an_entry_does_not_carry_the_entry() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let writer = cache(remote(&url, |c| c).await);
    let big = "x".repeat(200_000);
    writer.insert("k".to_string(), big).await.unwrap();
    let holder = remote(&url, |c| c).await;
    let refused = remote(&url, |c| c).await;
    let key = "k".to_string();
    let held = holder.try_lease(&key).await.unwrap();
    assert!(held.is_some(), "the first grant is the holder's");
    let mut conn = redis(&url);
    let mut per_attempt = Vec::new();
    for _ in 0..5 {
        let before = info(&mut conn, "stats", "total_net_output_bytes:");
        assert!(refused.try_lease(&key).await.unwrap().is_none(), "held");
        let after = info(&mut conn, "stats", "total_net_output_bytes:");
        per_attempt.push(after - before);
    }
    eprintln!("bytes Redis sent per refused grant (and one INFO): {per_attempt:?}");
    // The fewest: a feed's ping may fall inside one attempt.
    let fewest = per_attempt.iter().copied().min().unwrap_or(0);
    assert!(
        fewest < 10_000,
        "bytes Redis sent for a refused grant (and one INFO): {per_attempt:?}, the entry is 200 kB"
    );
}

/// A grant that fails on the change feed's connection — here Redis forgot its
/// scripts (`SCRIPT FLUSH`), so the session's `EVALSHA` is refused — is made
/// again on the command connection, which loads the script: two processes
/// stampeding a key still make one origin call, not one each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_that_fails_on_the_feeds_connection_is_made_on_the_command_connection() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let (a, b) = (
        cache(remote(&url, |c| c).await),
        cache(remote(&url, |c| c).await),
    );
    let mut conn = redis(&url);
    let calls = Arc::new(AtomicUsize::new(0));
    let slow = |node: &Node, key: String| {
        let (node, calls) = (node.clone(), calls.clone());
        async move {
            node.get_or_load(key, move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok::<_, std::io::Error>("v".to_string())
            })
            .await
            .expect("get_or_load")
            .to_string()
        }
    };
    for round in 0..3 {
        let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut conn).unwrap();
        let key = format!("k{round}");
        let first = slow(&a, key.clone());
        let second = async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            slow(&b, key.clone()).await
        };
        assert_eq!(tokio::join!(first, second), ("v".into(), "v".into()));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            round + 1,
            "round {round}: one origin call for both processes"
        );
    }
}
