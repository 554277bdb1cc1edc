//! The write-behind queue seam, and the embedded in-process queue.

use std::collections::VecDeque;
use std::hash::Hash;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::Write;
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::remote::BoxFuture;

/// Identifies a queued write within its queue.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct QueueId(pub String);

/// A write taken from the queue: written by the drainer, then acknowledged.
#[derive(Debug)]
pub struct Queued<K, V> {
    /// Its place in the queue.
    pub id: QueueId,
    /// The write.
    pub write: Write<K, V>,
    /// When it was queued.
    pub queued_at: Timestamp,
}

/// Why a queue operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The queue holds its maximum of writes.
    #[error("the queue is full")]
    Full,
    /// The queue's store could not be reached or did not answer in time.
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    /// A queued write could not be encoded or decoded.
    #[error("queue codec: {0}")]
    Codec(String),
}

/// Where write-behind writes wait for the system of record.
///
/// The drainer (one task per cache) takes batches in queue order, writes them,
/// and acknowledges them; a write of a key is only ever taken after the writes
/// of that key queued before it were acknowledged (or given up), so writes of
/// one key reach the writer in order.
pub trait WriteQueue<K, V>: Send + Sync + 'static {
    /// Appends `write` (durably, when the queue is durable), unless `max_len`
    /// writes are queued already ([`QueueError::Full`]).
    fn push<'a>(
        &'a self,
        write: &'a Write<K, V>,
        max_len: u64,
    ) -> BoxFuture<'a, Result<(), QueueError>>;

    /// Takes up to `max` writes, oldest first: those taken before and never
    /// acknowledged first (a consumer that died), then new ones; waits up to
    /// `wait` when there are none. A write older than one already written for
    /// its key is acknowledged and skipped.
    fn take<'a>(
        &'a self,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<Queued<K, V>>, QueueError>>;

    /// These writes reached the system of record.
    fn ack<'a>(&'a self, done: &'a [Queued<K, V>]) -> BoxFuture<'a, Result<(), QueueError>>;

    /// These writes failed too often: set aside (where the queue keeps such
    /// writes, if it does) and acknowledged.
    fn give_up<'a>(&'a self, failed: &'a [Queued<K, V>]) -> BoxFuture<'a, Result<(), QueueError>>;

    /// Writes queued and not yet acknowledged.
    fn pending(&self) -> BoxFuture<'_, Result<u64, QueueError>>;

    /// Whether a queued write survives the process that queued it.
    fn durable(&self) -> bool;

    /// This queue as `Any`, for a shared store that appends to it in its own
    /// write ([`Remote::put_queued`](crate::Remote::put_queued)); `None` (the
    /// default) when no store can.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

/// The embedded queue: in this process's memory. Fast, and **not crash-safe**:
/// writes still queued when the process ends are lost (flush it on a graceful
/// shutdown with [`Cache::flush_writes`](crate::Cache::flush_writes)).
pub struct MemoryWriteQueue<K, V> {
    state: Mutex<State<K, V>>,
    arrived: Notify,
    /// The newest version written per key (bounded), to skip older ones.
    written: quick_cache::sync::Cache<K, u64>,
}

struct State<K, V> {
    queued: VecDeque<Queued<K, V>>,
    taken: usize,
    next_id: u64,
}

impl<K, V> MemoryWriteQueue<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// An empty queue.
    pub fn new() -> Self {
        MemoryWriteQueue {
            state: Mutex::new(State {
                queued: VecDeque::new(),
                taken: 0,
                next_id: 0,
            }),
            arrived: Notify::new(),
            written: quick_cache::sync::Cache::new(100_000),
        }
    }
}

impl<K, V> Default for MemoryWriteQueue<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> WriteQueue<K, V> for MemoryWriteQueue<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    fn push<'a>(
        &'a self,
        write: &'a Write<K, V>,
        max_len: u64,
    ) -> BoxFuture<'a, Result<(), QueueError>> {
        Box::pin(async move {
            {
                let mut state = self.state.lock();
                if (state.queued.len() + state.taken) as u64 >= max_len {
                    return Err(QueueError::Full);
                }
                state.next_id += 1;
                let id = QueueId(state.next_id.to_string());
                state.queued.push_back(Queued {
                    id,
                    write: write.clone(),
                    queued_at: SystemClock.now(),
                });
            }
            self.arrived.notify_one();
            Ok(())
        })
    }

    fn take<'a>(
        &'a self,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<Queued<K, V>>, QueueError>> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                // Registered before the check, so a push in between wakes us.
                let arrived = self.arrived.notified();
                {
                    let mut state = self.state.lock();
                    let mut batch = Vec::new();
                    while batch.len() < max {
                        let Some(q) = state.queued.pop_front() else {
                            break;
                        };
                        let older = self
                            .written
                            .get(q.write.key())
                            .is_some_and(|v| v >= q.write.version());
                        if !older {
                            batch.push(q);
                        }
                    }
                    if !batch.is_empty() {
                        state.taken += batch.len();
                        return Ok(batch);
                    }
                }
                if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                    return Ok(Vec::new());
                }
            }
        })
    }

    fn ack<'a>(&'a self, done: &'a [Queued<K, V>]) -> BoxFuture<'a, Result<(), QueueError>> {
        Box::pin(async move {
            for q in done {
                let newer = self
                    .written
                    .get(q.write.key())
                    .is_none_or(|v| v < q.write.version());
                if newer {
                    self.written
                        .insert(q.write.key().clone(), q.write.version());
                }
            }
            let mut state = self.state.lock();
            state.taken = state.taken.saturating_sub(done.len());
            Ok(())
        })
    }

    fn give_up<'a>(&'a self, failed: &'a [Queued<K, V>]) -> BoxFuture<'a, Result<(), QueueError>> {
        Box::pin(async move {
            let mut state = self.state.lock();
            state.taken = state.taken.saturating_sub(failed.len());
            Ok(())
        })
    }

    fn pending(&self) -> BoxFuture<'_, Result<u64, QueueError>> {
        Box::pin(async move {
            let state = self.state.lock();
            Ok((state.queued.len() + state.taken) as u64)
        })
    }

    fn durable(&self) -> bool {
        false
    }
}
