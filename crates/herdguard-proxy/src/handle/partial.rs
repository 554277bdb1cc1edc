//! Incomplete answers (RFC 9111 §3.3, §3.4; the rules are
//! `herdguard_http::partial`'s): the prefix of a storable `200` whose body
//! broke off, kept marked incomplete — never a value of the core, so nothing
//! that answers from the core can serve it as a whole answer. A `Range` request
//! wholly within a fresh prefix is answered `206` from it; a load of its key
//! asks the origin for the rest (`loader`), and a `206` that continues it
//! makes the whole answer, stored as any other.
//!
//! Prefixes stay in this process: the shared store never sees one, and with a
//! shared store none is kept at all (another instance's invalidation evicts
//! the copies the core holds, but could not reach these). Nor is one kept
//! that carries surrogate keys (a tag purge finds keys through the core's
//! entries). They are held within a share of `max_memory`
//! ([`PARTIAL_SHARE`]), the oldest dropped first; a purge, an invalidation,
//! a contradicting `HEAD` or a stored answer of a key drops its prefix and
//! fences off the prefixes of origin requests sent before it (their bodies
//! may break off later: [`Partials::fence`]), and one is never answered from
//! while the cache holds anything under its key.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use herdguard_http::response::CachedResponse;
use herdguard_http::variants::vary_matches;
use herdguard_http::{decide, Decision, RequestDirectives};
use http::Response;

use super::answer;
use super::proxy::Proxy;
use super::request::Forward;
use crate::body::Body;

impl Proxy {
    /// The answer to a `GET` with one `bytes` range wholly within the fresh
    /// prefix kept under `key` for its variant (RFC 9111 §3.3), when there is
    /// one and the cache holds nothing under `key`: a stored answer, even
    /// stale, may be newer than the prefix (a load that broke off after a
    /// `POST`'s answer was stored), and is revalidated as usual instead.
    /// Requests with conditionals of their own go on (they are answered
    /// from whole responses only).
    pub(crate) fn answer_within_prefix(
        &self,
        key: &str,
        forward: &Forward,
        directives: &RequestDirectives,
    ) -> Option<Response<Body>> {
        if !forward.present.range || forward.present.conditional {
            return None;
        }
        let kept = self.partials.get(key)?;
        if self.cache.peek(&key.to_string()).is_some() {
            return None;
        }
        let tuning = self.tuning();
        let config = &tuning.rules.config;
        let fresh =
            decide(&kept.value.semantics(config), directives, SystemTime::now()) == Decision::Fresh;
        if !fresh || !vary_matches(&kept.value, forward) {
            return None;
        }
        answer::from_prefix(
            &self.stats,
            config,
            &kept.value,
            kept.complete,
            &forward.headers,
        )
    }
}

/// The share of the memory budget prefixes may hold: 1/16.
pub(crate) const PARTIAL_SHARE: u64 = 16;

/// One incomplete answer: as it would be stored, its body the prefix.
pub(crate) struct Partial {
    /// The fields, times and variant of the answer; `body` is what arrived.
    pub value: CachedResponse,
    /// The length of the whole body (its `Content-Length`).
    pub complete: u64,
}

impl Partial {
    /// The bytes kept.
    pub(crate) fn kept(&self) -> u64 {
        self.value.body.len() as u64
    }
}

/// How many fences are kept: a key's is its slot of these (by hash), so a
/// fence of another key may refuse a prefix too (a prefix lost, never a
/// wrong answer), and the fences take the same memory however many keys.
const FENCE_SLOTS: usize = 256;

/// The prefixes of this process, by key, within a byte budget.
pub(crate) struct Partials {
    inner: Mutex<Kept>,
    max_bytes: u64,
    slots: RandomState,
}

#[derive(Default)]
struct Kept {
    /// Per slot, when a key of it was last fenced.
    fences: Vec<Option<Instant>>,
    by_key: HashMap<String, (u64, Arc<Partial>)>,
    /// Keys in the order they were put, each with the number it was put
    /// under (a key put again or removed leaves a stale pair, skipped).
    order: VecDeque<(u64, String)>,
    bytes: u64,
    next: u64,
}

impl Partials {
    /// At most `max_bytes` of prefixes (0: none is kept).
    pub(crate) fn new(max_bytes: u64) -> Self {
        let kept = Kept {
            fences: vec![None; FENCE_SLOTS],
            ..Kept::default()
        };
        Partials {
            inner: Mutex::new(kept),
            max_bytes,
            slots: RandomState::new(),
        }
    }

    fn slot(&self, key: &str) -> usize {
        (self.slots.hash_one(key) % FENCE_SLOTS as u64) as usize
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `partial`, the answer to an origin request `sent` then, under
    /// `key` (replacing any), dropping the oldest prefixes to stay within the
    /// budget; one larger than the budget, or fenced off since it was sent
    /// ([`Partials::fence`]), is not kept.
    pub(crate) fn put(&self, key: &str, partial: Partial, sent: Instant) {
        let weight = partial.value.weight(key);
        if weight > self.max_bytes {
            return;
        }
        let slot = self.slot(key);
        let mut kept = self.lock();
        if kept.fences[slot].is_some_and(|fenced| fenced >= sent) {
            return;
        }
        kept.remove(key);
        while kept.bytes + weight > self.max_bytes {
            let Some((n, oldest)) = kept.order.pop_front() else {
                break;
            };
            if kept.by_key.get(&oldest).is_some_and(|(m, _)| *m == n) {
                kept.remove(&oldest);
            }
        }
        let n = kept.next;
        kept.next += 1;
        kept.bytes += weight;
        kept.by_key.insert(key.to_string(), (n, Arc::new(partial)));
        kept.order.push_back((n, key.to_string()));
        // Stale pairs never outnumber the live ones by much.
        if kept.order.len() > 2 * kept.by_key.len() + 16 {
            let Kept { by_key, order, .. } = &mut *kept;
            order.retain(|(n, k)| by_key.get(k).is_some_and(|(m, _)| m == n));
        }
    }

    /// The prefix kept under `key`.
    pub(crate) fn get(&self, key: &str) -> Option<Arc<Partial>> {
        if self.max_bytes == 0 {
            return None;
        }
        self.lock().by_key.get(key).map(|(_, p)| Arc::clone(p))
    }

    /// Takes the prefix kept under `key` out, for the load that completes it.
    pub(crate) fn take(&self, key: &str) -> Option<Arc<Partial>> {
        if self.max_bytes == 0 {
            return None;
        }
        self.lock().remove(key)
    }

    /// Drops the prefix kept under `key`, and fences off those of origin
    /// requests sent before now: a purge, an invalidation, a contradicting
    /// `HEAD` or a stored answer says their answer may be out of date, as a
    /// whole answer of a load begun before an invalidation is never served.
    pub(crate) fn fence(&self, key: &str) {
        if self.max_bytes == 0 {
            return;
        }
        let slot = self.slot(key);
        let mut kept = self.lock();
        kept.remove(key);
        kept.fences[slot] = Some(Instant::now());
    }

    /// Bytes held, as [`CachedResponse::weight`] counts them.
    #[cfg(test)]
    fn bytes(&self) -> u64 {
        self.lock().bytes
    }
}

impl Kept {
    fn remove(&mut self, key: &str) -> Option<Arc<Partial>> {
        let (_, partial) = self.by_key.remove(key)?;
        self.bytes = self.bytes.saturating_sub(partial.value.weight(key));
        Some(partial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use herdguard_http::response::Fetch;
    use http::{HeaderMap, StatusCode};

    fn partial(len: usize) -> Partial {
        Partial {
            value: CachedResponse::new(
                StatusCode::OK,
                &HeaderMap::new(),
                Bytes::from(vec![b'x'; len]),
                (0, 0),
                Vec::new(),
                Fetch::Miss,
            ),
            complete: len as u64 * 2,
        }
    }

    /// The order that matters: an origin request sent, its key fenced
    /// (purge, invalidation, contradicting HEAD, stored answer), then its
    /// body broken off. Its prefix is refused; one sent after the fence is kept.
    #[test]
    fn a_prefix_of_a_request_sent_before_a_fence_is_not_kept() {
        let kept = Partials::new(1 << 20);
        let sent = Instant::now();
        kept.put("k", partial(10), sent);
        kept.fence("k");
        assert!(kept.get("k").is_none(), "the fence drops what is kept");
        kept.put("k", partial(10), sent);
        assert!(kept.get("k").is_none(), "sent before the fence");
        // A coarse clock could read the fence's instant again: refused, so step past it.
        std::thread::sleep(std::time::Duration::from_millis(1));
        let after = Instant::now();
        kept.put("k", partial(10), after);
        assert!(kept.get("k").is_some(), "sent after the fence");
    }

    #[test]
    fn prefixes_stay_within_the_budget_oldest_dropped_first() {
        // Three of them, keys of up to three bytes.
        let one = partial(1000).value.weight("k00");
        let kept = Partials::new(one * 3);
        for i in 0..100 {
            kept.put(&format!("k{i}"), partial(1000), Instant::now());
            assert!(kept.bytes() <= one * 3, "{} after {i}", kept.bytes());
        }
        assert!(kept.get("k0").is_none());
        assert!(kept.get("k99").is_some());
        assert!(kept.get("k97").is_some());
        // The same key put again replaces; stale order pairs stay bounded.
        for _ in 0..1000 {
            kept.put("k99", partial(1000), Instant::now());
        }
        assert!(kept.lock().order.len() <= 2 * 3 + 16);
        assert!(kept.take("k99").is_some());
        assert!(kept.get("k99").is_none());
        // Larger than the budget, or no budget: nothing kept.
        kept.put("big", partial(10_000), Instant::now());
        assert!(kept.get("big").is_none());
        let none = Partials::new(0);
        none.put("k", partial(1), Instant::now());
        assert!(none.get("k").is_none());
    }
}
