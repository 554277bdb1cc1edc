//! The circuit breaker around the loader.
//!
//! Closed: loads run; `failure_threshold` consecutive failures open it. Open: no
//! origin calls for `open_for`; callers get a stale value where the policy allows,
//! else [`Error::CircuitOpen`](crate::Error::CircuitOpen). Half-open: up to
//! `half_open_probes` loads may run; a success closes the breaker, a failure opens
//! it again.
//!
//! It is consulted only by leaders (one per key per load), never on the hit path.

use std::time::Duration;

use parking_lot::Mutex;

use crate::clock::Timestamp;
use crate::error::ConfigError;
use crate::events;

/// Settings of the circuit breaker.
///
/// ```
/// use herdguard::BreakerConfig;
/// use std::time::Duration;
///
/// let breaker = BreakerConfig::new(5, Duration::from_secs(10)).half_open_probes(2);
/// # let _ = breaker;
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerConfig {
    pub(crate) failure_threshold: u32,
    pub(crate) open_for: Duration,
    pub(crate) half_open_probes: u32,
}

impl BreakerConfig {
    /// Opens after `failure_threshold` consecutive failed loads, for `open_for`.
    /// One probe load is allowed when half-open; see [`BreakerConfig::half_open_probes`].
    pub fn new(failure_threshold: u32, open_for: Duration) -> Self {
        BreakerConfig {
            failure_threshold,
            open_for,
            half_open_probes: 1,
        }
    }

    /// How many loads may run at once while half-open.
    pub fn half_open_probes(mut self, probes: u32) -> Self {
        self.half_open_probes = probes;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.failure_threshold == 0 {
            return Err(ConfigError::Zero("breaker failure_threshold"));
        }
        if self.open_for.is_zero() {
            return Err(ConfigError::Zero("breaker open_for"));
        }
        if self.half_open_probes == 0 {
            return Err(ConfigError::Zero("breaker half_open_probes"));
        }
        Ok(())
    }
}

/// The state of a circuit breaker, as reported in metrics.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Loads run normally.
    Closed,
    /// Loads are refused until the open period ends.
    Open,
    /// A few probe loads may run; their result closes or reopens the breaker.
    HalfOpen,
}

/// What a breaker has done since the cache was built: its transitions, and
/// how long it has spent in each state (the current one included, up to the
/// snapshot). Times are on the cache's clock.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakerStats {
    /// Transitions into [`BreakerState::Open`] (trips, from closed or half-open).
    pub opened: u64,
    /// Transitions into [`BreakerState::HalfOpen`] (an open period ended).
    pub half_opened: u64,
    /// Transitions into [`BreakerState::Closed`] (a half-open probe succeeded).
    pub closed: u64,
    /// Time spent closed.
    pub time_closed: Duration,
    /// Time spent open.
    pub time_open: Duration,
    /// Time spent half-open.
    pub time_half_open: Duration,
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Timestamp },
    HalfOpen { probes: u32 },
}

/// A circuit breaker (see the module docs).
#[derive(Debug)]
pub(crate) struct Breaker {
    config: BreakerConfig,
    state: Mutex<Phase>,
}

/// The state, and how many times the breaker has tripped: a permit remembers
/// the trip count it was granted under, so the report of a load that started
/// before the breaker opened (a late success, say) cannot close it — only its
/// half-open probes can.
#[derive(Debug)]
struct Phase {
    state: State,
    trips: u64,
    /// When the current state began.
    entered: Timestamp,
    /// Transitions and time of the states left so far.
    stats: BreakerStats,
}

impl State {
    fn public(&self) -> BreakerState {
        match self {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

impl Phase {
    /// Moves to `next` at `at`, accounting the time of the state left. Returns
    /// the change, to be logged once the lock is released.
    fn enter(&mut self, next: State, at: Timestamp) -> Option<(BreakerState, BreakerState)> {
        let (from, to) = (self.state.public(), next.public());
        self.state = next;
        if from == to {
            return None;
        }
        let spent = at.saturating_duration_since(self.entered);
        self.entered = at;
        let stats = &mut self.stats;
        match from {
            BreakerState::Closed => stats.time_closed += spent,
            BreakerState::Open => stats.time_open += spent,
            BreakerState::HalfOpen => stats.time_half_open += spent,
        }
        match to {
            BreakerState::Closed => stats.closed += 1,
            BreakerState::Open => stats.opened += 1,
            BreakerState::HalfOpen => stats.half_opened += 1,
        }
        Some((from, to))
    }
}

/// Logs a state change (outside the breaker's lock).
fn log_change(change: Option<(BreakerState, BreakerState)>, config: &BreakerConfig) {
    let Some((from, to)) = change else { return };
    let (from, to) = (name(from), name(to));
    if to == "open" {
        tracing::warn!(
            target: events::BREAKER,
            from,
            to,
            open_for_ms = u64::try_from(config.open_for.as_millis()).unwrap_or(u64::MAX),
            "breaker opened"
        );
    } else {
        tracing::info!(target: events::BREAKER, from, to, "breaker state changed");
    }
}

fn name(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half_open",
    }
}

/// The right to make one origin call. Dropped without a verdict (the load was
/// abandoned), it counts as a failure, so a half-open breaker never waits forever
/// for a probe that will not report.
#[must_use]
pub(crate) struct Permit<'a> {
    breaker: &'a Breaker,
    acquired_at: Timestamp,
    trips: u64,
    reported: bool,
}

impl Breaker {
    pub(crate) fn new(config: BreakerConfig, now: Timestamp) -> Self {
        Breaker {
            config,
            state: Mutex::new(Phase {
                state: State::Closed { failures: 0 },
                trips: 0,
                entered: now,
                stats: BreakerStats::default(),
            }),
        }
    }

    /// A permit to call the origin, or `None` while the breaker is open (or
    /// half-open with all probes out).
    pub(crate) fn try_acquire(&self, now: Timestamp) -> Option<Permit<'_>> {
        let mut phase = self.state.lock();
        let mut change = None;
        match phase.state {
            State::Closed { .. } => {}
            // Half-open from the end of the open period, whenever it is noticed.
            State::Open { until } if now >= until => {
                change = phase.enter(State::HalfOpen { probes: 1 }, until);
            }
            State::Open { .. } => return None,
            State::HalfOpen { ref mut probes } if *probes < self.config.half_open_probes => {
                *probes += 1
            }
            State::HalfOpen { .. } => return None,
        }
        let trips = phase.trips;
        drop(phase);
        log_change(change, &self.config);
        Some(Permit {
            breaker: self,
            acquired_at: now,
            trips,
            reported: false,
        })
    }

    fn record(&self, now: Timestamp, success: bool, trips: u64) {
        let mut phase = self.state.lock();
        let current = trips == phase.trips;
        let next = match (&phase.state, success) {
            // Only a load granted since the last trip speaks for the origin now:
            // one that started before the breaker opened cannot close it (nor
            // reopen a half-open one).
            (State::Open { .. } | State::HalfOpen { .. }, _) if !current => return,
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 < self.config.failure_threshold => {
                State::Closed {
                    failures: failures + 1,
                }
            }
            (_, false) => {
                phase.trips += 1;
                State::Open {
                    until: now.saturating_add(self.config.open_for),
                }
            }
        };
        let change = phase.enter(next, now);
        drop(phase);
        log_change(change, &self.config);
    }

    pub(crate) fn state(&self) -> BreakerState {
        self.state.lock().state.public()
    }

    /// Transitions and time per state, the current state counted up to `now`.
    pub(crate) fn stats(&self, now: Timestamp) -> BreakerStats {
        let phase = self.state.lock();
        let mut stats = phase.stats.clone();
        let current = now.saturating_duration_since(phase.entered);
        match phase.state.public() {
            BreakerState::Closed => stats.time_closed += current,
            BreakerState::Open => stats.time_open += current,
            BreakerState::HalfOpen => stats.time_half_open += current,
        }
        stats
    }
}

impl Permit<'_> {
    /// Reports the load's result.
    pub(crate) fn report(mut self, now: Timestamp, success: bool) {
        self.reported = true;
        self.breaker.record(now, success, self.trips);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.reported {
            // No clock here: the open period counts from when the load started.
            self.breaker.record(self.acquired_at, false, self.trips);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_unix_nanos(secs * 1_000_000_000)
    }

    impl Breaker {
        fn new_at0(config: BreakerConfig) -> Self {
            Breaker::new(config, at(0))
        }
    }

    #[test]
    fn counts_transitions_and_time_in_each_state() {
        let b = Breaker::new_at0(BreakerConfig::new(1, Duration::from_secs(10)));
        assert_eq!(b.stats(at(3)).time_closed, Duration::from_secs(3));
        b.try_acquire(at(4)).unwrap().report(at(4), false); // open at 4 until 14
        let probe = b.try_acquire(at(20)).unwrap(); // half-open from 14
        probe.report(at(21), true); // closed at 21
        let s = b.stats(at(25));
        assert_eq!((s.opened, s.half_opened, s.closed), (1, 1, 1));
        assert_eq!(s.time_open, Duration::from_secs(10));
        assert_eq!(s.time_half_open, Duration::from_secs(7));
        assert_eq!(s.time_closed, Duration::from_secs(4 + 4));
        // A failure that does not trip changes nothing.
        let b = Breaker::new_at0(BreakerConfig::new(2, Duration::from_secs(10)));
        b.try_acquire(at(1)).unwrap().report(at(1), false);
        assert_eq!(b.stats(at(2)).opened, 0);
    }

    #[test]
    fn opens_after_threshold_then_half_opens_then_closes() {
        let b = Breaker::new_at0(BreakerConfig::new(3, Duration::from_secs(10)));
        for _ in 0..2 {
            b.try_acquire(at(1)).unwrap().report(at(1), false);
            assert_eq!(b.state(), BreakerState::Closed);
        }
        b.try_acquire(at(1)).unwrap().report(at(1), false);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.try_acquire(at(5)).is_none(), "no origin calls while open");
        let probe = b.try_acquire(at(11)).expect("half-open after open_for");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.try_acquire(at(11)).is_none(), "one probe at a time");
        probe.report(at(11), true);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_failed_probe_reopens() {
        let b = Breaker::new_at0(BreakerConfig::new(1, Duration::from_secs(10)));
        b.try_acquire(at(0)).unwrap().report(at(0), false);
        b.try_acquire(at(10)).unwrap().report(at(10), false);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.try_acquire(at(19)).is_none());
        assert!(b.try_acquire(at(20)).is_some());
    }

    #[test]
    fn success_resets_the_failure_count() {
        let b = Breaker::new_at0(BreakerConfig::new(2, Duration::from_secs(10)));
        b.try_acquire(at(0)).unwrap().report(at(0), false);
        b.try_acquire(at(0)).unwrap().report(at(0), true);
        b.try_acquire(at(0)).unwrap().report(at(0), false);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn an_abandoned_probe_counts_as_failure() {
        let b = Breaker::new_at0(BreakerConfig::new(1, Duration::from_secs(10)));
        b.try_acquire(at(0)).unwrap().report(at(0), false);
        drop(b.try_acquire(at(10)).unwrap());
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn a_late_success_from_before_the_trip_does_not_close_an_open_breaker() {
        let b = Breaker::new_at0(BreakerConfig::new(1, Duration::from_secs(10)));
        let slow = b.try_acquire(at(0)).unwrap(); // a long load starts
        b.try_acquire(at(1)).unwrap().report(at(1), false); // another fails: open
        assert_eq!(b.state(), BreakerState::Open);
        slow.report(at(2), true); // the long one succeeds late
        assert_eq!(b.state(), BreakerState::Open, "closed by a stale success");
        assert!(b.try_acquire(at(5)).is_none());
        // Nor does it close the half-open breaker that follows: only its probe may.
        let stale = b.try_acquire(at(0)); // (none can be had while open)
        assert!(stale.is_none());
        let probe = b.try_acquire(at(11)).unwrap();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        probe.report(at(11), true);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_late_failure_from_before_the_trip_does_not_reopen_a_half_open_breaker() {
        let b = Breaker::new_at0(BreakerConfig::new(1, Duration::from_secs(10)));
        let slow = b.try_acquire(at(0)).unwrap();
        b.try_acquire(at(1)).unwrap().report(at(1), false);
        let probe = b.try_acquire(at(11)).unwrap();
        slow.report(at(12), false);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        probe.report(at(12), true);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn zero_settings_are_rejected() {
        assert!(BreakerConfig::new(0, Duration::from_secs(1))
            .validate()
            .is_err());
        assert!(BreakerConfig::new(1, Duration::ZERO).validate().is_err());
        assert!(BreakerConfig::new(1, Duration::from_secs(1))
            .half_open_probes(0)
            .validate()
            .is_err());
    }
}
