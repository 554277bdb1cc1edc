//! The leader's side of a load: the flight's own task, the origin call (through
//! the breaker, under `load_timeout`, panics caught), and the end of the flight
//! — what is kept in process, what every waiter receives, and what is done only
//! after they are woken.
//!
//! ```text
//! spawn_flight ─► produce ─┬─ shared store configured and healthy ─► fleet.rs
//!                          └─ otherwise ─► call_origin
//!              ─► finish: keep in L1 (unless superseded) ─► wake every waiter
//!              ─► after: give the lease back, start a background refresh
//! ```

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;

use crate::cache::{Inner, Negative};
use crate::clock::Timestamp;
use crate::entry::{Entry, EntryMeta, LOCAL_VERSIONS};
use crate::error::SharedError;
use crate::events;
use crate::flight::{Fate, Flight};
use crate::policy::{Loaded, Policy};
use crate::remote::{BoxFuture, Lease, Marker};
use crate::served::Served;

/// A loader, boxed once it is needed.
pub(crate) type BoxLoader<V> =
    Box<dyn FnOnce() -> BoxFuture<'static, Result<Loaded<V>, SharedError>> + Send>;

/// How a load ended, shared by the flight's leader and waiters.
pub(crate) enum Outcome<V> {
    /// A value.
    Value {
        entry: Arc<Entry<V>>,
        source: Source,
    },
    /// The origin's answer may not be shared: waiters load for themselves.
    Uncacheable(Arc<Entry<V>>),
    /// No value. `stale` is a copy from the shared store inside its
    /// stale-if-error window, which may stand in.
    Failed {
        failure: Failure,
        stale: Option<Arc<Entry<V>>>,
    },
}

/// Where a flight's value came from.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// This process called the origin.
    Origin,
    /// Another process's load, read from the shared store.
    Shared,
    /// An expired copy from the shared store, inside its stale-while-revalidate
    /// window; one background refresh follows.
    SharedStale,
    /// The in-process copy, current (no shared store, or nothing it could
    /// have missed).
    Memory,
    /// The in-process copy, served as it is because the shared store it was to
    /// be checked against is unreachable.
    Unconfirmed,
}

// By hand: a derive would demand `V: Clone`, but only the `Arc`s are cloned.
impl<V> Clone for Outcome<V> {
    fn clone(&self) -> Self {
        match self {
            Outcome::Value { entry, source } => Outcome::Value {
                entry: Arc::clone(entry),
                source: *source,
            },
            Outcome::Uncacheable(entry) => Outcome::Uncacheable(Arc::clone(entry)),
            Outcome::Failed { failure, stale } => Outcome::Failed {
                failure: failure.clone(),
                stale: stale.clone(),
            },
        }
    }
}

impl<V> Outcome<V> {
    pub(crate) fn failed(failure: Failure) -> Self {
        Outcome::Failed {
            failure,
            stale: None,
        }
    }
}

/// Why a load produced no value. Each maps to one [`Error`](crate::Error).
#[derive(Clone, Debug)]
pub(crate) enum Failure {
    /// The loader returned an error (or, from another process, reported one).
    Origin(SharedError),
    /// The loader panicked.
    Panicked,
    /// The load ran past `load_timeout` and was cancelled.
    TimedOut(Duration),
    /// The breaker refused the origin call.
    CircuitOpen,
    /// The load's task ended without a result.
    Abandoned,
}

impl Failure {
    /// What the processes waiting on this load's lease are told, if anything:
    /// a failure of the origin or of the loader, but not a local refusal (an
    /// open breaker here says nothing of the others').
    pub(crate) fn marker(&self) -> Option<Marker> {
        let text = match self {
            Failure::Origin(e) => e.to_string(),
            Failure::Panicked => "the loader panicked".to_string(),
            Failure::TimedOut(d) => format!("the load ran past its limit of {d:?}"),
            Failure::CircuitOpen | Failure::Abandoned => return None,
        };
        // Bounded: it is stored in the shared store and read by every waiter.
        Some(Marker::Failed(text.chars().take(200).collect()))
    }
}

/// Whether a produced value may be kept in process.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Keep {
    /// Yes: its version is the key's (fenced by the shared store: read from it,
    /// or written to it), or a version of this process alone.
    Fenced,
    /// Only if nothing changed the key elsewhere while the load ran: its version
    /// was never confirmed by the shared store (its write failed, or was too
    /// large), so no announced version can be compared with it.
    Unfenced,
    /// No: the shared store refused its write as superseded, or it is another
    /// flight's result, which that flight keeps or not.
    No,
}

/// What a leader produced: the outcome, and what to do with it.
pub(crate) struct Produced<V> {
    pub(crate) outcome: Outcome<V>,
    /// Whether the value may be kept in process.
    pub(crate) keep: Keep,
    /// When the value came from this flight's own origin call: what had
    /// happened to the key when the call began ([`Flight::changes`]). A call
    /// that began after every invalidation, insert and change the flight heard
    /// of is as new as they are, whatever its version.
    pub(crate) began_after: Option<(u64, u64)>,
    /// When the value was read from the shared store, or written there: the
    /// newest change elsewhere the flight had heard of when that read or
    /// write was sent. Nothing heard since, it is as new as every change
    /// heard of, whatever its version (a notice may carry none).
    pub(crate) confirmed_after: Option<u64>,
    /// A lease to give back once the waiters are woken, with the marker to leave.
    pub(crate) release: Option<(Lease, Option<(Marker, Duration)>)>,
    /// The loader, unused because a stale shared copy answered: it refreshes
    /// the key in the background once the waiters are woken.
    pub(crate) refresh_with: Option<BoxLoader<V>>,
}

/// One leader's load: what each of its steps needs to know.
pub(crate) struct Job<'a, K, V> {
    pub(crate) key: &'a K,
    /// The flight it produces for (detached once an invalidation, insert or
    /// change elsewhere came after it started).
    pub(crate) flight: &'a Arc<Flight<Outcome<V>>>,
    pub(crate) policy: &'a Policy,
    /// For a background refresh, when the entry it replaces was produced; for
    /// a forced revalidation, when it started: only a copy produced later
    /// answers it.
    pub(crate) replacing: Option<Timestamp>,
}

impl<V> From<Outcome<V>> for Produced<V> {
    fn from(outcome: Outcome<V>) -> Self {
        Produced {
            outcome,
            keep: Keep::Fenced,
            began_after: None,
            confirmed_after: None,
            release: None,
            refresh_with: None,
        }
    }
}

impl<K, V> Inner<K, V>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// Runs the leader's load as its own task, so no caller's cancellation stops it.
    pub(crate) fn spawn_flight(
        self: &Arc<Self>,
        key: K,
        flight: Arc<Flight<Outcome<V>>>,
        loader: BoxLoader<V>,
        policy: Policy,
        replacing: Option<Timestamp>,
    ) {
        let guard = FlightGuard {
            inner: Arc::clone(self),
            key,
            flight,
            done: false,
        };
        // Without a runtime the guard drops here and the flight ends as abandoned:
        // its waiters get an error rather than hang.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let inner = Arc::clone(&guard.inner);
                let key = guard.key.clone();
                let job = Job {
                    key: &key,
                    flight: &guard.flight,
                    policy: &policy,
                    replacing,
                };
                let mut produced = inner.produce(&job, loader).await;
                let release = produced.release.take();
                let refresh_with = produced.refresh_with.take();
                let answered = match &produced.outcome {
                    Outcome::Value { entry, .. } => Some(Arc::clone(entry)),
                    _ => None,
                };
                guard.finish(produced, &policy);
                // Only now, with every waiter woken: the lease, then the refresh.
                if let (Some((lease, marker)), Some(remote)) = (release, &inner.remote) {
                    let marker = marker.as_ref().map(|(m, ttl)| (m, *ttl));
                    if let Err(e) = remote.release(&key, &lease, marker).await {
                        // The lease expires by itself; others wait at most its TTL.
                        inner.remote_failed(&e);
                    }
                }
                if let (Some(loader), Some(seen)) = (refresh_with, answered) {
                    let now = inner.clock.now();
                    inner.refresh(&key, &seen, loader, policy, now);
                }
            });
        }
    }

    /// The leader's load: through the fleet when a shared store is configured
    /// and healthy, else straight to the origin.
    async fn produce(&self, job: &Job<'_, K, V>, loader: BoxLoader<V>) -> Produced<V> {
        match self.healthy_remote() {
            Some(remote) => self.fleet_load(remote.as_ref(), job, loader).await,
            None => self.local_load(job, loader).await,
        }
    }

    /// A load in this process alone (no shared store, or it is unreachable). A
    /// fresh in-process copy found here (one that was only waiting to be
    /// checked against the shared store after a change-feed interruption, or
    /// one an insert just stored) is served as it is rather than reloaded: with
    /// the store unreachable, nobody could have changed the key through it.
    /// A background refresh (`replacing`) always calls the origin.
    pub(crate) async fn local_load(
        &self,
        job: &Job<'_, K, V>,
        loader: BoxLoader<V>,
    ) -> Produced<V> {
        let now = self.clock.now();
        // With the store reachable (a value that loads in process), a copy
        // that may have missed a change is not served unchecked.
        let fresh = || {
            self.store
                .get(job.key)
                .filter(|e| e.is_fresh(now) && !self.suspect(e, now))
        };
        if let Some(entry) = job.replacing.is_none().then(fresh).flatten() {
            // Decided now: should the store answer again before the caller
            // wakes, the copy is still one nobody checked.
            let source = match self.served_from_memory() {
                Served::Unconfirmed => Source::Unconfirmed,
                _ => Source::Memory,
            };
            return Outcome::Value { entry, source }.into();
        }
        if let Some(newer) = self.newer_flight(job) {
            return Self::deferred(newer).await;
        }
        let version = self.next_version();
        self.origin_call(job, loader, version).await
    }

    /// The flight's own origin call, noting how far the key had changed
    /// elsewhere when it began ([`Produced::began_after`]).
    pub(crate) async fn origin_call(
        &self,
        job: &Job<'_, K, V>,
        loader: BoxLoader<V>,
        version: u64,
    ) -> Produced<V> {
        let seen = job.flight.changes();
        Produced {
            began_after: Some(seen),
            ..self.call_origin(loader, job.policy, version).await.into()
        }
    }

    /// The outcome of the newer flight, for this one's callers only: whether it
    /// may be kept is the newer flight's to decide (its write may have been
    /// refused, and its entry's version is then not the key's).
    pub(crate) async fn deferred(newer: Arc<Flight<Outcome<V>>>) -> Produced<V> {
        Produced {
            keep: Keep::No,
            ..newer.wait().await.into()
        }
    }

    /// The key's newest flight, when this one was detached (an invalidation,
    /// an insert or a change elsewhere came after it started) before calling
    /// the origin and a newer one runs: its callers may have either value, so
    /// they share the newer load rather than make one more origin call for a
    /// result nobody will keep. Of several detached flights, only the newest
    /// calls the origin.
    pub(crate) fn newer_flight(&self, job: &Job<'_, K, V>) -> Option<Arc<Flight<Outcome<V>>>> {
        if !job.flight.detached() {
            return None;
        }
        let newest = self.flights.newest(job.key)?;
        if Arc::ptr_eq(&newest, job.flight) {
            return None;
        }
        self.metrics.deferred.inc();
        Some(newest)
    }

    /// Calls the loader through the breaker, catching panics, under
    /// `load_timeout`, and builds the entry with `version`.
    pub(crate) async fn call_origin(
        &self,
        loader: BoxLoader<V>,
        policy: &Policy,
        version: u64,
    ) -> Outcome<V> {
        let permit = match &self.breaker {
            None => None,
            Some(breaker) => match breaker.try_acquire(self.clock.now()) {
                Some(permit) => Some(permit),
                None => {
                    self.metrics.circuit_rejections.inc();
                    return Outcome::failed(Failure::CircuitOpen);
                }
            },
        };
        self.metrics.loads.inc();
        let created = self.clock.now();
        // The copy is known current as of now, not as of its end: a change
        // notice lost while it loads (the feed down and back meanwhile) must
        // leave it suspect.
        let epoch = self.epoch();
        let started = Instant::now();
        // Both the call that makes the future and the future itself may panic.
        let call = async move {
            match std::panic::catch_unwind(AssertUnwindSafe(loader)) {
                Ok(future) => AssertUnwindSafe(future).catch_unwind().await,
                Err(panic) => Err(panic),
            }
        };
        // Past the limit the loader's future is dropped: a hung origin call is
        // cancelled, not left holding the key.
        let result = tokio::time::timeout(policy.load_timeout, call).await;
        self.metrics.load_duration.record(started.elapsed());
        let finished = self.clock.now();
        if let Some(permit) = permit {
            permit.report(finished, matches!(result, Ok(Ok(Ok(_)))));
        }
        match result {
            Ok(Ok(Ok(loaded))) => {
                let cacheable = loaded.cacheable;
                let entry =
                    Arc::new(self.entry_of(loaded, policy, created, finished, version, epoch));
                if cacheable {
                    Outcome::Value {
                        entry,
                        source: Source::Origin,
                    }
                } else {
                    self.metrics.uncacheable.inc();
                    Outcome::Uncacheable(entry)
                }
            }
            Ok(Ok(Err(error))) => {
                self.metrics.load_errors.inc();
                if let Some(suppressed) = self.log_limits.origin_errors.admit() {
                    tracing::warn!(
                        target: events::LOAD,
                        error = %error,
                        suppressed,
                        "origin call failed"
                    );
                }
                Outcome::failed(Failure::Origin(error))
            }
            Ok(Err(_panic)) => {
                self.metrics.load_panics.inc();
                Outcome::failed(Failure::Panicked)
            }
            Err(_elapsed) => {
                self.metrics.load_timeouts.inc();
                if let Some(suppressed) = self.log_limits.load_timeouts.admit() {
                    tracing::warn!(
                        target: events::LOAD,
                        load_timeout_ms =
                            u64::try_from(policy.load_timeout.as_millis()).unwrap_or(u64::MAX),
                        suppressed,
                        "load timed out"
                    );
                }
                Outcome::failed(Failure::TimedOut(policy.load_timeout))
            }
        }
    }

    /// The entry of a loaded value: its own freshness where it has one, else the
    /// policy's, with jitter; Δ measured on the cache's clock; stamped with the
    /// change-feed epoch of when its load began.
    fn entry_of(
        &self,
        loaded: Loaded<V>,
        policy: &Policy,
        created: Timestamp,
        finished: Timestamp,
        version: u64,
        epoch: u64,
    ) -> Entry<V> {
        let ttl = loaded
            .ttl
            .unwrap_or_else(|| policy.jittered_ttl(policy.ttl, self.random()));
        let mut entry = Entry::new(
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
        );
        entry.epoch = epoch;
        entry
    }
}

/// The leader's end of a flight. Finishing stores the result and wakes the
/// waiters; dropped unfinished (task cancelled, runtime shut down), it ends the
/// flight as abandoned, so no waiter ever hangs on a leader that vanished.
struct FlightGuard<K, V>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    inner: Arc<Inner<K, V>>,
    key: K,
    flight: Arc<Flight<Outcome<V>>>,
    done: bool,
}

impl<K, V> FlightGuard<K, V>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// Keeps what may be kept (under the flight table's lock, told what happened
    /// to the key meanwhile), then hands the outcome to every waiter.
    fn finish(mut self, produced: Produced<V>, policy: &Policy) {
        self.done = true;
        let inner = &self.inner;
        let key = &self.key;
        let publish = produced.outcome.clone();
        let panicked = inner.flights.complete(key, &self.flight, publish, |fate| {
            inner.keep(key, produced, fate, policy)
        });
        if panicked {
            inner.metrics.store_panics.inc();
        }
    }
}

impl<K, V> Inner<K, V>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// What a finished flight leaves in process. Runs under the flight table's
    /// lock, so no invalidation or change notice can slip between the check of
    /// the flight's fate and the store.
    fn keep(&self, key: &K, produced: Produced<V>, fate: Fate, policy: &Policy) {
        let Produced {
            outcome,
            keep,
            began_after,
            confirmed_after,
            ..
        } = produced;
        // An invalidation or insert here voids the value, unless it came from
        // this flight's own origin call begun after every one of them.
        let no_barrier_since = began_after.is_some_and(|(local, _)| local == fate.supersedes);
        if fate.superseded && !no_barrier_since {
            self.metrics.superseded.inc();
            return;
        }
        // Another process changed the key while this flight ran: the value is
        // current if its origin call, or the shared-store read or write that
        // confirmed it, came after every change heard of, or if the shared
        // store fenced it at that version or later (its own write's notice is
        // such a change).
        let no_change_since = began_after.is_some_and(|(_, remote)| remote == fate.changed_to)
            || confirmed_after == Some(fate.changed_to);
        let current = |entry: &Entry<V>, keep: Keep| match keep {
            Keep::No => false,
            _ if fate.changed_to == 0 || no_change_since => true,
            Keep::Fenced => {
                entry.meta().version < LOCAL_VERSIONS && entry.meta().version >= fate.changed_to
            }
            Keep::Unfenced => false,
        };
        let now = self.clock.now();
        match outcome {
            Outcome::Value { entry, .. } if keep != Keep::No => {
                if current(&entry, keep) {
                    self.store.insert(key.clone(), entry);
                } else {
                    self.metrics.superseded.inc();
                }
            }
            Outcome::Value { .. } => {}
            Outcome::Uncacheable(_) => {
                self.uncacheable
                    .insert(key.clone(), now.saturating_add(policy.uncacheable_ttl));
            }
            Outcome::Failed { failure, stale } => {
                if let (Failure::Origin(error), Some(negative), Some(ttl)) =
                    (failure, &self.negative, policy.negative_ttl)
                {
                    let until = now.saturating_add(ttl);
                    negative.insert(key.clone(), Negative { until, error });
                }
                // A stale shared copy that stood in is kept for the next callers
                // to stand in with too, unless the process has a copy of its own.
                if let Some(stale) = stale.filter(|s| current(s, Keep::Fenced)) {
                    if self.store.get(key).is_none() {
                        self.store.insert(key.clone(), stale);
                    }
                }
            }
        }
    }
}

impl<K, V> Drop for FlightGuard<K, V>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    fn drop(&mut self) {
        if !self.done {
            self.inner.flights.complete(
                &self.key,
                &self.flight,
                Outcome::failed(Failure::Abandoned),
                |_| (),
            );
        }
    }
}
