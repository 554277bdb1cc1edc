//! The bridge to the herdguard core (feature `engine`): how a call was served
//! ([`herdguard::Served`]) as this cache's `Cache-Status` member, and a stored
//! response's [`Freshness`] as the core's [`Loaded`]. `herdguard serve` and the
//! tower layer both answer through these, so a hit, a coalesced load or a
//! stale answer reads the same from either.

use std::time::Duration;

use herdguard::{Loaded, Served};
use http::HeaderValue;

use crate::cache_status::{hit_member, CACHE_NAME};
use crate::response::{CachedResponse, Fetch};
use crate::rules::Freshness;
use crate::{CacheStatus, ForwardReason};

/// The `Cache-Status` member of a stored response served as `served`, with
/// `ttl` of freshness left, and the label it is counted under (`hit`, `stale`,
/// `miss`, `coalesced`, `bypass`). `forced` when the request itself demanded
/// the load (a forced revalidation).
pub fn stored_member(
    served: Served,
    value: &CachedResponse,
    ttl: Duration,
    forced: bool,
) -> (HeaderValue, &'static str) {
    if served == Served::Hit {
        // The common case, by far: its member is rendered once per ttl value.
        let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        return (hit_member(ttl), "hit");
    }
    let (mut member, label) = served_member(served, value, ttl);
    if forced && matches!(served, Served::Loaded | Served::Coalesced) {
        member = member.forwarded(ForwardReason::Request);
    }
    (member.to_header_value(), label)
}

/// How a stored response was served, as a `Cache-Status` member and a count label.
pub fn served_member(
    served: Served,
    value: &CachedResponse,
    ttl: Duration,
) -> (CacheStatus, &'static str) {
    let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    let m = CacheStatus::new(CACHE_NAME);
    match served {
        Served::Hit => (m.hit().ttl(ttl), "hit"),
        Served::EarlyRefresh => (m.hit().ttl(ttl).detail("early-refresh"), "hit"),
        Served::Shared => (m.hit().ttl(ttl).detail("fleet"), "hit"),
        Served::StaleWhileRevalidate => (m.hit().detail("stale-while-revalidate"), "stale"),
        Served::StaleOnError => (m.hit().detail("stale-if-error"), "stale"),
        Served::StaleOnTimeout => (m.hit().detail("stale-on-timeout"), "stale"),
        Served::Loaded | Served::Coalesced | Served::Pass => {
            let fwd = match value.fetch {
                Fetch::Miss => ForwardReason::Miss,
                Fetch::Revalidated | Fetch::Replaced => ForwardReason::Stale,
            };
            let fwd_status = if value.fetch == Fetch::Revalidated {
                304
            } else {
                value.status
            };
            let collapsed = served == Served::Coalesced;
            // A pass (hit-for-miss) is this caller's own answer: not stored.
            let pass = served == Served::Pass;
            let m = m.forwarded(fwd).fwd_status(fwd_status).collapsed(collapsed);
            match (pass, collapsed) {
                (true, _) => (m.detail("hit-for-miss"), "bypass"),
                (false, true) => (m.stored(true).ttl(ttl), "coalesced"),
                (false, false) => (m.stored(true).ttl(ttl), "miss"),
            }
        }
        _ => (m.hit(), "hit"),
    }
}

/// A storable response as the core's value, kept fresh and usable stale as
/// `freshness` says.
pub fn loaded(value: CachedResponse, freshness: &Freshness) -> Loaded<CachedResponse> {
    Loaded::new(value)
        .ttl(freshness.ttl)
        .stale_while_revalidate(freshness.stale_while_revalidate)
        .stale_if_error(freshness.stale_if_error)
}
