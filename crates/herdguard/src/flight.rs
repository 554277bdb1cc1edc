//! The single-flight table: at most one load per key in this process.
//!
//! A [`Flight`] is one load in progress. The first caller of a missing key becomes
//! its *leader* and the load is started for it; every later caller of the same key
//! *waits* on the same flight and receives a clone of its outcome.
//!
//! Nothing outlives a load: the table holds a flight only while it runs, and the
//! flight is removed in the same critical section that stores its result, so no
//! per-key lock objects pile up and no collector thread is needed.
//!
//! Waiters park their [`Waker`] in the flight; publishing the outcome takes all the
//! wakers under the lock and wakes them after releasing it, so 10,000 waiters cost
//! one lock hold plus 10,000 cheap wakes.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crossbeam_utils::CachePadded;

use crate::sync::{AtomicBool, Mutex, Ordering};

/// Number of independently locked shards; a power of two.
#[cfg(not(herdguard_shuttle))]
const SHARDS: usize = 64;
/// Under the model checker every lock is a scheduling point: keep the table small.
#[cfg(herdguard_shuttle)]
const SHARDS: usize = 2;

type Shard<K, T> = CachePadded<Mutex<HashMap<K, Arc<Flight<T>>>>>;

/// The in-flight table of one cache.
pub(crate) struct Flights<K, T> {
    shards: Box<[Shard<K, T>]>,
    hasher: RandomState,
}

/// What a caller became when it asked for a key.
pub(crate) enum Join<T, R> {
    /// No load was running: this caller must start one and then complete it.
    Leader(Arc<Flight<T>>),
    /// A load was already running: wait on it.
    Waiter(Arc<Flight<T>>),
    /// The re-check under the lock found what the caller needs (another caller
    /// finished a load between the caller's lookup and its arrival here).
    Settled(R),
}

impl<K: Hash + Eq + Clone, T: Clone> Flights<K, T> {
    pub(crate) fn new() -> Self {
        Flights {
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(Mutex::new(HashMap::new())))
                .collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &K) -> &Shard<K, T> {
        // SHARDS is a power of two, so the mask keeps the index in range.
        let index = (self.hasher.hash_one(key) as usize) & (SHARDS - 1);
        &self.shards[index]
    }

    /// Joins the running flight of `key`, or, when none runs, asks `recheck` (under
    /// the shard lock) whether the caller still needs one, and if so starts it.
    ///
    /// The re-check must happen under the same lock that [`Flights::complete`]
    /// holds while it stores a result and removes the flight; otherwise a caller
    /// that missed just before the store would arrive just after the removal and
    /// start a second load.
    pub(crate) fn join<R>(&self, key: &K, recheck: impl FnOnce() -> Option<R>) -> Join<T, R> {
        let mut shard = self.shard(key).lock();
        if let Some(flight) = shard.get(key) {
            return Join::Waiter(Arc::clone(flight));
        }
        if let Some(settled) = recheck() {
            return Join::Settled(settled);
        }
        let flight = Arc::new(Flight::new());
        shard.insert(key.clone(), Arc::clone(&flight));
        Join::Leader(flight)
    }

    /// Ends `flight`: runs `store` (told whether the flight was superseded by an
    /// invalidation or insert while it ran), removes the flight from the table and
    /// hands `outcome` to every waiter.
    pub(crate) fn complete(
        &self,
        key: &K,
        flight: &Arc<Flight<T>>,
        outcome: T,
        store: impl FnOnce(bool),
    ) {
        {
            let mut shard = self.shard(key).lock();
            store(flight.superseded.load(Ordering::SeqCst));
            if shard.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
                shard.remove(key);
            }
        }
        flight.publish(outcome);
    }

    /// Runs `change` (an invalidation or insert of `key`) under the shard lock and
    /// marks the running flight of `key`, if any, as superseded, so its result is
    /// handed to its waiters but not stored.
    pub(crate) fn supersede<R>(&self, key: &K, change: impl FnOnce() -> R) -> R {
        let shard = self.shard(key).lock();
        let result = change();
        if let Some(flight) = shard.get(key) {
            flight.superseded.store(true, Ordering::SeqCst);
        }
        result
    }

    /// Number of loads running now.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

/// One load in progress and the callers waiting for it.
pub(crate) struct Flight<T> {
    /// Set once, before the wakers are taken: a woken waiter reads it without the
    /// lock (10,000 waiters woken at once would otherwise queue on the mutex).
    published: std::sync::OnceLock<T>,
    state: Mutex<State>,
    superseded: AtomicBool,
}

struct State {
    /// Parked waiters; a slot is emptied when its waiter is dropped.
    wakers: Vec<Option<Waker>>,
}

impl<T: Clone> Flight<T> {
    fn new() -> Self {
        Flight {
            published: std::sync::OnceLock::new(),
            state: Mutex::new(State { wakers: Vec::new() }),
            superseded: AtomicBool::new(false),
        }
    }

    /// Sets the outcome (the first one wins) and wakes every waiter.
    fn publish(&self, outcome: T) {
        if self.published.set(outcome).is_err() {
            return;
        }
        // A waiter that checked `published` before the set registers under the lock
        // and re-checks there, so taking the wakers under the lock loses none.
        let wakers = std::mem::take(&mut self.state.lock().wakers);
        // Woken outside the lock: each woken task immediately locks the state to
        // read the outcome, and must not find it held by us.
        for waker in wakers.into_iter().flatten() {
            waker.wake();
        }
    }

    /// The outcome, once published.
    #[cfg(test)]
    pub(crate) fn outcome(&self) -> Option<T> {
        self.published.get().cloned()
    }

    /// A future that resolves to a clone of the outcome.
    pub(crate) fn wait(self: &Arc<Self>) -> Wait<T> {
        Wait {
            flight: Arc::clone(self),
            slot: None,
        }
    }
}

/// Waits for a flight's outcome. Dropping it (a cancelled caller) only removes this
/// waiter; the load goes on for the others.
pub(crate) struct Wait<T: Clone> {
    flight: Arc<Flight<T>>,
    slot: Option<usize>,
}

impl<T: Clone> Future for Wait<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = &mut *self;
        if let Some(outcome) = this.flight.published.get() {
            // Our waker slot was emptied by `publish`: nothing to deregister on drop.
            this.slot = None;
            return Poll::Ready(outcome.clone());
        }
        let mut state = this.flight.state.lock();
        if let Some(outcome) = this.flight.published.get() {
            this.slot = None;
            return Poll::Ready(outcome.clone());
        }
        match this.slot {
            Some(i) => match state.wakers.get_mut(i) {
                Some(Some(w)) if w.will_wake(cx.waker()) => {}
                Some(slot) => *slot = Some(cx.waker().clone()),
                None => {
                    // Unreachable while the outcome is unset (the list is only
                    // taken by `publish`), but re-register rather than hang.
                    state.wakers.push(Some(cx.waker().clone()));
                    this.slot = Some(state.wakers.len() - 1);
                }
            },
            None => {
                state.wakers.push(Some(cx.waker().clone()));
                this.slot = Some(state.wakers.len() - 1);
            }
        }
        Poll::Pending
    }
}

impl<T: Clone> Drop for Wait<T> {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            if self.flight.published.get().is_some() {
                return; // `publish` took the whole list
            }
            let mut state = self.flight.state.lock();
            if let Some(slot) = state.wakers.get_mut(i) {
                *slot = None;
            }
        }
    }
}

#[cfg(all(test, not(herdguard_shuttle)))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_share_the_leaders_outcome_and_the_table_empties() {
        let flights: Flights<&str, u32> = Flights::new();
        let Join::Leader(leader) = flights.join::<()>(&"k", || None) else {
            panic!("first caller must lead");
        };
        let mut waits = Vec::new();
        for _ in 0..3 {
            match flights.join::<()>(&"k", || None) {
                Join::Waiter(f) => waits.push(tokio::spawn(async move { f.wait().await })),
                _ => panic!("later callers must wait"),
            }
        }
        assert_eq!(flights.len(), 1);
        let mut stored = None;
        flights.complete(&"k", &leader, 7, |superseded| stored = Some(superseded));
        assert_eq!(stored, Some(false));
        for w in waits {
            assert_eq!(w.await.unwrap(), 7);
        }
        assert_eq!(flights.len(), 0);
    }

    #[test]
    fn recheck_under_the_lock_settles_without_a_flight() {
        let flights: Flights<&str, u32> = Flights::new();
        assert!(matches!(flights.join(&"k", || Some(5)), Join::Settled(5)));
        assert_eq!(flights.len(), 0);
    }

    #[test]
    fn supersede_marks_the_running_flight() {
        let flights: Flights<&str, u32> = Flights::new();
        let Join::Leader(leader) = flights.join::<()>(&"k", || None) else {
            panic!("leader expected");
        };
        flights.supersede(&"k", || ());
        let mut superseded = false;
        flights.complete(&"k", &leader, 1, |s| superseded = s);
        assert!(superseded);
    }

    #[tokio::test]
    async fn a_dropped_waiter_frees_its_slot() {
        let flights: Flights<&str, u32> = Flights::new();
        let Join::Leader(leader) = flights.join::<()>(&"k", || None) else {
            panic!("leader expected");
        };
        let mut wait = Box::pin(leader.wait());
        let waker = futures_util::task::noop_waker();
        assert!(wait
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        drop(wait);
        assert!(leader.state.lock().wakers.iter().all(Option::is_none));
        flights.complete(&"k", &leader, 3, |_| ());
        assert_eq!(leader.outcome(), Some(3));
    }
}

/// Model checks of the flight core over thread interleavings (shuttle).
/// Run with `RUSTFLAGS="--cfg herdguard_shuttle" cargo test -p herdguard --lib shuttle`.
#[cfg(all(test, herdguard_shuttle))]
mod shuttle_tests {
    use super::*;
    use shuttle::future::block_on;
    use shuttle::sync::atomic::AtomicUsize;
    use shuttle::thread;

    /// Every caller of a key either leads or waits; exactly one load runs per
    /// generation, every waiter gets the leader's value, and the table is empty at
    /// the end.
    fn callers_share_one_load(callers: usize) {
        let flights = Arc::new(Flights::<u8, u32>::new());
        let stored = Arc::new(Mutex::new(None::<u32>));
        let loads = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..callers)
            .map(|i| {
                let flights = Arc::clone(&flights);
                let stored = Arc::clone(&stored);
                let loads = Arc::clone(&loads);
                thread::spawn(move || {
                    let recheck = || *stored.lock();
                    match flights.join(&1, recheck) {
                        Join::Leader(flight) => {
                            loads.fetch_add(1, Ordering::SeqCst);
                            let value = 100 + i as u32;
                            flights.complete(&1, &flight, value, |_| {
                                *stored.lock() = Some(value);
                            });
                            value
                        }
                        Join::Waiter(flight) => block_on(flight.wait()),
                        Join::Settled(v) => v,
                    }
                })
            })
            .collect();
        let values: Vec<u32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(loads.load(Ordering::SeqCst), 1, "exactly one load");
        assert!(
            values.windows(2).all(|w| w[0] == w[1]),
            "all see one value: {values:?}"
        );
        assert_eq!(flights.len(), 0, "nothing left in the table");
    }

    // Exhaustive search (check_dfs) of whole caller lifecycles is out of reach even
    // for two callers (every lock is a scheduling point, and the spawning thread
    // interleaves too: ~10^12 schedules). PCT finds any bug of depth ≤ d with
    // probability ≥ 1/(n·k^(d−1)) per run, so thousands of runs cover small depths.
    #[test]
    fn two_callers_pct() {
        shuttle::check_pct(|| callers_share_one_load(2), 20_000, 3);
    }

    #[test]
    fn three_callers_pct() {
        shuttle::check_pct(|| callers_share_one_load(3), 20_000, 3);
    }

    #[test]
    fn four_callers_random_schedules() {
        shuttle::check_random(|| callers_share_one_load(4), 20_000);
    }

    /// Exhaustive (every interleaving): a waiter dropped before the outcome never
    /// blocks the others, and an invalidation racing the completion is either seen (not stored) or lands
    /// after the store (and removes it): the store never keeps a superseded value.
    #[test]
    fn supersede_races_complete() {
        shuttle::check_dfs(
            || {
                let flights = Arc::new(Flights::<u8, u32>::new());
                let stored = Arc::new(Mutex::new(None::<u32>));
                let Join::Leader(flight) = flights.join::<()>(&1, || None) else {
                    panic!("leader expected");
                };
                let invalidator = {
                    let flights = Arc::clone(&flights);
                    let stored = Arc::clone(&stored);
                    thread::spawn(move || flights.supersede(&1, || *stored.lock() = None))
                };
                let dropped_waiter = {
                    let flight = Arc::clone(&flight);
                    thread::spawn(move || drop(flight.wait()))
                };
                {
                    let stored = Arc::clone(&stored);
                    flights.complete(&1, &flight, 9, move |superseded| {
                        if !superseded {
                            *stored.lock() = Some(9);
                        }
                    });
                }
                invalidator.join().unwrap();
                dropped_waiter.join().unwrap();
                assert_eq!(*stored.lock(), None, "an invalidation always wins");
                assert_eq!(flight.outcome(), Some(9));
            },
            None,
        );
    }
}
