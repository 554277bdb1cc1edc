//! What a flight's leader does to produce a value: the data path of DESIGN.md.
//!
//! ```text
//! shared store (L2) ─fresh─► done
//!   ▼
//! lease ─taken─► subscribe, re-check L2, wait for "ready" (bounded) ─► loop
//!   ▼ ours
//! re-check L2 ─► origin through the breaker (renewing the lease) ─► conditional
//! write ─► release
//! ```
//!
//! Without a shared store only the origin step runs. Any shared-store error
//! degrades this load (and, for a short back-off, later ones) to the origin step.

use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;

use crate::cache::Inner;
use crate::entry::{Entry, EntryMeta};
use crate::error::{RemoteError, SharedError};
use crate::policy::{Loaded, Policy};
use crate::remote::{BoxFuture, Lease, PutOutcome, Remote};

/// A loader, boxed once it is needed.
pub(crate) type BoxLoader<V> =
    Box<dyn FnOnce() -> BoxFuture<'static, Result<Loaded<V>, SharedError>> + Send>;

/// How a load ended, shared by the flight's leader and waiters.
pub(crate) enum Outcome<V> {
    /// A value, from the origin or from the shared store.
    Value {
        entry: Arc<Entry<V>>,
        from_shared: bool,
    },
    /// The origin's answer may not be shared: waiters load for themselves.
    Uncacheable(Arc<Entry<V>>),
    /// No value.
    Failed(Failure),
}

// By hand: a derive would demand `V: Clone`, but only the `Arc`s are cloned.
impl<V> Clone for Outcome<V> {
    fn clone(&self) -> Self {
        match self {
            Outcome::Value { entry, from_shared } => Outcome::Value {
                entry: Arc::clone(entry),
                from_shared: *from_shared,
            },
            Outcome::Uncacheable(entry) => Outcome::Uncacheable(Arc::clone(entry)),
            Outcome::Failed(failure) => Outcome::Failed(failure.clone()),
        }
    }
}

/// Why a load produced no value.
#[derive(Clone, Debug)]
pub(crate) enum Failure {
    /// The loader returned an error.
    Origin(SharedError),
    /// The loader panicked.
    Panicked,
    /// The breaker refused the origin call.
    CircuitOpen,
    /// The load's task ended without a result.
    Abandoned,
}

/// A load's outcome and whether it may be kept in L1.
pub(crate) struct Produced<V> {
    pub(crate) outcome: Outcome<V>,
    /// False when the shared store refused the write as superseded.
    pub(crate) keep: bool,
}

impl<V> From<Outcome<V>> for Produced<V> {
    fn from(outcome: Outcome<V>) -> Self {
        Produced {
            outcome,
            keep: true,
        }
    }
}

impl<K, V> Inner<K, V>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// `replacing` is the creation time of the entry a background refresh replaces:
    /// the shared store's copy only counts when it is newer (an early refresh runs
    /// while the old copy is still fresh, in L2 too).
    pub(crate) async fn produce(
        &self,
        key: &K,
        loader: BoxLoader<V>,
        policy: &Policy,
        replacing: Option<crate::Timestamp>,
    ) -> Produced<V> {
        match self.healthy_remote() {
            Some(remote) => {
                self.fleet_load(remote.as_ref(), key, loader, policy, replacing)
                    .await
            }
            None => {
                let version = self.next_version();
                self.call_origin(loader, policy, version).await.into()
            }
        }
    }

    /// Calls the loader through the breaker, catching panics, and builds the entry.
    pub(crate) async fn call_origin(
        &self,
        loader: BoxLoader<V>,
        policy: &Policy,
        version: u64,
    ) -> Outcome<V> {
        let Some(permit) = self
            .breaker
            .as_ref()
            .map(|b| b.try_acquire(self.clock.now()))
        else {
            return self.run_loader(loader, policy, version, None).await;
        };
        match permit {
            Some(permit) => self.run_loader(loader, policy, version, Some(permit)).await,
            None => {
                self.metrics.circuit_rejections.inc();
                Outcome::Failed(Failure::CircuitOpen)
            }
        }
    }

    async fn run_loader(
        &self,
        loader: BoxLoader<V>,
        policy: &Policy,
        version: u64,
        permit: Option<crate::breaker::Permit<'_>>,
    ) -> Outcome<V> {
        self.metrics.loads.inc();
        let created = self.clock.now();
        let started = Instant::now();
        // Both the call that makes the future and the future itself may panic.
        let result = match std::panic::catch_unwind(AssertUnwindSafe(loader)) {
            Ok(future) => AssertUnwindSafe(future).catch_unwind().await,
            Err(panic) => Err(panic),
        };
        self.metrics.load_duration.record(started.elapsed());
        let finished = self.clock.now();
        let ok = matches!(result, Ok(Ok(_)));
        if let Some(permit) = permit {
            permit.report(finished, ok);
        }
        match result {
            Ok(Ok(loaded)) => {
                let cacheable = loaded.cacheable;
                let entry = Arc::new(self.entry_of(loaded, policy, created, finished, version));
                if cacheable {
                    Outcome::Value {
                        entry,
                        from_shared: false,
                    }
                } else {
                    self.metrics.uncacheable.inc();
                    Outcome::Uncacheable(entry)
                }
            }
            Ok(Err(error)) => {
                self.metrics.load_errors.inc();
                Outcome::Failed(Failure::Origin(error))
            }
            Err(_panic) => {
                self.metrics.load_panics.inc();
                Outcome::Failed(Failure::Panicked)
            }
        }
    }

    /// The entry of a loaded value: its own freshness where it has one, else the
    /// policy's, with jitter; Δ measured on the cache's clock.
    fn entry_of(
        &self,
        loaded: Loaded<V>,
        policy: &Policy,
        created: crate::Timestamp,
        finished: crate::Timestamp,
        version: u64,
    ) -> Entry<V> {
        let ttl = loaded
            .ttl
            .unwrap_or_else(|| policy.jittered_ttl(policy.ttl, self.random()));
        Entry::new(
            loaded.value,
            EntryMeta {
                created: finished,
                ttl,
                stale_while_revalidate: loaded
                    .stale_while_revalidate
                    .unwrap_or(policy.stale_while_revalidate),
                stale_if_error: loaded.stale_if_error.unwrap_or(policy.stale_if_error),
                load_duration: finished.saturating_duration_since(created),
                version,
            },
        )
    }

    /// The fleet protocol (module docs). Returns when a value exists or the
    /// origin was called here.
    async fn fleet_load(
        &self,
        remote: &dyn Remote<K, V>,
        key: &K,
        loader: BoxLoader<V>,
        policy: &Policy,
        replacing: Option<crate::Timestamp>,
    ) -> Produced<V> {
        let give_up_at = Instant::now() + self.fleet.wait_limit;
        loop {
            // 1. Someone in the fleet may have it already.
            match self.fresh_shared(remote, key, replacing).await {
                Ok(Some(outcome)) => return outcome.into(),
                Ok(None) => {}
                Err(e) => return self.degrade(e, loader, policy).await,
            }
            // 2. Try to become the fleet's loader of this key.
            let lease = match remote.try_lease(key).await {
                Ok(lease) => lease,
                Err(e) => return self.degrade(e, loader, policy).await,
            };
            if let Some(lease) = lease {
                return self
                    .load_under_lease(remote, key, &lease, loader, policy, replacing)
                    .await;
            }
            // 3. Another process loads it. Subscribe first, then re-check, so a
            // write landing between the two cannot go unnoticed.
            let notified = match remote.subscribe(key).await {
                Ok(n) => n,
                Err(e) => return self.degrade(e, loader, policy).await,
            };
            match self.fresh_shared(remote, key, replacing).await {
                Ok(Some(outcome)) => return outcome.into(),
                Ok(None) => {}
                Err(e) => return self.degrade(e, loader, policy).await,
            }
            let now = Instant::now();
            if now >= give_up_at {
                // The holder keeps its lease alive but never delivers: stop
                // waiting on it and load here.
                let version = self.next_version();
                return self.call_origin(loader, policy, version).await.into();
            }
            // 4. Wait for "ready"; the poll is only a safety net for a lost message.
            let wait = self.fleet.poll_interval.min(give_up_at - now);
            let _ = tokio::time::timeout(wait, notified).await;
            // Loop: re-check L2, then try the lease again — it is free if the
            // holder finished without a value or died and the lease expired.
        }
    }

    async fn fresh_shared(
        &self,
        remote: &dyn Remote<K, V>,
        key: &K,
        replacing: Option<crate::Timestamp>,
    ) -> Result<Option<Outcome<V>>, RemoteError> {
        let now = self.clock.now();
        let newer = |e: &Entry<V>| replacing.is_none_or(|old| e.meta().created > old);
        Ok(remote
            .get(key)
            .await?
            .filter(|e| e.is_fresh(now) && newer(e))
            .map(|e| {
                self.metrics.l2_hits.inc();
                Outcome::Value {
                    entry: Arc::new(e),
                    from_shared: true,
                }
            }))
    }

    async fn load_under_lease(
        &self,
        remote: &dyn Remote<K, V>,
        key: &K,
        lease: &Lease,
        loader: BoxLoader<V>,
        policy: &Policy,
        replacing: Option<crate::Timestamp>,
    ) -> Produced<V> {
        // Re-check after acquiring: the previous holder may have just written it.
        match self.fresh_shared(remote, key, replacing).await {
            Ok(Some(outcome)) => {
                self.release(remote, key, lease).await;
                return outcome.into();
            }
            Ok(None) => {}
            Err(e) => {
                self.release(remote, key, lease).await;
                return self.degrade(e, loader, policy).await;
            }
        }
        let outcome = self
            .renewing(
                remote,
                key,
                lease,
                self.call_origin(loader, policy, lease.version),
            )
            .await;
        let mut keep = true;
        if let Outcome::Value { entry, .. } = &outcome {
            match remote.put(key, Some(lease), entry).await {
                Ok(PutOutcome::Stored) => {}
                Ok(PutOutcome::Superseded) => {
                    // Invalidated or rewritten elsewhere while we loaded: our value
                    // goes to our waiters but is not kept as fresh anywhere.
                    self.metrics.superseded.inc();
                    keep = false;
                }
                Err(RemoteError::TooLarge { .. }) => self.metrics.remote_errors.inc(),
                Err(e) => self.remote_failed(&e),
            }
        }
        self.release(remote, key, lease).await;
        Produced { outcome, keep }
    }

    /// Runs `load` while renewing the lease every `renew_interval`. A lost lease
    /// does not stop the load: the lease is for efficiency, the fenced write is
    /// what keeps an outdated value out.
    async fn renewing(
        &self,
        remote: &dyn Remote<K, V>,
        key: &K,
        lease: &Lease,
        load: impl std::future::Future<Output = Outcome<V>>,
    ) -> Outcome<V> {
        let Some(every) = remote.renew_interval() else {
            return load.await;
        };
        let mut load = pin!(load);
        let mut renewing = true;
        loop {
            tokio::select! {
                outcome = &mut load => return outcome,
                _ = tokio::time::sleep(every), if renewing => {
                    match remote.renew(key, lease).await {
                        Ok(true) => {}
                        Ok(false) => renewing = false,
                        Err(e) => {
                            self.remote_failed(&e);
                            renewing = false;
                        }
                    }
                }
            }
        }
    }

    async fn release(&self, remote: &dyn Remote<K, V>, key: &K, lease: &Lease) {
        if let Err(e) = remote.release(key, lease).await {
            // The lease expires by itself; others wait at most its TTL.
            self.remote_failed(&e);
        }
    }

    async fn degrade(
        &self,
        error: RemoteError,
        loader: BoxLoader<V>,
        policy: &Policy,
    ) -> Produced<V> {
        self.remote_failed(&error);
        let version = self.next_version();
        self.call_origin(loader, policy, version).await.into()
    }
}

/// Fleet settings of a cache with a shared store.
#[derive(Clone, Debug)]
pub(crate) struct FleetSettings {
    /// After a shared-store error, how long to skip it (in-process only) before
    /// trying again.
    pub(crate) retry_after: Duration,
    /// The safety-net poll of a process waiting on another's lease.
    pub(crate) poll_interval: Duration,
    /// How long a process waits on another's lease before loading itself.
    pub(crate) wait_limit: Duration,
}

impl Default for FleetSettings {
    fn default() -> Self {
        FleetSettings {
            retry_after: Duration::from_secs(1),
            poll_interval: Duration::from_millis(250),
            wait_limit: Duration::from_secs(30),
        }
    }
}
