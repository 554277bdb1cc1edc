//! The fleet protocol: how a leader uses the shared store so that the whole
//! fleet makes one origin call per key.
//!
//! ```text
//! shared store (L2) ─fresh─► done        ─stale, in its SWR window─► serve it, refresh after
//!   │ a marker left by the last holder: failed ─► fail fast (or stale) if we waited on it
//!   │                                   uncacheable ─► everyone to the origin, in parallel
//!   │                                   local-only ─► load in process, no lease
//!   ▼
//! lease ─taken─► watch, re-check L2, wait for a change (bounded poll) ─► loop
//!   ▼ ours (granting it advanced the key's version — our fencing token — and
//!   │ cleared the last holder's marker: a new load speaks for the key now)
//! re-check L2, unless the grant saw the entry the read found (or none, as
//! the read did) ─► origin through the breaker, renewing the lease ─►
//! fenced write (also gives the lease back), or on failure a release that
//! leaves the failure's marker — both before the local waiters are woken; an
//! uncacheable or unshareable answer's release (with its marker) after them
//! ```
//!
//! A lock is for efficiency, not correctness: the write is what must never be
//! stale. It succeeds only while the key is still at the version the lease was
//! granted at; every grant, write and invalidation advances it, so a holder
//! whose lease lapsed (paused, slow) is refused whether it writes before or
//! after the process that took over.
//!
//! Any shared-store error that concerns the store as a whole degrades this load
//! (and later ones, until the health probe sees the store answer) to the
//! in-process load of `load.rs`; an undecodable entry is a miss for its key only.

use std::pin::pin;

use futures_util::future::OptionFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cache::Inner;
use crate::entry::Entry;
use crate::error::{FleetLoadFailed, RemoteError};
use crate::events;
use crate::load::{BoxLoader, Failure, Job, Keep, Outcome, Produced, Source};
use crate::remote::{AtGrant, Lease, Marker, PutOutcome, Remote};

/// Fleet settings of a cache with a shared store.
#[derive(Clone, Debug)]
pub(crate) struct FleetSettings {
    /// While degraded, how often the background probe pings the shared store.
    pub(crate) probe_interval: Duration,
    /// The safety-net poll of a process waiting on another's lease.
    pub(crate) poll_interval: Duration,
    /// How long a process waits on another's lease before loading itself;
    /// `None`: the load timeout plus five seconds (a holder whose load hangs is
    /// cancelled at its load timeout and gives the lease back before that).
    pub(crate) wait_limit: Option<Duration>,
    /// How long a failed load's outcome stays in the shared store for the
    /// processes that waited on it (longer when negative caching is on).
    pub(crate) failure_ttl: Duration,
    /// The shared store's [`Remote::feed_bound`], read once at build.
    pub(crate) feed_bound: Option<Duration>,
}

impl Default for FleetSettings {
    fn default() -> Self {
        FleetSettings {
            probe_interval: Duration::from_millis(200),
            poll_interval: Duration::from_millis(250),
            wait_limit: None,
            failure_ttl: Duration::from_secs(1),
            feed_bound: None,
        }
    }
}

/// A load's wait on another process's lease.
#[derive(Default)]
struct LeaseWait {
    /// When it first found the lease taken; `None` once the wait is accounted.
    since: Option<Instant>,
}

/// A lease this process was granted, and what it knows of the key then.
struct UnderLease {
    lease: Lease,
    /// The version of the entry the read before the grant found, if any.
    seen: Option<u64>,
    /// Whether this load waited on another process's lease before the grant.
    waited: bool,
}

/// What the shared store says about a key, as the protocol acts on it.
enum Found<V> {
    /// An answer: a fresh copy, or a stale one inside its stale-while-revalidate
    /// window; and the newest change elsewhere the flight had heard of when
    /// the read was sent ([`Produced::confirmed_after`]).
    Answer(Outcome<V>, u64),
    /// The last holder's load failed, and this process waited on it (or
    /// negatively caches failures): fail as its waiters would.
    Failed(Failure),
    /// The last answer may not be shared: every caller goes to the origin.
    Uncacheable,
    /// The value cannot be shared: load in process, without the lease.
    LocalOnly,
    /// Nothing to act on: go on with the lease.
    Nothing,
}

impl<K, V> Inner<K, V>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// The protocol (module docs). Returns when a value exists, the origin was
    /// called here, or the fleet's outcome was taken over.
    pub(crate) async fn fleet_load(
        &self,
        remote: &dyn Remote<K, V>,
        job: &Job<'_, K, V>,
        loader: BoxLoader<V>,
    ) -> Produced<V> {
        let wait_limit = self
            .fleet
            .wait_limit
            .unwrap_or(job.policy.load_timeout + Duration::from_secs(5));
        let give_up_at = Instant::now() + wait_limit;
        // A stale shared copy inside its stale-if-error window, should the load fail.
        let mut fallback = None;
        // The version of the entry the last read found, if any.
        let mut seen = None;
        let mut waited = false;
        // Since when this load has waited on another process's lease.
        let mut wait = LeaseWait::default();
        loop {
            // 1. What the fleet has, or left.
            let read = self.read_shared(remote, job, waited, &mut fallback, &mut seen);
            match read.await {
                Ok(Found::Nothing) => {}
                Ok(found) => {
                    self.end_wait(&mut wait, &found);
                    return self.settle(found, job, loader, fallback).await;
                }
                Err(e) => {
                    self.end_wait(&mut wait, &Found::Nothing);
                    return self.degraded_load(e, job, loader).await;
                }
            }
            // 2. Try to become the fleet's loader of this key.
            match remote.try_lease(job.key).await {
                Ok(Some(lease)) => {
                    let waited_for_it = wait.since.is_some();
                    self.end_wait(&mut wait, &Found::Nothing);
                    self.metrics.leases_acquired.inc();
                    if lease.taken_over {
                        self.metrics.lease_takeovers.inc();
                        tracing::warn!(
                            target: events::FLEET,
                            key_hash = %events::key_hash(job.key),
                            version = lease.version,
                            "lease taken over after expiry"
                        );
                    }
                    let under = UnderLease {
                        lease,
                        seen,
                        waited: waited_for_it,
                    };
                    return self
                        .load_under_lease(remote, job, under, loader, fallback)
                        .await;
                }
                Ok(None) => {}
                Err(e) => {
                    self.end_wait(&mut wait, &Found::Nothing);
                    return self.degraded_load(e, job, loader).await;
                }
            }
            if wait.since.is_none() {
                wait.since = Some(Instant::now());
                self.metrics.lease_waits.inc();
            }
            // 3. Another process loads it. Watch first, then re-check, so a write
            // landing between the two cannot go unnoticed.
            let changed = remote.watch(job.key);
            let read = self.read_shared(remote, job, waited, &mut fallback, &mut seen);
            match read.await {
                Ok(Found::Nothing) => {}
                Ok(found) => {
                    self.end_wait(&mut wait, &found);
                    return self.settle(found, job, loader, fallback).await;
                }
                Err(e) => {
                    self.end_wait(&mut wait, &Found::Nothing);
                    return self.degraded_load(e, job, loader).await;
                }
            }
            let now = Instant::now();
            if now >= give_up_at {
                // The holder keeps its lease alive but never delivers: stop
                // waiting on it and load here (without writing: no lease).
                self.end_wait(&mut wait, &Found::Nothing);
                self.metrics.lease_wait_limits.inc();
                self.metrics.duplicate_loads.inc();
                tracing::warn!(
                    target: events::FLEET,
                    key_hash = %events::key_hash(job.key),
                    wait_limit_ms = u64::try_from(wait_limit.as_millis()).unwrap_or(u64::MAX),
                    "lease wait limit reached"
                );
                let version = self.next_version();
                return self.origin_call(job, loader, version).await;
            }
            // 4. Wait for a change; the poll is only a safety net for a lost notice.
            let poll = self.fleet.poll_interval.min(give_up_at - now);
            let _ = tokio::time::timeout(poll, changed).await;
            waited = true;
            // Loop: re-check L2, then try the lease again — it is free if the
            // holder finished without a value or died and the lease expired.
        }
    }

    /// Ends a wait on another process's lease, if one began: its time, and
    /// whether the holder's value answered it.
    fn end_wait(&self, wait: &mut LeaseWait, found: &Found<V>) {
        let Some(since) = wait.since.take() else {
            return;
        };
        self.metrics.lease_wait_time.record(since.elapsed());
        if matches!(found, Found::Answer(..)) {
            self.metrics.lease_wait_answers.inc();
        }
    }

    /// Reads the key's entry and marker in one round trip and decides;
    /// `seen` becomes the version of the entry read (`None`: none, or one
    /// that does not decode).
    async fn read_shared(
        &self,
        remote: &dyn Remote<K, V>,
        job: &Job<'_, K, V>,
        waited: bool,
        fallback: &mut Option<Arc<Entry<V>>>,
        seen: &mut Option<u64>,
    ) -> Result<Found<V>, RemoteError> {
        // The epoch before the read: should the change feed drop while the
        // answer is in flight, the copy is checked again before it is served.
        let epoch = self.epoch();
        // And the changes heard of before it: one heard later may be newer
        // than what the read returns.
        let heard = job.flight.changes().1;
        let shared = match remote.get(job.key).await {
            Ok(shared) => shared,
            Err(RemoteError::Codec(_)) => {
                // Bytes this build cannot read (another release, another
                // program): a miss for this key, overwritten by our write.
                self.metrics.undecodable.inc();
                if let Some(suppressed) = self.log_limits.undecodable.admit() {
                    tracing::warn!(
                        target: events::FLEET,
                        key_hash = %events::key_hash(job.key),
                        suppressed,
                        "undecodable entry"
                    );
                }
                Default::default()
            }
            Err(e) => return Err(e),
        };
        let now = self.clock.now();
        *seen = shared.entry.as_ref().map(|e| e.meta().version);
        if let Some(mut entry) = shared.entry {
            entry.epoch = epoch;
            // An early refresh runs while the old copy is still fresh, in L2
            // too: only a newer copy answers it.
            let newer = job.replacing.is_none_or(|old| entry.meta().created > old);
            if newer && entry.is_fresh(now) {
                self.metrics.l2_hits.inc();
                return Ok(Found::Answer(
                    Outcome::Value {
                        entry: Arc::new(entry),
                        source: Source::Shared,
                    },
                    heard,
                ));
            }
            if job.replacing.is_none() {
                let entry = Arc::new(entry);
                if now < entry.revalidate_until() {
                    self.metrics.shared_stale.inc();
                    return Ok(Found::Answer(
                        Outcome::Value {
                            entry,
                            source: Source::SharedStale,
                        },
                        heard,
                    ));
                }
                if entry.usable_on_error(now) {
                    *fallback = Some(entry);
                }
            }
        }
        Ok(match shared.marker {
            Some(Marker::Uncacheable) => Found::Uncacheable,
            Some(Marker::LocalOnly) => Found::LocalOnly,
            Some(Marker::Failed(text)) if waited || job.policy.negative_ttl.is_some() => {
                Found::Failed(Failure::Origin(Arc::new(FleetLoadFailed(text))))
            }
            _ => Found::Nothing,
        })
    }

    /// Acts on what the shared store said, without the lease.
    async fn settle(
        &self,
        found: Found<V>,
        job: &Job<'_, K, V>,
        loader: BoxLoader<V>,
        fallback: Option<Arc<Entry<V>>>,
    ) -> Produced<V> {
        match found {
            Found::Answer(outcome, heard) => {
                let stale = matches!(
                    outcome,
                    Outcome::Value {
                        source: Source::SharedStale,
                        ..
                    }
                );
                Produced {
                    refresh_with: stale.then_some(loader),
                    confirmed_after: Some(heard),
                    ..outcome.into()
                }
            }
            Found::Failed(failure) => {
                self.metrics.fleet_outcomes.inc();
                Outcome::Failed {
                    failure,
                    stale: fallback,
                }
                .into()
            }
            Found::Uncacheable => {
                // Hit-for-miss, fleet-wide: this caller goes to the origin now
                // and its waiters follow, each for itself.
                self.metrics.fleet_outcomes.inc();
                let version = self.next_version();
                match self.call_origin(loader, job.policy, version).await {
                    Outcome::Value { entry, .. } => Outcome::Uncacheable(entry).into(),
                    other => other.into(),
                }
            }
            Found::LocalOnly => {
                self.metrics.fleet_outcomes.inc();
                self.local_load(job, loader).await
            }
            Found::Nothing => self.local_load(job, loader).await,
        }
    }

    async fn load_under_lease(
        &self,
        remote: &dyn Remote<K, V>,
        job: &Job<'_, K, V>,
        under: UnderLease,
        loader: BoxLoader<V>,
        mut fallback: Option<Arc<Entry<V>>>,
    ) -> Produced<V> {
        let key = job.key;
        let UnderLease {
            lease,
            seen,
            waited,
        } = under;
        // Re-check after acquiring: the previous holder may have just written
        // it — unless the grant saw the entry the read found, or none as the
        // read did: then nobody wrote in between, and the read still speaks.
        let unchanged = match lease.at_grant {
            AtGrant::Missing => seen.is_none(),
            AtGrant::Entry(version) => seen == Some(version),
            AtGrant::Unknown => false,
        };
        let reread = if unchanged {
            Ok(Found::Nothing)
        } else {
            let mut seen = None;
            self.read_shared(remote, job, false, &mut fallback, &mut seen)
                .await
        };
        match reread {
            // Only a fresh copy: for a stale one, we hold the lease, so we refresh.
            Ok(Found::Answer(
                outcome @ Outcome::Value {
                    source: Source::Shared,
                    ..
                },
                heard,
            )) => {
                if waited {
                    // The previous holder wrote it just before giving the lease up.
                    self.metrics.lease_wait_answers.inc();
                }
                return Produced {
                    release: Some((lease, None)),
                    confirmed_after: Some(heard),
                    ..outcome.into()
                };
            }
            Ok(_) => {}
            Err(e) => return self.degraded_load(e, job, loader).await,
        }
        if let Some(newer) = self.newer_flight(job) {
            // Superseded before calling the origin: give the lease back first
            // (the newer flight may be waiting for it), then share its load.
            if let Err(e) = remote.release(key, &lease, None).await {
                self.remote_failed(&e);
            }
            return Self::deferred(newer).await;
        }
        // Provisional: past the lease's version, so no notice older than the
        // grant evicts it; a stored write gives it its real version below.
        let version = lease.version + 1;
        if lease.taken_over {
            // The previous holder may have called the origin for it too.
            self.metrics.duplicate_loads.inc();
        }
        let began_after = Some(job.flight.changes());
        let load = self.call_origin(loader, job.policy, version);
        let outcome = self.renewing(remote, key, &lease, load).await;
        match outcome {
            Outcome::Value { mut entry, source } => {
                let retain = self.retain(&entry);
                // A change heard of from here on may be newer than the write.
                let heard = job.flight.changes().1;
                let mut confirmed_after = None;
                let (keep, release) = match remote.put(key, Some(&lease), &entry, retain).await {
                    // The write gave the lease back too. The copy takes the
                    // version the write gave the key (a store may skip ahead,
                    // e.g. to its clock), so its own change notice does not
                    // evict it from this process; nobody else holds it yet.
                    Ok(PutOutcome::Stored { version }) => match Arc::get_mut(&mut entry) {
                        Some(own) => {
                            own.meta.version = version;
                            confirmed_after = Some(heard);
                            (Keep::Fenced, None)
                        }
                        None => (Keep::Unfenced, None),
                    },
                    Ok(PutOutcome::Superseded) => {
                        // Invalidated, rewritten or leased again elsewhere while
                        // we loaded: our waiters get the value, nobody keeps it.
                        self.metrics.superseded.inc();
                        tracing::info!(
                            target: events::FLEET,
                            key_hash = %events::key_hash(key),
                            version = lease.version,
                            "write refused by fencing"
                        );
                        (Keep::No, None)
                    }
                    Err(e @ (RemoteError::TooLarge { .. } | RemoteError::Codec(_))) => {
                        // Not shareable: the fleet loads it per process meanwhile.
                        self.remote_failed(&e);
                        let marker = Some((Marker::LocalOnly, retain));
                        (Keep::Unfenced, Some((lease, marker)))
                    }
                    Err(e) => {
                        // Unconfirmed: kept only if nothing changed the key meanwhile.
                        self.remote_failed(&e);
                        (Keep::Unfenced, None)
                    }
                };
                Produced {
                    outcome: Outcome::Value { entry, source },
                    keep,
                    began_after,
                    confirmed_after,
                    release,
                    refresh_with: None,
                }
            }
            Outcome::Uncacheable(entry) => Produced {
                release: Some((
                    lease,
                    Some((Marker::Uncacheable, job.policy.uncacheable_ttl)),
                )),
                ..Outcome::Uncacheable(entry).into()
            },
            Outcome::Failed { failure, .. } => {
                let ttl = job
                    .policy
                    .negative_ttl
                    .map_or(self.fleet.failure_ttl, |n| n.max(self.fleet.failure_ttl));
                // Given back, with the failure's marker, before any caller
                // learns of it (as a value is written before): a call that
                // starts after this error was returned, anywhere in the fleet,
                // finds the lease free and loads again. The processes that
                // waited on this load meanwhile fail fast on the marker.
                let marker = failure.marker();
                let left = marker.as_ref().map(|m| (m, ttl));
                if let Err(e) = remote.release(key, &lease, left).await {
                    // The lease expires by itself; others wait at most its TTL.
                    self.remote_failed(&e);
                }
                Outcome::Failed {
                    failure,
                    stale: fallback,
                }
                .into()
            }
        }
    }

    /// Runs `load` while renewing the lease every third of its TTL. A failed
    /// renewal is retried until the lease would really have lapsed (counted
    /// from before the last renewal that succeeded); only then is it lost. A
    /// lost lease does not stop the load: the fenced write decides.
    async fn renewing(
        &self,
        remote: &dyn Remote<K, V>,
        key: &K,
        lease: &Lease,
        load: impl std::future::Future<Output = Outcome<V>>,
    ) -> Outcome<V> {
        if !remote.renews() {
            return load.await;
        }
        let ttl = remote.lease_ttl();
        let every = ttl / 3;
        let mut load = pin!(load);
        let mut lapses_at = Instant::now() + ttl;
        let mut next = Instant::now() + every;
        let mut renewing = true;
        // The renewal in flight, if any: polled beside the load, so a slow Redis
        // never delays noticing that the load is done.
        let mut renewal = None;
        let mut sent = Instant::now();
        loop {
            tokio::select! {
                outcome = &mut load => return outcome,
                _ = tokio::time::sleep_until(next.into()), if renewing && renewal.is_none() => {
                    sent = Instant::now();
                    renewal = Some(remote.renew(key, lease));
                }
                Some(result) = OptionFuture::from(renewal.as_mut()), if renewal.is_some() => {
                    renewal = None;
                    match result {
                        Ok(true) => {
                            lapses_at = sent + ttl;
                            next = Instant::now() + every;
                        }
                        Ok(false) => {
                            self.lease_lost(key, "taken by another process or invalidated");
                            renewing = false;
                        }
                        Err(_) => {
                            self.metrics.renew_errors.inc();
                            let now = Instant::now();
                            if now >= lapses_at {
                                self.lease_lost(key, "renewals failed until it lapsed");
                                renewing = false;
                            } else {
                                // Retry soon, while the lease still holds.
                                let left = lapses_at - now;
                                next = now + (left / 2).min(every).max(Duration::from_millis(5));
                            }
                        }
                    }
                }
            }
        }
    }

    fn lease_lost(&self, key: &K, why: &'static str) {
        self.metrics.leases_lost.inc();
        tracing::warn!(
            target: events::FLEET,
            key_hash = %events::key_hash(key),
            why,
            "lease lost while loading"
        );
    }

    /// The shared store failed as a whole: degrade, and load in process.
    async fn degraded_load(
        &self,
        error: RemoteError,
        job: &Job<'_, K, V>,
        loader: BoxLoader<V>,
    ) -> Produced<V> {
        self.remote_failed(&error);
        self.local_load(job, loader).await
    }

    /// How long the shared store keeps `entry`: to the end of its last stale
    /// window, on the cache's clock (at least 1 ms).
    pub(crate) fn retain(&self, entry: &Entry<V>) -> Duration {
        let meta = entry.meta();
        let end = entry
            .expires_at()
            .saturating_add(meta.stale_while_revalidate.max(meta.stale_if_error));
        end.saturating_duration_since(self.clock.now())
            .max(Duration::from_millis(1))
    }
}
