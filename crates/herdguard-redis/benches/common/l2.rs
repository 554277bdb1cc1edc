//! The L2 hit-throughput measurement the `l2_get` and `cluster` benchmarks
//! share: prefill keys through `RedisRemote::put`, then read them from many
//! tasks for a fixed time. Included with `#[path]`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herdguard::{Entry, EntryMeta, Remote, Timestamp};
use herdguard_redis::RedisRemote;

/// The benchmark's cache key number `i`.
pub fn key(i: usize) -> String {
    format!("l2-{i}")
}

/// Stores `keys` entries of `value_bytes` bytes each, from `tasks` tasks at once.
pub async fn prefill(
    remote: &Arc<RedisRemote<String, String>>,
    keys: usize,
    value_bytes: usize,
    tasks: usize,
) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    let meta = EntryMeta {
        created: Timestamp::from_unix_nanos(now),
        ttl: Duration::from_secs(600),
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: Duration::ZERO,
        load_duration: Duration::from_millis(1),
        version: 0,
    };
    let fill: Vec<_> = (0..tasks)
        .map(|t| {
            let remote = remote.clone();
            tokio::spawn(async move {
                for i in (t..keys).step_by(tasks) {
                    let entry = Entry::new("x".repeat(value_bytes), meta);
                    remote
                        .put(&key(i), None, &entry, Duration::from_secs(600))
                        .await
                        .expect("prefill");
                }
            })
        })
        .collect();
    for f in fill {
        f.await.expect("prefill task");
    }
}

/// Runs `op(i)` (i below `keys`) from `tasks` tasks for `measure`; ops per second.
pub async fn drive<F, Fut>(tasks: usize, keys: usize, measure: Duration, op: F) -> f64
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let ops = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (op, ops) = (op.clone(), ops.clone());
            tokio::spawn(async move {
                let mut i = t * 7919;
                while start.elapsed() < measure {
                    op(i % keys).await;
                    ops.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("task");
    }
    ops.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}
