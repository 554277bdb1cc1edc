//! The fleet seam: a shared tier (L2) that every process reads and writes, and the
//! lease that decides which process may call the origin for a key.
//!
//! The core drives the protocol (see `load.rs`): L2 lookup → lease → re-check →
//! load while renewing → conditional write → release; a process that finds the
//! lease taken subscribes *before* its last re-check, then waits for the "ready"
//! notification with a bounded poll as a safety net, and takes the lease over when
//! it expires (the holder may have died). Implementations (the `herdguard-redis`
//! crate) supply the storage and messaging; any error makes the core degrade to
//! in-process single flight for a while, so a store outage never fails a caller.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::entry::Entry;
use crate::error::RemoteError;

/// A boxed, sendable future (the seam is used as a trait object).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Resolves when a "ready" notification for the subscribed key arrives (or the
/// subscription can no longer deliver one, in which case the safety poll takes over).
pub type Notified = BoxFuture<'static, ()>;

/// The fleet-wide right to load one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Unique per holder: release and renewal compare it, so nobody frees a lease
    /// they no longer hold.
    pub token: String,
    /// The key's version when the lease was granted (a fencing token): the write
    /// of this load succeeds only while the key is still at this version.
    pub version: u64,
}

/// What a conditional write did.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The entry was written and waiters were notified.
    Stored,
    /// The key changed since the lease was granted (invalidated or rewritten): the
    /// entry was not written, and the loaded value must not be kept as fresh.
    Superseded,
}

/// A shared store and lease coordinator for a fleet of processes.
pub trait Remote<K, V>: Send + Sync + 'static {
    /// The entry of `key`, if any (fresh or not).
    fn get<'a>(&'a self, key: &'a K) -> BoxFuture<'a, Result<Option<Entry<V>>, RemoteError>>;

    /// Tries to take the lease of `key`: `None` when another holder has it.
    fn try_lease<'a>(&'a self, key: &'a K) -> BoxFuture<'a, Result<Option<Lease>, RemoteError>>;

    /// Extends a held lease; `false` when it is no longer ours.
    fn renew<'a>(
        &'a self,
        key: &'a K,
        lease: &'a Lease,
    ) -> BoxFuture<'a, Result<bool, RemoteError>>;

    /// Gives a held lease back (only if it is still ours).
    fn release<'a>(
        &'a self,
        key: &'a K,
        lease: &'a Lease,
    ) -> BoxFuture<'a, Result<(), RemoteError>>;

    /// Subscribes to the "ready" notification of `key`. The subscription must be in
    /// place when the returned future resolves, so a re-check made after it cannot
    /// miss a write that lands in between.
    fn subscribe<'a>(&'a self, key: &'a K) -> BoxFuture<'a, Result<Notified, RemoteError>>;

    /// Writes `entry` and notifies the key's waiters. With a lease, the write is
    /// conditional: only if the key is still at `lease.version` (no invalidation
    /// and no other write since). Without one (an explicit insert), it always
    /// writes and bumps the version.
    fn put<'a>(
        &'a self,
        key: &'a K,
        lease: Option<&'a Lease>,
        entry: &'a Entry<V>,
    ) -> BoxFuture<'a, Result<PutOutcome, RemoteError>>;

    /// Deletes the entry of `key` and bumps its version, so no load in flight
    /// anywhere can store its now-outdated result.
    fn invalidate<'a>(&'a self, key: &'a K) -> BoxFuture<'a, Result<(), RemoteError>>;

    /// How often a holder renews its lease while loading (about a third of the
    /// lease TTL, so two renewals may fail before it lapses); `None` disables renewal.
    fn renew_interval(&self) -> Option<Duration>;

    /// The version to stamp on an entry that is written without a lease. Defaults
    /// to 0; the implementation may assign its own on `put`.
    fn unleased_version(&self) -> u64 {
        0
    }
}
