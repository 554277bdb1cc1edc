//! The drainer: one task per cache that takes write-behind writes from the
//! queue, coalesces each key to its newest version, hands the batch to the
//! writer, retries it with backoff, and acknowledges it.
//!
//! Batches are written one after the other, never two at once, so the writes
//! of a key reach the writer in queue order. The task holds the cache weakly:
//! dropping the cache ends it (flush first, with the in-process queue).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::queue::{MemoryWriteQueue, QueueError, Queued, WriteQueue};
use super::{WhenFull, Write, WriteBehind, WriteError};
use crate::cache::Inner;

/// How long one `take` waits for writes before the task looks again.
const TAKE_WAIT: Duration = Duration::from_millis(100);

/// How often a write waiting for room in a full queue tries again.
pub(crate) const FULL_POLL: Duration = Duration::from_millis(5);

/// The write-behind machinery of one cache.
pub(crate) struct Drain<K, V> {
    config: WriteBehind<K, V>,
    queue: Arc<dyn WriteQueue<K, V>>,
    running: AtomicBool,
    /// Set while the oldest queued write waits longer than `max_lag`.
    lagging: AtomicBool,
    /// The queue's length when last looked at (for metrics).
    pub(crate) last_len: AtomicU64,
}

impl<K, V> Drain<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    pub(crate) fn new(config: WriteBehind<K, V>) -> Self {
        let queue = config
            .queue
            .clone()
            .unwrap_or_else(|| Arc::new(MemoryWriteQueue::new()));
        Drain {
            config,
            queue,
            running: AtomicBool::new(false),
            lagging: AtomicBool::new(false),
            last_len: AtomicU64::new(0),
        }
    }

    /// Starts the drainer task unless it runs (needs a Tokio runtime: without
    /// one it starts at the first write).
    pub(crate) fn ensure_running(&self, inner: &Inner<K, V>) {
        if self.running.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !self.running.swap(true, Ordering::AcqRel) {
            runtime.spawn(run(Weak::clone(&inner.me)));
        }
    }

    /// Fails or waits while the queue lags past `max_lag`, as configured.
    pub(crate) async fn wait_for_room(&self) -> Result<(), WriteError> {
        let deadline = match self.config.when_full {
            WhenFull::Fail => Instant::now(),
            WhenFull::Wait(d) => Instant::now() + d,
        };
        while self.lagging.load(Ordering::Acquire) {
            if Instant::now() >= deadline {
                return Err(WriteError::QueueFull);
            }
            tokio::time::sleep(FULL_POLL).await;
        }
        Ok(())
    }

    /// Until when a full queue is waited on (`WhenFull`).
    pub(crate) fn full_deadline(&self) -> Instant {
        match self.config.when_full {
            WhenFull::Fail => Instant::now(),
            WhenFull::Wait(d) => Instant::now() + d,
        }
    }

    /// The queue writes are pushed to.
    pub(crate) fn queue(&self) -> &dyn WriteQueue<K, V> {
        &*self.queue
    }

    /// Most writes queued (`WriteBehind::max_queue`).
    pub(crate) fn max_queue(&self) -> u64 {
        self.config.max_queue
    }

    /// Queues `write`, failing or waiting while the queue is full, as configured.
    pub(crate) async fn push(&self, write: Write<K, V>) -> Result<(), WriteError> {
        let deadline = self.full_deadline();
        loop {
            match self.queue.push(&write, self.config.max_queue).await {
                Ok(()) => return Ok(()),
                Err(QueueError::Full) if Instant::now() < deadline => {
                    tokio::time::sleep(FULL_POLL).await;
                }
                Err(e) => return Err(WriteError::from_queue(e)),
            }
        }
    }

    /// Waits until the queue is empty, at most `limit`.
    pub(crate) async fn flushed(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if matches!(self.queue.pending().await, Ok(0)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The drainer task.
async fn run<K, V>(cache: Weak<Inner<K, V>>)
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    let mut counted_at: Option<Instant> = None;
    loop {
        let Some(inner) = cache.upgrade() else {
            return;
        };
        let Some(drain) = inner.write_behind.as_ref() else {
            return;
        };
        let batch = match drain.queue.take(drain.config.max_batch, TAKE_WAIT).await {
            Ok(batch) => batch,
            Err(_) => {
                // The queue's store is away: try again shortly.
                drop(inner);
                tokio::time::sleep(TAKE_WAIT).await;
                continue;
            }
        };
        // The queue's length is for metrics (and, in a durable queue, costs a
        // command per partition): counted every `TAKE_WAIT`, not every batch.
        if counted_at.is_none_or(|at| at.elapsed() >= TAKE_WAIT) {
            counted_at = Some(Instant::now());
            if let Ok(len) = drain.queue.pending().await {
                drain.last_len.store(len, Ordering::Relaxed);
            }
        }
        let now = inner.clock.now();
        let lagging = drain.config.max_lag.is_some_and(|max| {
            batch
                .iter()
                .any(|q| now.saturating_duration_since(q.queued_at) > max)
        });
        drain.lagging.store(lagging, Ordering::Release);
        if batch.is_empty() {
            continue;
        }
        write_batch(&inner, drain, &batch).await;
    }
}

/// Writes one batch (coalesced) until it succeeds or is given up, then
/// acknowledges it.
async fn write_batch<K, V>(inner: &Inner<K, V>, drain: &Drain<K, V>, batch: &[Queued<K, V>])
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    let writes = coalesce(batch);
    let coalesced = batch.len() - writes.len();
    for _ in 0..coalesced {
        inner.metrics.writes_coalesced.inc();
    }
    let (first, max) = drain.config.retry_backoff;
    let mut backoff = first;
    for attempt in 1..=drain.config.max_attempts {
        match drain.config.writer.write(&writes).await {
            Ok(()) => {
                let now = inner.clock.now();
                for q in batch {
                    inner
                        .metrics
                        .write_lag
                        .record(now.saturating_duration_since(q.queued_at));
                }
                for _ in 0..writes.len() {
                    inner.metrics.writes_written.inc();
                }
                // Written: an acknowledgement lost now means a second delivery,
                // which the version makes harmless.
                ack_until_done(|| drain.queue.ack(batch)).await;
                return;
            }
            Err(_) if attempt < drain.config.max_attempts => {
                inner.metrics.writes_retried.inc();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(max);
            }
            Err(_) => {}
        }
    }
    for _ in 0..writes.len() {
        inner.metrics.writes_failed.inc();
    }
    ack_until_done(|| drain.queue.give_up(batch)).await;
}

/// Retries an acknowledgement a few times (the queue's store may blink).
async fn ack_until_done<'a, F>(ack: impl Fn() -> F)
where
    F: std::future::Future<Output = Result<(), QueueError>> + 'a,
{
    for _ in 0..5 {
        if ack().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each key once, at its newest version, in the order keys first appear.
fn coalesce<K: Hash + Eq + Clone, V>(batch: &[Queued<K, V>]) -> Vec<Write<K, V>> {
    let mut newest: HashMap<&K, usize> = HashMap::new();
    let mut order = Vec::new();
    for (i, q) in batch.iter().enumerate() {
        match newest.get_mut(q.write.key()) {
            Some(at) => {
                if q.write.version() > batch[*at].write.version() {
                    *at = i;
                }
            }
            None => {
                newest.insert(q.write.key(), i);
                order.push(q.write.key());
            }
        }
    }
    order
        .into_iter()
        .filter_map(|k| newest.get(k).map(|&i| batch[i].write.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;

    fn q(key: &'static str, version: u64) -> Queued<&'static str, u32> {
        Queued {
            id: super::super::QueueId(format!("{key}{version}")),
            write: Write::new(key, version as u32, version),
            queued_at: Timestamp::EPOCH,
        }
    }

    #[test]
    fn coalescing_keeps_each_keys_newest_version_in_first_seen_order() {
        let batch = [q("a", 1), q("b", 5), q("a", 3), q("b", 4), q("c", 1)];
        let got: Vec<_> = coalesce(&batch)
            .iter()
            .map(|w| (*w.key(), w.version()))
            .collect();
        assert_eq!(got, vec![("a", 3), ("b", 5), ("c", 1)]);
    }
}
