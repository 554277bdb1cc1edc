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
//! An invalidation or insert *detaches* the running flight: it is marked
//! superseded (its result goes to the callers already waiting, and is never
//! stored) and removed from the table, so a caller arriving after the
//! invalidation returned starts a new load instead of joining the older one.
//! That is what makes `invalidate` and `insert` barriers.
//!
//! Waiters park their [`Waker`] in the flight; publishing the outcome takes all the
//! wakers under the lock and wakes them after releasing it, so 10,000 waiters cost
//! one lock hold plus 10,000 cheap wakes.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crossbeam_utils::CachePadded;

use crate::sync::{AtomicU64, Mutex, Ordering};

/// Number of independently locked shards; a power of two.
#[cfg(not(herdguard_shuttle))]
const SHARDS: usize = 64;
/// Under the model checker every lock is a scheduling point: keep the table small.
#[cfg(herdguard_shuttle)]
const SHARDS: usize = 2;

type Shard<K, T> = CachePadded<Mutex<HashMap<K, Running<T>>>>;

/// The flights of one key.
struct Running<T> {
    /// The flight new callers join, if any.
    open: Option<Arc<Flight<T>>>,
    /// Flights detached by an invalidation, an insert or a change elsewhere,
    /// still running for the callers they had: a later barrier must reach them
    /// too, or one could store a value older than it.
    detached: Vec<Arc<Flight<T>>>,
    /// This process's writes of the key to the shared store in flight, each
    /// with the newest version another process gave the key meanwhile (0:
    /// none): a change heard of before the written copy is stored must reach
    /// it too, or the copy would outlive it.
    writes: Vec<Arc<AtomicU64>>,
}

impl<T> Running<T> {
    /// Closes the open flight to new callers and applies `mark` to every flight.
    fn detach_all(&mut self, mark: impl Fn(&Flight<T>)) {
        if let Some(open) = self.open.take() {
            self.detached.push(open);
        }
        self.detached.iter().for_each(|f| mark(f));
    }

    /// The loads running.
    fn loads(&self) -> usize {
        usize::from(self.open.is_some()) + self.detached.len()
    }

    fn is_empty(&self) -> bool {
        self.loads() == 0 && self.writes.is_empty()
    }
}

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

/// What happened to the key while a flight ran; decides whether its result may
/// be stored.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fate {
    /// An invalidation or insert in this process detached the flight: its result
    /// must not be stored (unless its origin call began after every one of them).
    pub(crate) superseded: bool,
    /// How many invalidations or inserts in this process reached it.
    pub(crate) supersedes: u64,
    /// The newest version another process gave the key while the flight ran
    /// (0: none). A result older than it must not be stored.
    pub(crate) changed_to: u64,
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
    /// A flight it starts records `epoch`, the caller's change-feed epoch
    /// ([`Flight::epoch`]): a later caller in another epoch still joins it (one
    /// load per key), but may not take its value as current.
    ///
    /// The re-check must happen under the same lock that [`Flights::complete`]
    /// holds while it stores a result and removes the flight; otherwise a caller
    /// that missed just before the store would arrive just after the removal and
    /// start a second load.
    pub(crate) fn join<R>(
        &self,
        key: &K,
        epoch: u64,
        recheck: impl FnOnce() -> Option<R>,
    ) -> Join<T, R> {
        let mut shard = self.shard(key).lock();
        if let Some(flight) = shard.get(key).and_then(|r| r.open.as_ref()) {
            return Join::Waiter(Arc::clone(flight));
        }
        if let Some(settled) = recheck() {
            return Join::Settled(settled);
        }
        let flight = Arc::new(Flight::new(epoch));
        let open = Some(Arc::clone(&flight));
        match shard.get_mut(key) {
            Some(running) => running.open = open,
            None => {
                shard.insert(
                    key.clone(),
                    Running {
                        open,
                        detached: Vec::new(),
                        writes: Vec::new(),
                    },
                );
            }
        }
        Join::Leader(flight)
    }

    /// Ends `flight`: runs `store` (told the flight's [`Fate`]) under the shard
    /// lock, removes the flight from the table and hands `outcome` to every
    /// waiter. Returns whether `store` panicked: the waiters get the outcome
    /// regardless, so a faulty store can lose an entry but never hang a key.
    pub(crate) fn complete(
        &self,
        key: &K,
        flight: &Arc<Flight<T>>,
        outcome: T,
        store: impl FnOnce(Fate),
    ) -> bool {
        let panicked = {
            let mut shard = self.shard(key).lock();
            let fate = Fate {
                superseded: flight.supersedes.load(Ordering::SeqCst) > 0,
                supersedes: flight.supersedes.load(Ordering::SeqCst),
                changed_to: flight.changed_to.load(Ordering::SeqCst),
            };
            let stored = std::panic::catch_unwind(AssertUnwindSafe(|| store(fate)));
            if let Some(running) = shard.get_mut(key) {
                if running
                    .open
                    .as_ref()
                    .is_some_and(|f| Arc::ptr_eq(f, flight))
                {
                    running.open = None;
                } else {
                    running.detached.retain(|f| !Arc::ptr_eq(f, flight));
                }
                if running.is_empty() {
                    shard.remove(key);
                }
            }
            stored.is_err()
        };
        flight.publish(outcome);
        panicked
    }

    /// Runs `change` (an invalidation or insert of `key` in this process) under
    /// the shard lock and detaches every running flight of `key`: marked
    /// superseded, so their results reach their waiters but are never stored,
    /// and closed, so later callers start a new load.
    pub(crate) fn supersede<R>(&self, key: &K, change: impl FnOnce() -> R) -> R {
        let mut shard = self.shard(key).lock();
        let result = change();
        if let Some(running) = shard.get_mut(key) {
            running.detach_all(|f| {
                f.supersedes.fetch_add(1, Ordering::SeqCst);
            });
        }
        result
    }

    /// Runs `change` (another process gave `key` the version `version`) under the
    /// shard lock, and detaches the running flight of `key` with the version
    /// noted: its result is stored only if it is at least that new, and callers
    /// from now on start a new load rather than join one that may predate the
    /// change (the loads of other processes are barriers here too).
    pub(crate) fn changed<R>(&self, key: &K, version: u64, change: impl FnOnce() -> R) -> R {
        let mut shard = self.shard(key).lock();
        let result = change();
        if let Some(running) = shard.get_mut(key) {
            running.detach_all(|f| {
                f.changed_to.fetch_max(version, Ordering::SeqCst);
            });
            for write in &running.writes {
                write.fetch_max(version, Ordering::SeqCst);
            }
        }
        result
    }

    /// Notes a write of `key` to the shared store about to be sent, so that
    /// the changes another process makes meanwhile are noted on it
    /// ([`Flights::changed`]); end it with [`Writing::wrote`] (dropped
    /// unended, a cancelled write, it is forgotten).
    pub(crate) fn writing(&self, key: &K) -> Writing<'_, K, T> {
        let heard = Arc::new(AtomicU64::new(0));
        let mut shard = self.shard(key).lock();
        shard
            .entry(key.clone())
            .or_insert_with(|| Running {
                open: None,
                detached: Vec::new(),
                writes: Vec::new(),
            })
            .writes
            .push(Arc::clone(&heard));
        Writing {
            flights: self,
            key: key.clone(),
            heard,
            ended: false,
        }
    }

    /// The newest flight of `key` (the open one, else the last detached one:
    /// flights are detached in the order they were started), if one runs.
    pub(crate) fn newest(&self, key: &K) -> Option<Arc<Flight<T>>> {
        let shard = self.shard(key).lock();
        let running = shard.get(key)?;
        running.open.as_ref().or(running.detached.last()).cloned()
    }

    /// Number of loads running now (detached ones included).
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().values().map(Running::loads).sum::<usize>())
            .sum()
    }
}

/// A write of this process to the shared store, in flight ([`Flights::writing`]).
pub(crate) struct Writing<'a, K: Hash + Eq + Clone, T: Clone> {
    flights: &'a Flights<K, T>,
    key: K,
    /// The newest version another process gave the key meanwhile (0: none).
    heard: Arc<AtomicU64>,
    ended: bool,
}

impl<K: Hash + Eq + Clone, T: Clone> Writing<'_, K, T> {
    /// Ends the write: under the shard lock, runs `store` (an insert of this
    /// process: a barrier, as [`Flights::supersede`]) with the newest version
    /// another process gave the key while it was in flight (0: none).
    pub(crate) fn wrote<R>(mut self, store: impl FnOnce(u64) -> R) -> R {
        self.ended = true;
        let mut shard = self.flights.shard(&self.key).lock();
        let result = store(self.heard.load(Ordering::SeqCst));
        if let Some(running) = shard.get_mut(&self.key) {
            running.writes.retain(|w| !Arc::ptr_eq(w, &self.heard));
            running.detach_all(|f| {
                f.supersedes.fetch_add(1, Ordering::SeqCst);
            });
            if running.is_empty() {
                shard.remove(&self.key);
            }
        }
        result
    }
}

impl<K: Hash + Eq + Clone, T: Clone> Drop for Writing<'_, K, T> {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let mut shard = self.flights.shard(&self.key).lock();
        if let Some(running) = shard.get_mut(&self.key) {
            running.writes.retain(|w| !Arc::ptr_eq(w, &self.heard));
            if running.is_empty() {
                shard.remove(&self.key);
            }
        }
    }
}

/// One load in progress and the callers waiting for it.
pub(crate) struct Flight<T> {
    /// Set once, before the wakers are taken: a woken waiter reads it without the
    /// lock (10,000 waiters woken at once would otherwise queue on the mutex).
    published: std::sync::OnceLock<T>,
    state: Mutex<State>,
    /// Invalidations and inserts of this process that reached it.
    supersedes: AtomicU64,
    changed_to: AtomicU64,
    /// The change-feed epoch it began in (see [`Flights::join`]).
    epoch: u64,
}

struct State {
    /// Parked waiters; a slot is emptied when its waiter is dropped.
    wakers: Vec<Option<Waker>>,
    /// Emptied slots, reused by the next waiter: waiters that time out over and
    /// over on a long load must not grow the list without bound.
    free: Vec<usize>,
}

impl State {
    fn park(&mut self, waker: &Waker) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.wakers[i] = Some(waker.clone());
                i
            }
            None => {
                self.wakers.push(Some(waker.clone()));
                self.wakers.len() - 1
            }
        }
    }
}

impl<T: Clone> Flight<T> {
    fn new(epoch: u64) -> Self {
        Flight {
            epoch,
            published: std::sync::OnceLock::new(),
            state: Mutex::new(State {
                wakers: Vec::new(),
                free: Vec::new(),
            }),
            supersedes: AtomicU64::new(0),
            changed_to: AtomicU64::new(0),
        }
    }

    /// What has happened to the key since it started: (invalidations and
    /// inserts of this process, the newest version another process gave it).
    pub(crate) fn changes(&self) -> (u64, u64) {
        (
            self.supersedes.load(Ordering::SeqCst),
            self.changed_to.load(Ordering::SeqCst),
        )
    }

    /// The change-feed epoch it began in.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether an invalidation, insert or change elsewhere detached it.
    pub(crate) fn detached(&self) -> bool {
        self.changes() != (0, 0)
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

    /// A future that resolves to a clone of the outcome. It takes the caller's
    /// reference: every waiter of a key touches the count on waking, and one
    /// touch fewer each counts when thousands wake at once.
    pub(crate) fn wait(self: Arc<Self>) -> Wait<T> {
        Wait {
            flight: self,
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
        match this.slot.and_then(|i| state.wakers.get_mut(i)) {
            Some(Some(w)) if w.will_wake(cx.waker()) => {}
            Some(slot) => *slot = Some(cx.waker().clone()),
            // First poll (or, unreachable while the outcome is unset, a slot the
            // list no longer has): park, rather than hang.
            None => this.slot = Some(state.park(cx.waker())),
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
                state.free.push(i);
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
        let Join::Leader(leader) = flights.join::<()>(&"k", 0, || None) else {
            panic!("first caller must lead");
        };
        let mut waits = Vec::new();
        for _ in 0..3 {
            match flights.join::<()>(&"k", 0, || None) {
                Join::Waiter(f) => waits.push(tokio::spawn(async move { f.wait().await })),
                _ => panic!("later callers must wait"),
            }
        }
        assert_eq!(flights.len(), 1);
        let mut stored = None;
        flights.complete(&"k", &leader, 7, |fate| stored = Some(fate));
        assert_eq!(
            stored,
            Some(Fate {
                superseded: false,
                supersedes: 0,
                changed_to: 0
            })
        );
        for w in waits {
            assert_eq!(w.await.unwrap(), 7);
        }
        assert_eq!(flights.len(), 0);
    }

    #[test]
    fn recheck_under_the_lock_settles_without_a_flight() {
        let flights: Flights<&str, u32> = Flights::new();
        assert!(matches!(
            flights.join(&"k", 0, || Some(5)),
            Join::Settled(5)
        ));
        assert_eq!(flights.len(), 0);
    }

    #[test]
    fn a_flight_records_the_epoch_it_began_in_and_is_joined_from_any() {
        let flights: Flights<&str, u32> = Flights::new();
        let Join::Leader(first) = flights.join::<()>(&"k", 1, || None) else {
            panic!("first caller must lead");
        };
        assert_eq!(first.epoch(), 1);
        // One load per key, whatever the caller's epoch: it is the caller
        // that may not take the value as current.
        assert!(matches!(
            flights.join::<()>(&"k", 2, || None),
            Join::Waiter(f) if Arc::ptr_eq(&f, &first)
        ));
        flights.complete(&"k", &first, 1, |_| ());
        assert_eq!(flights.len(), 0);
    }

    #[test]
    fn supersede_detaches_the_running_flight() {
        let flights: Flights<&str, u32> = Flights::new();
        let Join::Leader(old) = flights.join::<()>(&"k", 0, || None) else {
            panic!("leader expected");
        };
        flights.supersede(&"k", || ());
        // A caller after the supersede starts a new flight instead of joining the old one.
        let Join::Leader(new) = flights.join::<()>(&"k", 0, || None) else {
            panic!("a caller after supersede must lead a new flight");
        };
        assert_eq!(flights.len(), 2, "both run");
        // A second invalidation reaches the detached flight as well as the new one.
        flights.supersede(&"k", || ());
        let mut fate = None;
        flights.complete(&"k", &old, 1, |f| fate = Some(f));
        assert!(fate.is_some_and(|f| f.superseded));
        // The old flight's end leaves the new one in the table.
        assert_eq!(flights.len(), 1);
        flights.complete(&"k", &new, 2, |f| assert!(f.superseded));
        assert_eq!(flights.len(), 0);
    }

    #[test]
    fn an_invalidation_reaches_a_flight_a_change_elsewhere_detached() {
        let flights: Flights<&str, u32> = Flights::new();
        let Join::Leader(flight) = flights.join::<()>(&"k", 0, || None) else {
            panic!("leader expected");
        };
        flights.changed(&"k", 7, || ());
        flights.supersede(&"k", || ());
        let mut fate = None;
        flights.complete(&"k", &flight, 1, |f| fate = Some(f));
        assert_eq!(
            fate,
            Some(Fate {
                superseded: true,
                supersedes: 1,
                changed_to: 7
            })
        );
        assert_eq!(flights.len(), 0);
    }

    #[test]
    fn a_change_elsewhere_detaches_the_running_flight_with_its_version() {
        let flights: Flights<&str, u32> = Flights::new();
        let Join::Leader(flight) = flights.join::<()>(&"k", 0, || None) else {
            panic!("leader expected");
        };
        flights.changed(&"k", 7, || ());
        let Join::Leader(next) = flights.join::<()>(&"k", 0, || None) else {
            panic!("a caller after the change must not join the older flight");
        };
        flights.changed(&"k", 9, || ());
        let mut fate = None;
        flights.complete(&"k", &flight, 1, |f| fate = Some(f));
        // The later change reached the detached flight too.
        assert_eq!(
            fate,
            Some(Fate {
                superseded: false,
                supersedes: 0,
                changed_to: 9
            })
        );
        flights.complete(&"k", &next, 2, |f| assert_eq!(f.changed_to, 9));
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn a_panicking_store_still_publishes_and_empties_the_table() {
        let flights: Flights<&str, u32> = Flights::new();
        let Join::Leader(leader) = flights.join::<()>(&"k", 0, || None) else {
            panic!("leader expected");
        };
        let waiter = match flights.join::<()>(&"k", 0, || None) {
            Join::Waiter(f) => tokio::spawn(async move { f.wait().await }),
            _ => panic!("waiter expected"),
        };
        let panicked = flights.complete(&"k", &leader, 4, |_| panic!("store failed"));
        assert!(panicked);
        assert_eq!(waiter.await.unwrap(), 4);
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn dropped_waiters_free_their_slots_for_reuse() {
        let flights: Flights<&str, u32> = Flights::new();
        let Join::Leader(leader) = flights.join::<()>(&"k", 0, || None) else {
            panic!("leader expected");
        };
        let waker = futures_util::task::noop_waker();
        // 1,000 waiters that give up one after the other (a caller's wait deadline
        // on a long load) reuse one slot instead of growing the list.
        for _ in 0..1000 {
            let mut wait = Box::pin(Arc::clone(&leader).wait());
            assert!(wait
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending());
            drop(wait);
        }
        assert_eq!(leader.state.lock().wakers.len(), 1);
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
                    match flights.join(&1, 0, recheck) {
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
    /// blocks the others, and an invalidation racing the completion is either seen
    /// (not stored) or lands after the store (and removes it): the store never
    /// keeps a superseded value.
    #[test]
    fn supersede_races_complete() {
        shuttle::check_dfs(
            || {
                let flights = Arc::new(Flights::<u8, u32>::new());
                let stored = Arc::new(Mutex::new(None::<u32>));
                let Join::Leader(flight) = flights.join::<()>(&1, 0, || None) else {
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
                    flights.complete(&1, &flight, 9, move |fate| {
                        if !fate.superseded {
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

    /// Exhaustive: the barrier. A caller that starts after `supersede` returned
    /// never receives the value of the flight that was running before it — it
    /// either leads a new flight or finds the state the invalidation left.
    #[test]
    fn a_caller_after_supersede_never_joins_the_older_flight() {
        shuttle::check_dfs(
            || {
                let flights = Arc::new(Flights::<u8, u32>::new());
                let stored = Arc::new(Mutex::new(None::<u32>));
                let Join::Leader(old) = flights.join::<()>(&1, 0, || None) else {
                    panic!("leader expected");
                };
                let finisher = {
                    let (flights, stored, old) =
                        (Arc::clone(&flights), Arc::clone(&stored), Arc::clone(&old));
                    thread::spawn(move || {
                        flights.complete(&1, &old, 1, |fate| {
                            if !fate.superseded {
                                *stored.lock() = Some(1);
                            }
                        })
                    })
                };
                // The invalidation, then a caller that starts after it returned.
                flights.supersede(&1, || *stored.lock() = None);
                let got = match flights.join(&1, 0, || *stored.lock()) {
                    Join::Leader(new) => {
                        flights.complete(&1, &new, 2, |_| *stored.lock() = Some(2));
                        2
                    }
                    Join::Waiter(flight) => block_on(flight.wait()),
                    Join::Settled(v) => v,
                };
                finisher.join().unwrap();
                assert_eq!(
                    got, 2,
                    "the caller after the invalidation got the older load"
                );
            },
            None,
        );
    }
}
