//! Log events: their stable targets, the key hash they name a key by, and the
//! rate limit of the ones an outage would otherwise repeat per request.
//!
//! Every event is a `tracing` event under one of the targets below, with a
//! fixed message and structured fields (docs/observability.md lists them all). Nothing is
//! printed unless the program installs a subscriber; none of them is on the
//! hit path.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Shared-store health, leases, fencing, undecodable entries.
pub(crate) const FLEET: &str = "herdguard::fleet";
/// Circuit-breaker state changes.
pub(crate) const BREAKER: &str = "herdguard::breaker";
/// Origin calls: timeouts and (rate-limited) errors.
pub(crate) const LOAD: &str = "herdguard::load";

/// A key as events name it (the `key_hash` field): a hash, never the key
/// itself (keys may be sensitive: URLs with tokens, user ids). The same key
/// gives the same hash in every process of one build, so events of a fleet can
/// be matched up — and a program's own events about a key can name it the same
/// way as the cache's.
pub fn key_hash<K: Hash + ?Sized>(key: &K) -> String {
    // DefaultHasher::new() has fixed keys: deterministic across processes.
    let mut hasher = std::hash::DefaultHasher::new();
    key.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// The rate limits of one cache's repeatable events: one line a second each
/// at most, however many requests an outage fails.
pub(crate) struct Limits {
    pub(crate) origin_errors: RateLimit,
    pub(crate) load_timeouts: RateLimit,
    pub(crate) undecodable: RateLimit,
}

impl Default for Limits {
    fn default() -> Self {
        let second = Duration::from_secs(1);
        Limits {
            origin_errors: RateLimit::new(second),
            load_timeouts: RateLimit::new(second),
            undecodable: RateLimit::new(second),
        }
    }
}

/// Admits one event per `every`; the ones in between are counted, and the
/// next admitted event reports how many were left out.
pub(crate) struct RateLimit {
    start: Instant,
    every: Duration,
    /// Milliseconds since `start` from which the next event is admitted.
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimit {
    pub(crate) fn new(every: Duration) -> Self {
        RateLimit {
            start: Instant::now(),
            every,
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(events left out since the last admitted one)` when this one is
    /// admitted, `None` when it is left out (and counted).
    pub(crate) fn admit(&self) -> Option<u64> {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Relaxed);
        let every = u64::try_from(self.every.as_millis()).unwrap_or(u64::MAX);
        if now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now.saturating_add(every),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::AcqRel));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_period_and_the_rest_counted() {
        let limit = RateLimit::new(Duration::from_millis(50));
        assert_eq!(limit.admit(), Some(0));
        for _ in 0..3 {
            assert_eq!(limit.admit(), None);
        }
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(
            limit.admit(),
            Some(3),
            "the next one says how many were left out"
        );
        assert_eq!(limit.admit(), None);
    }

    #[test]
    fn the_key_hash_is_stable_and_hides_the_key() {
        let a = key_hash("/account?token=secret");
        assert_eq!(a, key_hash("/account?token=secret"));
        assert_ne!(a, key_hash("/account?token=other"));
        assert!(!a.contains("secret"));
        assert_eq!(a.len(), 16);
    }
}
