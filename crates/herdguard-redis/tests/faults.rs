//! Every fleet promise under a fault at the worst moment, against a real
//! redis-server. Each "node" is a `Cache` with its own `RedisRemote` (its own
//! command and pub/sub connections), so several nodes in one test behave as
//! several processes do; `fleet.rs` and `fault_history.rs` use real worker
//! processes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herdguard::{Cache, CallOptions, Error, Loaded, Served};
use herdguard_redis::{RedisConfig, RedisRemote};
use herdguard_testkit::RedisServer;

type Node = Cache<String, String>;

/// How a node is set up; the defaults are the library's, with a short poll so a
/// lost notification cannot hide behind a long one.
#[derive(Clone)]
struct Setup {
    config: fn(RedisConfig) -> RedisConfig,
    cache: fn(herdguard::CacheBuilder<String, String>) -> herdguard::CacheBuilder<String, String>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            config: |c| c,
            cache: |b| b,
        }
    }
}

async fn node(url: &str, setup: &Setup) -> Node {
    let remote = RedisRemote::<String, String>::connect((setup.config)(RedisConfig::new(url)))
        .await
        .expect("connect");
    (setup.cache)(
        Cache::builder()
            .ttl(Duration::from_secs(60))
            .shared_store(remote)
            .fleet_poll_interval(Duration::from_millis(200)),
    )
    .build()
    .expect("build")
}

fn k(s: &str) -> String {
    s.to_string()
}

/// A loader taking `ms` that returns `value`, counting its calls.
fn slow(
    calls: &Arc<AtomicUsize>,
    ms: u64,
    value: &str,
) -> impl FnOnce() -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<String, std::io::Error>> + Send>,
> + Send
       + 'static {
    let (calls, value) = (Arc::clone(calls), value.to_string());
    move || {
        Box::pin(async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(value)
        })
    }
}

/// A loader that must not run.
fn never() -> impl FnOnce() -> std::future::Ready<Result<String, std::io::Error>> + Send + 'static {
    || panic!("the origin must not be called here")
}

fn redis(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

/// `DEBUG SLEEP secs` from a side connection: Redis answers nobody meanwhile.
fn pause_redis(url: &str, secs: f64) -> std::thread::JoinHandle<()> {
    let url = url.to_string();
    std::thread::spawn(move || {
        let _: () = redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg(secs)
            .query(&mut redis(&url))
            .expect("DEBUG SLEEP");
    })
}

// --- invalidate and insert are barriers, in this process and in the fleet ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_after_invalidate_never_gets_the_older_load_and_redis_never_stores_it() {
    let server = RedisServer::start().unwrap();
    let a = node(&server.url(), &Setup::default()).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let first = tokio::spawn({
        let (a, load) = (a.clone(), slow(&calls, 300, "before"));
        async move { a.get_or_load(k("key"), load).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    a.invalidate(&k("key")).await.unwrap();
    let after = a.get_or_load(k("key"), slow(&calls, 20, "after")).await;
    assert_eq!(*after.unwrap(), "after");
    first.await.unwrap().unwrap();
    // A fresh node reads Redis: the older load must not have been stored there.
    let b = node(&server.url(), &Setup::default()).await;
    let seen = b.get_or_load(k("key"), slow(&calls, 1, "b")).await.unwrap();
    assert_eq!(*seen, "after", "{:?}", seen.served());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidate_evicts_every_other_nodes_copy_within_one_pubsub_hop() {
    let server = RedisServer::start().unwrap();
    let (a, b) = (
        node(&server.url(), &Setup::default()).await,
        node(&server.url(), &Setup::default()).await,
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let mut hops = Vec::new();
    for round in 0..100 {
        let key = format!("key{round}");
        a.get_or_load(key.clone(), slow(&calls, 0, "v1"))
            .await
            .unwrap();
        let copy = b.get_or_load(key.clone(), never()).await.unwrap();
        assert_eq!(*copy, "v1");
        a.invalidate(&key).await.unwrap();
        let invalidated = Instant::now();
        // Poll B's L1 itself (`peek`: present or not, however current): its
        // copy must go.
        loop {
            if b.peek(&key).is_none() {
                hops.push(invalidated.elapsed());
                break;
            }
            assert!(
                invalidated.elapsed() < Duration::from_secs(2),
                "round {round}: B still serves the invalidated copy after 2 s"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    hops.sort();
    let p99 = hops[hops.len() * 99 / 100 - 1];
    println!(
        "eviction hop: p50 {:?}, p99 {:?}, max {:?}",
        hops[hops.len() / 2],
        p99,
        hops[hops.len() - 1]
    );
    assert!(p99 <= Duration::from_millis(50), "p99 {p99:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_write_elsewhere_evicts_the_older_copy() {
    let server = RedisServer::start().unwrap();
    let (a, b) = (
        node(&server.url(), &Setup::default()).await,
        node(&server.url(), &Setup::default()).await,
    );
    let calls = Arc::new(AtomicUsize::new(0));
    a.get_or_load(k("key"), slow(&calls, 0, "v1"))
        .await
        .unwrap();
    assert_eq!(*b.get_or_load(k("key"), never()).await.unwrap(), "v1");
    a.insert(k("key"), "v2".to_string()).await.unwrap();
    let started = Instant::now();
    loop {
        let v = b.get_or_load(k("key"), never()).await.unwrap();
        if *v == "v2" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(2), "B kept v1");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

// --- fencing holds in both write orders ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_lease_expired_is_refused_even_when_it_writes_first() {
    let server = RedisServer::start().unwrap();
    let short_lease = Setup {
        config: |c| c.lease_ttl(Duration::from_millis(300)).renew(false),
        ..Setup::default()
    };
    let (a, b) = (
        node(&server.url(), &short_lease).await,
        node(&server.url(), &short_lease).await,
    );
    let calls = Arc::new(AtomicUsize::new(0));
    // A leases at 0 and loads until 600 ms; its lease lapses at 300 ms.
    let old = tokio::spawn({
        let (a, load) = (a.clone(), slow(&calls, 600, "old"));
        async move { a.get_or_load(k("key"), load).await }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    // B takes the lapsed lease over at 400 ms and loads until 900 ms: A writes first.
    let new = b
        .get_or_load(k("key"), slow(&calls, 500, "new"))
        .await
        .unwrap();
    assert_eq!(*new, "new");
    old.await.unwrap().unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let c = node(&server.url(), &Setup::default()).await;
    let stored = c.get_or_load(k("key"), never()).await.unwrap();
    assert_eq!(
        *stored, "new",
        "the holder that lost its lease wrote first and must have been refused"
    );
}

// --- bytes from Redis are untrusted: bad bytes under one key affect that key only ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_entry_is_a_miss_for_that_key_only() {
    let server = RedisServer::start().unwrap();
    let mut conn = redis(&server.url());
    let _: () = redis::cmd("SET")
        .arg("hg:{bad}:v")
        .arg(b"\x07garbage from another release".as_slice())
        .query(&mut conn)
        .unwrap();
    let nodes = [
        node(&server.url(), &Setup::default()).await,
        node(&server.url(), &Setup::default()).await,
        node(&server.url(), &Setup::default()).await,
        node(&server.url(), &Setup::default()).await,
    ];
    let calls: Vec<Arc<AtomicUsize>> = (0..4).map(|_| Arc::default()).collect();
    // Every node reads the bad key first, then all load the good keys together.
    for (i, n) in nodes.iter().enumerate() {
        let v = n.get_or_load(k("bad"), slow(&calls[0], 50, "fixed")).await;
        assert_eq!(*v.unwrap(), "fixed", "node {i}");
    }
    let mut tasks = Vec::new();
    for n in &nodes {
        for (key, count) in [
            ("good1", &calls[1]),
            ("good2", &calls[2]),
            ("good3", &calls[3]),
        ] {
            for _ in 0..8 {
                let (n, load) = (n.clone(), slow(count, 100, key));
                tasks.push(tokio::spawn(
                    async move { n.get_or_load(k(key), load).await },
                ));
            }
        }
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let per_key: Vec<usize> = calls.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    assert_eq!(
        per_key,
        vec![1, 1, 1, 1],
        "one origin call per key, bad key included"
    );
    for n in &nodes {
        assert!(n.shared_store_healthy(), "one bad entry is not an outage");
        assert_eq!(n.metrics().remote_errors, 0);
    }
}

// --- a renewal error is retried, not an outage ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_that_fails_once_keeps_the_lease_and_the_fleet_coordinated() {
    let server = RedisServer::start().unwrap();
    // Lease 900 ms, renewed every 300 ms; each Redis call may take 100 ms.
    let setup = Setup {
        config: |c| {
            c.lease_ttl(Duration::from_millis(900))
                .op_timeout(Duration::from_millis(100))
        },
        ..Setup::default()
    };
    let (a, b) = (
        node(&server.url(), &setup).await,
        node(&server.url(), &setup).await,
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let holder = tokio::spawn({
        let (a, load) = (a.clone(), slow(&calls, 1500, "v"));
        async move { a.get_or_load(k("key"), load).await }
    });
    // Redis sleeps from 250 to 450 ms: the renewal at 300 ms times out.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let sleeper = pause_redis(&server.url(), 0.2);
    tokio::time::sleep(Duration::from_millis(800)).await;
    // At ~1050 ms, past the lease's first TTL: B must still find it held.
    let waiter = b
        .get_or_load(k("key"), slow(&calls, 10, "b"))
        .await
        .unwrap();
    assert_eq!(*waiter, "v", "{:?}", waiter.served());
    holder.await.unwrap().unwrap();
    sleeper.join().unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one origin call");
    assert!(a.shared_store_healthy(), "a renewal error is not an outage");
}

// --- a load that stores nothing does not serialise the fleet ---

/// Four nodes call one cold key at once; returns what each got and how long
/// the slowest took.
async fn four_at_once(
    nodes: &[Node],
    key: &str,
    load: impl Fn() -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Loaded<String>, std::io::Error>> + Send>,
        > + Clone
        + Send
        + Sync
        + 'static,
) -> (Vec<Result<herdguard::Cached<String>, Error>>, Duration) {
    let started = Instant::now();
    let tasks: Vec<_> = nodes
        .iter()
        .map(|n| {
            let (n, load, key) = (n.clone(), load.clone(), key.to_string());
            tokio::spawn(async move { n.get_or_load_with(key, &CallOptions::new(), load).await })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    (results, started.elapsed())
}

async fn four_nodes(url: &str, setup: &Setup) -> Vec<Node> {
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(node(url, setup).await);
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_load_is_shared_so_the_fleet_does_not_queue_on_the_lease() {
    let server = RedisServer::start().unwrap();
    let nodes = four_nodes(&server.url(), &Setup::default()).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let load = {
        let calls = calls.clone();
        move || {
            let calls = calls.clone();
            Box::pin(async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                Err::<Loaded<String>, _>(std::io::Error::other("origin down"))
            }) as std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>
        }
    };
    let (results, slowest) = four_at_once(&nodes, "key", load).await;
    println!(
        "failed load: {} origin calls, slowest caller {slowest:?}",
        calls.load(Ordering::SeqCst)
    );
    assert!(
        results.iter().all(|r| matches!(r, Err(Error::Origin(_)))),
        "{results:?}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the waiting nodes share the failure"
    );
    assert!(
        slowest < Duration::from_millis(550),
        "serialised: {slowest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncacheable_answer_sends_the_fleet_to_the_origin_in_parallel() {
    let server = RedisServer::start().unwrap();
    let nodes = four_nodes(&server.url(), &Setup::default()).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let load = {
        let calls = calls.clone();
        move || {
            let calls = calls.clone();
            Box::pin(async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok::<_, std::io::Error>(Loaded::uncacheable("private".to_string()))
            }) as std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>
        }
    };
    let (results, slowest) = four_at_once(&nodes, "key", load).await;
    println!(
        "uncacheable: {} origin calls, slowest caller {slowest:?}",
        calls.load(Ordering::SeqCst)
    );
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    // One leader, then each waiting node for itself, in parallel: two origin latencies.
    assert!(
        slowest < Duration::from_millis(850),
        "serialised: {slowest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_too_large_to_share_does_not_serialise_the_fleet() {
    let server = RedisServer::start().unwrap();
    let setup = Setup {
        config: |c| c.max_value_bytes(64),
        ..Setup::default()
    };
    let nodes = four_nodes(&server.url(), &setup).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let load = {
        let calls = calls.clone();
        move || {
            let calls = calls.clone();
            Box::pin(async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok::<_, std::io::Error>(Loaded::new("x".repeat(1000)))
            }) as std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>
        }
    };
    let (results, slowest) = four_at_once(&nodes, "key", load).await;
    println!(
        "too large: {} origin calls, slowest caller {slowest:?}",
        calls.load(Ordering::SeqCst)
    );
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert!(
        slowest < Duration::from_millis(850),
        "serialised: {slowest:?}"
    );
    assert!(calls.load(Ordering::SeqCst) <= 4);
}

// --- stale copies in Redis stand in, as L1 copies do ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_copy_in_redis_is_served_when_the_origin_fails() {
    let server = RedisServer::start().unwrap();
    let setup = Setup {
        cache: |b| {
            b.ttl(Duration::from_millis(200))
                .stale_if_error(Duration::from_secs(30))
        },
        ..Setup::default()
    };
    let a = node(&server.url(), &setup).await;
    let calls = Arc::new(AtomicUsize::new(0));
    a.get_or_load(k("key"), slow(&calls, 0, "v1"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A new process: empty L1, and the origin is down.
    let b = node(&server.url(), &setup).await;
    let v = b
        .get_or_load(k("key"), || async {
            Err::<String, _>(std::io::Error::other("origin down"))
        })
        .await;
    let v = v.expect("the stale copy in Redis must stand in");
    assert_eq!(*v, "v1");
    assert_eq!(v.served(), Served::StaleOnError);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_copy_in_redis_is_served_while_one_refresh_runs() {
    let server = RedisServer::start().unwrap();
    let setup = Setup {
        cache: |b| {
            b.ttl(Duration::from_millis(200))
                .stale_while_revalidate(Duration::from_secs(30))
        },
        ..Setup::default()
    };
    let a = node(&server.url(), &setup).await;
    let calls = Arc::new(AtomicUsize::new(0));
    a.get_or_load(k("key"), slow(&calls, 0, "v1"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = node(&server.url(), &setup).await;
    let started = Instant::now();
    let v = b
        .get_or_load(k("key"), slow(&calls, 300, "v2"))
        .await
        .unwrap();
    assert_eq!(
        (v.as_str(), v.served()),
        ("v1", Served::StaleWhileRevalidate)
    );
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    // The refresh runs in the background and lands.
    let deadline = Instant::now() + Duration::from_secs(3);
    while b.get(&k("key")).map(|v| v.to_string()) != Some("v2".to_string()) {
        assert!(Instant::now() < deadline, "the refresh never landed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

// --- Redis faults mid-wait and mid-load ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_pubsub_connections_mid_wait_still_wakes_the_waiters() {
    let server = RedisServer::start().unwrap();
    let (a, b) = (
        node(&server.url(), &Setup::default()).await,
        node(&server.url(), &Setup::default()).await,
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let holder = tokio::spawn({
        let (a, load) = (a.clone(), slow(&calls, 500, "v"));
        async move { a.get_or_load(k("key"), load).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let waiters: Vec<_> = (0..16)
        .map(|_| {
            let (b, load) = (b.clone(), slow(&calls, 10, "b"));
            tokio::spawn(async move {
                let started = Instant::now();
                (b.get_or_load(k("key"), load).await, started.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut redis(&server.url()))
        .unwrap();
    assert!(killed >= 2, "both nodes had a pub/sub connection: {killed}");
    for w in waiters {
        let (v, took) = w.await.unwrap();
        assert_eq!(*v.unwrap(), "v");
        // The load ends at ~450 ms from here; the poll (200 ms) bounds the rest.
        assert!(took < Duration::from_millis(1200), "{took:?}");
    }
    holder.await.unwrap().unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_mid_load_fails_no_caller() {
    let server = RedisServer::start().unwrap();
    let setup = Setup {
        config: |c| c.op_timeout(Duration::from_millis(100)),
        ..Setup::default()
    };
    let (a, b) = (
        node(&server.url(), &setup).await,
        node(&server.url(), &setup).await,
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let holder = tokio::spawn({
        let (a, load) = (a.clone(), slow(&calls, 400, "v"));
        async move { a.get_or_load(k("key"), load).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let waiters: Vec<_> = (0..16)
        .map(|_| {
            let (b, load) = (b.clone(), slow(&calls, 50, "b"));
            tokio::spawn(async move { b.get_or_load(k("key"), load).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let sleeper = pause_redis(&server.url(), 1.0);
    for w in waiters {
        let v = tokio::time::timeout(Duration::from_secs(3), w)
            .await
            .expect("a waiter hung while Redis slept");
        v.unwrap().expect("no caller error while Redis sleeps");
    }
    holder.await.unwrap().expect("the holder's caller succeeds");
    sleeper.join().unwrap();
    // The holder, and at most one load in the other node once it gave up on Redis.
    assert!(calls.load(Ordering::SeqCst) <= 2);
}

// --- no load runs unbounded ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_loader_gives_the_lease_back_at_load_timeout_and_the_next_call_loads() {
    let server = RedisServer::start().unwrap();
    let setup = Setup {
        cache: |b| b.load_timeout(Duration::from_millis(300)),
        ..Setup::default()
    };
    let (a, b) = (
        node(&server.url(), &setup).await,
        node(&server.url(), &setup).await,
    );
    let started = Instant::now();
    let hung = tokio::spawn({
        let a = a.clone();
        async move {
            a.get_or_load(k("key"), || async {
                std::future::pending::<()>().await;
                Ok::<_, std::io::Error>(String::new())
            })
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // B waits on A's lease; when A's load is cancelled, B learns it at once.
    let calls = Arc::new(AtomicUsize::new(0));
    let waited = b.get_or_load(k("key"), slow(&calls, 10, "b")).await;
    assert!(
        matches!(waited, Err(Error::Origin(ref e)) if e.to_string().contains("limit")),
        "{waited:?}"
    );
    let hung = hung.await.unwrap();
    assert!(matches!(hung, Err(Error::LoadTimeout(_))), "{hung:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0, "B shared A's outcome");
    // The lease was given back: the next call loads at once, in either process.
    let next = b
        .get_or_load(k("key"), slow(&calls, 10, "fresh"))
        .await
        .unwrap();
    assert_eq!((next.as_str(), next.served()), ("fresh", Served::Loaded));
    assert_eq!(a.metrics().load_timeouts, 1);
}

// --- smaller promises ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_waiters_do_not_wait_for_an_uncacheable_answers_lease_to_be_given_back() {
    let server = RedisServer::start().unwrap();
    let setup = Setup {
        config: |c| c.op_timeout(Duration::from_millis(1000)),
        ..Setup::default()
    };
    let a = node(&server.url(), &setup).await;
    // The leader's origin call answers "uncacheable" at 200 ms; Redis sleeps
    // from 150 to 650 ms, so giving the lease back (with its marker) takes
    // until then. The waiters go to the origin themselves at once.
    let calls = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let waiters: Vec<_> = (0..8)
        .map(|_| {
            let (a, calls) = (a.clone(), calls.clone());
            tokio::spawn(async move {
                let r = a
                    .get_or_load_with(k("key"), &CallOptions::new(), move || async move {
                        if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Ok::<_, std::io::Error>(Loaded::uncacheable("private".to_string()))
                    })
                    .await;
                (r, started.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let sleeper = pause_redis(&server.url(), 0.5);
    for w in waiters {
        let (r, took) = w.await.unwrap();
        assert_eq!(r.unwrap().as_str(), "private");
        assert!(
            took < Duration::from_millis(450),
            "woken only after the release: {took:?}"
        );
    }
    sleeper.join().unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        8,
        "the leader, then each waiter"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_is_not_replayed_to_a_call_that_waits_on_the_next_load() {
    let server = RedisServer::start().unwrap();
    let (a, b, c) = (
        node(&server.url(), &Setup::default()).await,
        node(&server.url(), &Setup::default()).await,
        node(&server.url(), &Setup::default()).await,
    );
    // A's load fails: its marker stays in Redis for a second.
    let failed = a
        .get_or_load(k("key"), || async {
            Err::<String, _>(std::io::Error::other("origin down"))
        })
        .await;
    assert!(matches!(failed, Err(Error::Origin(_))), "{failed:?}");
    // C, starting after that, takes the lease for the next load (600 ms)...
    let calls = Arc::new(AtomicUsize::new(0));
    let next = tokio::spawn({
        let (c, load) = (c.clone(), slow(&calls, 600, "fresh"));
        async move { c.get_or_load(k("key"), load).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // ...and B, starting after it too, waits on C's lease. Its safety poll
    // (200 ms) re-reads the key while C still loads: A's failure is not B's.
    let waited = b.get_or_load(k("key"), slow(&calls, 10, "b")).await;
    assert_eq!(
        waited.as_deref().ok().map(String::as_str),
        Some("fresh"),
        "{waited:?}"
    );
    assert_eq!(*next.await.unwrap().unwrap(), "fresh");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_expiry_of_an_entry_follows_the_caches_clock() {
    let server = RedisServer::start().unwrap();
    // The cache's clock runs an hour behind the system's.
    let clock = herdguard::ManualClock::new();
    let behind = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        - Duration::from_secs(3600);
    clock.set(herdguard::Timestamp::from_unix_nanos(
        behind.as_nanos() as u64
    ));
    let remote = RedisRemote::<String, String>::connect(RedisConfig::new(server.url()))
        .await
        .unwrap();
    let cache: Node = Cache::builder()
        .clock(clock)
        .ttl(Duration::from_secs(10))
        .shared_store(remote)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    cache
        .get_or_load(k("key"), slow(&calls, 0, "v"))
        .await
        .unwrap();
    let pttl: i64 = redis::cmd("PTTL")
        .arg("hg:{key}:v")
        .query(&mut redis(&server.url()))
        .unwrap();
    assert!(
        (9_000..=10_000).contains(&pttl),
        "kept for its TTL on the cache's clock, not the system's: {pttl} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_revalidations_across_the_fleet_make_one_origin_call() {
    let server = RedisServer::start().unwrap();
    let (a, b) = (
        node(&server.url(), &Setup::default()).await,
        node(&server.url(), &Setup::default()).await,
    );
    let calls = Arc::new(AtomicUsize::new(0));
    a.get_or_load(k("key"), slow(&calls, 0, "v1"))
        .await
        .unwrap();
    assert_eq!(*b.get_or_load(k("key"), never()).await.unwrap(), "v1");
    let reloads: Vec<_> = [&a, &b, &a, &b]
        .into_iter()
        .map(|n| {
            let (n, calls) = (n.clone(), calls.clone());
            tokio::spawn(async move {
                n.get_or_load_with(
                    k("key"),
                    &CallOptions::new().revalidate(),
                    move || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok::<_, std::io::Error>(Loaded::new("v2".to_string()))
                    },
                )
                .await
            })
        })
        .collect();
    for r in reloads {
        assert_eq!(*r.await.unwrap().unwrap(), "v2");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the first load, and one reload for the fleet"
    );
    // Both processes now hold the new value (the other by the change notice and L2).
    assert_eq!(*a.get_or_load(k("key"), never()).await.unwrap(), "v2");
    assert_eq!(*b.get_or_load(k("key"), never()).await.unwrap(), "v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_whose_write_failed_is_not_kept_when_the_key_changed_meanwhile() {
    let server = RedisServer::start().unwrap();
    let setup = Setup {
        config: |c| c.op_timeout(Duration::from_millis(100)),
        ..Setup::default()
    };
    let (a, b) = (
        node(&server.url(), &setup).await,
        node(&server.url(), &setup).await,
    );
    let calls = Arc::new(AtomicUsize::new(0));
    // A leases the key and loads for 300 ms.
    let load = tokio::spawn({
        let (a, load) = (a.clone(), slow(&calls, 300, "before"));
        async move { a.get_or_load(k("key"), load).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // B invalidates: A's lease is voided, and A hears of it.
    b.invalidate(&k("key")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Redis freezes before A writes: A's write fails, unconfirmed.
    server.pause().unwrap();
    assert_eq!(*load.await.unwrap().unwrap(), "before");
    server.resume().unwrap();
    assert!(
        a.get(&k("key")).is_none(),
        "A kept a value loaded before B's invalidation"
    );
}

#[test]
fn a_paused_process_does_not_serve_a_copy_whose_eviction_notice_it_has_not_read() {
    // B runs on a runtime of its own, driven only inside `block_on`: between
    // two calls it is a paused process (a GC pause, a starved VM). A's
    // invalidation reaches B's socket while B is paused; when B resumes, its
    // caller runs before its feed reads the notice.
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let a_runtime = tokio::runtime::Runtime::new().unwrap();
    let b_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let a = a_runtime.block_on(node(&url, &Setup::default()));
    let b = b_runtime.block_on(node(&url, &Setup::default()));
    a_runtime
        .block_on(a.get_or_load(k("key"), slow(&calls, 0, "before")))
        .unwrap();
    let copy = b_runtime
        .block_on(b.get_or_load(k("key"), never()))
        .unwrap();
    assert_eq!(*copy, "before");
    a_runtime.block_on(a.invalidate(&k("key"))).unwrap();
    // Longer than the feed vouches for B's copies without a new answer
    // (the ping interval plus the operation timeout: 350 ms).
    std::thread::sleep(Duration::from_millis(600));
    let after = b_runtime
        .block_on(b.get_or_load(k("key"), slow(&calls, 0, "after")))
        .unwrap();
    assert_eq!(
        (after.as_str(), calls.load(Ordering::SeqCst)),
        ("after", 2),
        "served {:?} 600 ms after the invalidation returned",
        after.served()
    );
    // Running, its feed vouches again: copies are served from memory.
    b_runtime.block_on(async { tokio::time::sleep(Duration::from_millis(250)).await });
    let hit = b_runtime
        .block_on(b.get_or_load(k("key"), never()))
        .unwrap();
    assert_eq!((hit.as_str(), hit.served()), ("after", Served::Hit));
}
