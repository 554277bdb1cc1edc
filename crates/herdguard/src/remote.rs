//! The fleet seam: a shared tier (L2) that every process reads and writes, the
//! lease that decides which process may call the origin for a key, and the
//! change feed that keeps every process's in-process copies honest.
//!
//! The core drives the protocol (see `fleet.rs`): L2 lookup → lease → re-check →
//! load while renewing → conditional write (which also gives the lease back) —
//! or, when the load stored nothing, a release that leaves a short-lived
//! [`Marker`] so the processes waiting on the lease stop queueing. A process
//! that finds the lease taken [`watches`](Remote::watch) the key *before* its
//! last re-check, then waits for a change with a bounded poll as a safety net,
//! and takes the lease over when it expires (the holder may have died).
//!
//! Every write and invalidation reaches, through the change feed, at least
//! the processes that hold a copy of the key or wait on it; the core evicts
//! its in-process copy of the key ([`ChangeListener`]). While the feed
//! is down ([`feed_down`](ChangeListener::feed_down)), for the copies it
//! held before it came back, and — with a [`feed_bound`](Remote::feed_bound) —
//! while the feed has not confirmed for that long, the core checks each copy
//! against the shared tier before serving it.
//!
//! Any [`RemoteError::Unavailable`] makes the core degrade to in-process single
//! flight until a background [`ping`](Remote::ping) succeeds, so a store outage
//! never fails a caller; a [`RemoteError::Codec`] concerns one key only.

use std::future::Future;
use std::pin::Pin;
use std::sync::Weak;
use std::time::Duration;

use crate::entry::Entry;
use crate::error::RemoteError;
use crate::write::{QueueError, WriteQueue};

/// A boxed, sendable future (the seam is used as a trait object).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Resolves when the watched key may have changed: a write, an invalidation, a
/// lease given back, or a loss of the change feed (then the safety poll and a
/// re-check take over).
pub type Notified = BoxFuture<'static, ()>;

/// The fleet-wide right to load one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Unique per holder: release and renewal compare it, so nobody frees a lease
    /// they no longer hold.
    pub token: String,
    /// The fencing token: granting a lease advances the key's version, and the
    /// write of this load succeeds only while the key is still at this version.
    /// A holder whose lease lapsed and was granted to another process is
    /// therefore refused whichever of the two writes first.
    pub version: u64,
    /// Whether the grant took over a lease that expired without being given
    /// back (its holder died, hung or was cut off): this load may duplicate
    /// an origin call made elsewhere. Counted and logged by the core.
    pub taken_over: bool,
    /// What the grant saw of the key's entry. When it is what the read before
    /// the grant found, the core does not read the key again before calling
    /// the origin: nothing was written in between.
    pub at_grant: AtGrant,
}

/// The key's entry as a lease grant saw it ([`Lease::at_grant`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AtGrant {
    /// Not known: the core reads the key again after the grant.
    Unknown,
    /// No entry (or bytes that are none: the read treats them as a miss too).
    Missing,
    /// An entry at this version.
    Entry(u64),
}

/// What a conditional write did.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The entry was written with this version and the change announced.
    Stored {
        /// The version the write gave the key (and the stored entry).
        version: u64,
    },
    /// The key changed since the lease was granted (invalidated, rewritten, or
    /// leased again): the entry was not written, and the loaded value must not
    /// be kept as fresh.
    Superseded,
}

/// Why a write joined with its queue's push ([`Remote::put_queued`]) failed.
#[derive(Debug)]
pub enum QueuedPutError {
    /// The shared store failed. With no answer, the write and its push may
    /// both have been made (never one without the other).
    Remote(RemoteError),
    /// The queue refused before anything was sent (full, or the value does
    /// not encode): nothing was written.
    Queue(QueueError),
}

/// How the fleet's last load of a key ended when it stored no value: left by
/// the lease holder for a short time, so the processes waiting on its lease
/// act on it instead of queueing for the lease one after the other. A failure
/// is left before the holder's own callers learn of it, so a call that starts
/// after one of them got the error finds the lease free and loads again.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Marker {
    /// The load failed; the text says why. Processes that waited on it fail
    /// fast (or serve stale) as their own waiters would.
    Failed(String),
    /// The origin's answer may not be shared: every caller goes to the origin
    /// itself, in parallel (hit-for-miss, fleet-wide).
    Uncacheable,
    /// The value could not be shared (too large for the store): each process
    /// loads and keeps its own copy, coalescing in process only.
    LocalOnly,
}

/// What the shared store holds for a key, read in one round trip.
#[derive(Debug)]
pub struct Shared<V> {
    /// The entry, fresh or not.
    pub entry: Option<Entry<V>>,
    /// The marker of a recent load that stored nothing.
    pub marker: Option<Marker>,
}

impl<V> Default for Shared<V> {
    fn default() -> Self {
        Shared {
            entry: None,
            marker: None,
        }
    }
}

/// Receives the change feed of a [`Remote`] (the core's cache implements it).
pub trait ChangeListener<K>: Send + Sync {
    /// Some process wrote or invalidated `key`, giving it `version`.
    fn changed(&self, key: &K, version: u64);
    /// `key` changed to a version the feed does not know (a store that tells
    /// which keys changed, not to what): every copy of it goes, and a load of
    /// it in flight keeps its result only if the shared-store read or write
    /// that produced it was sent after this call.
    fn changed_unknown(&self, key: &K);
    /// The feed is down: changes made from now on may go unseen, so nothing
    /// held in process can be trusted as current without a check.
    fn feed_down(&self);
    /// The feed is back; changes made while it was down were missed.
    fn feed_up(&self);
    /// Every change announced more than `ago` before this call has been
    /// handed to the listeners (see [`Remote::feed_bound`]).
    fn feed_current(&self, ago: Duration);
}

/// A shared store, lease coordinator and change feed for a fleet of processes.
pub trait Remote<K, V>: Send + Sync + 'static {
    /// The entry and marker of `key`. A [`RemoteError::Codec`] means the bytes
    /// stored under this key are not an entry this build can read: a miss for
    /// this key, which the next write overwrites.
    fn get<'a>(&'a self, key: &'a K) -> BoxFuture<'a, Result<Shared<V>, RemoteError>>;

    /// Tries to take the lease of `key`: `None` when another holder has it.
    /// A grant clears the key's marker: the outcome of the last load no longer
    /// speaks for a key that a new load is under way for (a failure is never
    /// replayed to a call that waits on the next load).
    fn try_lease<'a>(&'a self, key: &'a K) -> BoxFuture<'a, Result<Option<Lease>, RemoteError>>;

    /// Extends a held lease; `false` when it is no longer ours.
    fn renew<'a>(
        &'a self,
        key: &'a K,
        lease: &'a Lease,
    ) -> BoxFuture<'a, Result<bool, RemoteError>>;

    /// Gives a held lease back (only if it is still ours), leaving `marker` for
    /// `ttl` when the load stored nothing, and wakes the key's watchers.
    fn release<'a>(
        &'a self,
        key: &'a K,
        lease: &'a Lease,
        marker: Option<(&'a Marker, Duration)>,
    ) -> BoxFuture<'a, Result<(), RemoteError>>;

    /// Watches `key`: the future resolves at its next change (see [`Notified`]).
    /// Registered when this returns, so a re-check made after it cannot miss a
    /// write that lands in between.
    fn watch(&self, key: &K) -> Notified;

    /// Writes `entry`, kept in the store for `retain`, and announces it. With a
    /// lease, the write is conditional (only while the key is still at
    /// `lease.version`) and gives the lease back whatever it decides. Without
    /// one (an explicit insert), it always writes.
    fn put<'a>(
        &'a self,
        key: &'a K,
        lease: Option<&'a Lease>,
        entry: &'a Entry<V>,
        retain: Duration,
    ) -> BoxFuture<'a, Result<PutOutcome, RemoteError>>;

    /// Writes `entry` as an unconditional [`put`](Remote::put) does and, in
    /// the same atomic step, appends its write (the key, the entry's value,
    /// the version the write gives the key) to `queue` — unless `max_len`
    /// writes are queued already ([`QueueError::Full`], nothing written).
    /// Returns the version. So a write is in both or in neither, whenever the
    /// process or the store fails, and one round trip makes both.
    ///
    /// `None` when this store cannot append to `queue` in its own write
    /// (another kind of queue, another server, a cluster, where the two live
    /// in different slots): the caller writes, then pushes. The default.
    fn put_queued<'a>(
        &'a self,
        key: &'a K,
        entry: &'a Entry<V>,
        retain: Duration,
        queue: &'a dyn WriteQueue<K, V>,
        max_len: u64,
    ) -> Option<BoxFuture<'a, Result<u64, QueuedPutError>>> {
        let _ = (key, entry, retain, queue, max_len);
        None
    }

    /// Deletes the entry, marker and lease of `key`, advances its version (so no
    /// load in flight anywhere can store its now-outdated result) and announces
    /// it. Returns the new version.
    fn invalidate<'a>(&'a self, key: &'a K) -> BoxFuture<'a, Result<u64, RemoteError>>;

    /// How long a lease lasts unless renewed.
    fn lease_ttl(&self) -> Duration;

    /// Whether a holder renews its lease while loading (every third of the TTL).
    fn renews(&self) -> bool;

    /// The longest the change feed may go without confirming that it is
    /// current ([`ChangeListener::feed_current`]), when it confirms at all.
    /// With a bound, the core trusts no in-process copy, and joins no load,
    /// while the last confirmation is older than it: a process that was paused
    /// or starved with a notice unread never serves the copy it evicts
    /// longer than that after the change. `None` (the default): the feed's
    /// delivery is trusted as it comes.
    fn feed_bound(&self) -> Option<Duration> {
        None
    }

    /// Checks that the store answers and the change feed is live; the core's
    /// health probe calls it while degraded.
    fn ping(&self) -> BoxFuture<'_, Result<(), RemoteError>>;

    /// Registers a receiver of the change feed. Held weakly: a dropped cache
    /// stops receiving.
    fn listen(&self, listener: Weak<dyn ChangeListener<K>>);
}
