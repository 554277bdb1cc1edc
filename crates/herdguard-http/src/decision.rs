//! May a stored response be served for a new request? (RFC 9111 §4, §4.2, §4.2.4, §5.2.1;
//! RFC 5861)
//!
//! [`decide`] assumes the primary key matched and the `Vary` secondary key matched
//! ([`crate::vary`]); it looks only at time and directives. The rules, in order:
//!
//! 1. Response `no-cache` (§5.2.2.4) or request `no-cache` (§5.2.1.4): validate first.
//! 2. Request `max-age` (§5.2.1.1): the age must not exceed it.
//! 3. Fresh (`lifetime > age`, §4.2): serve, unless request `min-fresh` (§5.2.1.3) wants more
//!    freshness left than there is.
//! 4. Stale: never served without validation under `must-revalidate`, `proxy-revalidate` or
//!    `s-maxage` (§4.2.4, §5.2.2.2, §5.2.2.8, §5.2.2.10) — not even with `max-stale`.
//! 5. Stale, request `max-stale` covers the staleness (§5.2.1.2): serve.
//! 6. Stale, and the request has `max-age` or `min-fresh` (the client "does not wish to receive
//!    a stale response", §5.2.1.1): validate.
//! 7. Stale within `stale-while-revalidate` (RFC 5861 §3): serve and revalidate in background.
//! 8. Otherwise validate.
//!
//! Finally, request `only-if-cached` (§5.2.1.7) turns every "validate" into "504".
//!
//! Every "validate" outcome says until when `stale-if-error` (response or request, RFC 5861 §4,
//! the larger window) lets the proxy serve the stored response if the origin fails (5xx or no
//! answer, §4.3.3). It is never allowed under `no-cache`, `must-revalidate`, `proxy-revalidate`
//! or `s-maxage` (§4.2.4), and it applies even when the client sent `no-cache` (the client asked
//! for a validation that the origin could not give).

use std::time::{Duration, SystemTime};

use crate::directives::RequestDirectives;
use crate::freshness::StoredResponse;

/// Why the stored response cannot be served without asking the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RevalidateReason {
    /// The stored response has `no-cache` (RFC 9111 §5.2.2.4).
    ResponseNoCache,
    /// The request has `no-cache` (or `Pragma: no-cache`) (§5.2.1.4).
    RequestNoCache,
    /// The response is older than the request's `max-age` (§5.2.1.1).
    RequestMaxAge,
    /// Less freshness is left than the request's `min-fresh` (§5.2.1.3).
    RequestMinFresh,
    /// Stale, and `must-revalidate`, `proxy-revalidate` or `s-maxage` forbid serving it (§4.2.4).
    MustRevalidate,
    /// Stale, and nothing permits serving it stale (§4.2.4).
    Stale,
}

impl RevalidateReason {
    /// A short token for metrics and the `Cache-Status` `detail` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            RevalidateReason::ResponseNoCache => "response-no-cache",
            RevalidateReason::RequestNoCache => "request-no-cache",
            RevalidateReason::RequestMaxAge => "request-max-age",
            RevalidateReason::RequestMinFresh => "request-min-fresh",
            RevalidateReason::MustRevalidate => "must-revalidate",
            RevalidateReason::Stale => "stale",
        }
    }

    /// Whether the cause was the request (RFC 9211 `fwd=request`) rather than the stored
    /// response's staleness or directives (`fwd=stale`).
    pub fn is_request_caused(self) -> bool {
        matches!(
            self,
            RevalidateReason::RequestNoCache
                | RevalidateReason::RequestMaxAge
                | RevalidateReason::RequestMinFresh
        )
    }
}

/// What to do with a stored response for a new request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Fresh: serve it (with an `Age` header).
    Fresh,
    /// Stale but inside its `stale-while-revalidate` window: serve it now and start one
    /// background revalidation (RFC 5861 §3).
    StaleWhileRevalidate,
    /// Stale, but the request's `max-stale` accepts it: serve it (RFC 9111 §5.2.1.2).
    StaleAllowedByRequest,
    /// Ask the origin — with a conditional request when the stored response has validators
    /// ([`crate::revalidate::conditional_headers`]).
    Revalidate {
        /// Why.
        reason: RevalidateReason,
        /// If the origin fails (5xx or no answer), the stored response may be served instead
        /// until this instant (RFC 5861 §4); `None` means it may not.
        stale_if_error_until: Option<SystemTime>,
    },
    /// The request has `only-if-cached` and the stored response cannot be used: answer `504`
    /// (RFC 9111 §5.2.1.7).
    GatewayTimeout,
}

impl Decision {
    /// Whether the stored response is sent to the client right away.
    pub fn serves_stored(&self) -> bool {
        matches!(
            self,
            Decision::Fresh | Decision::StaleWhileRevalidate | Decision::StaleAllowedByRequest
        )
    }

    /// Whether the proxy must contact the origin (now or in the background).
    pub fn contacts_origin(&self) -> bool {
        matches!(
            self,
            Decision::StaleWhileRevalidate | Decision::Revalidate { .. }
        )
    }
}

/// Decides whether `stored` may serve a request with directives `request` at `now`.
pub fn decide(stored: &StoredResponse, request: &RequestDirectives, now: SystemTime) -> Decision {
    let decision = decide_inner(stored, request, now);
    match decision {
        Decision::Revalidate { .. } if request.only_if_cached => Decision::GatewayTimeout,
        d => d,
    }
}

fn decide_inner(stored: &StoredResponse, request: &RequestDirectives, now: SystemTime) -> Decision {
    let d = &stored.policy.directives;
    let revalidate = |reason| Decision::Revalidate {
        reason,
        stale_if_error_until: stale_if_error_until(stored, request, now),
    };
    if d.always_validate() {
        return revalidate(RevalidateReason::ResponseNoCache);
    }
    if request.no_cache {
        return revalidate(RevalidateReason::RequestNoCache);
    }
    let age = stored.current_age(now);
    if request.max_age.is_some_and(|max| age > max) {
        return revalidate(RevalidateReason::RequestMaxAge);
    }
    if stored.lifetime.duration > age {
        let left = stored.lifetime.duration.saturating_sub(age);
        if request.min_fresh.is_some_and(|min| left < min) {
            return revalidate(RevalidateReason::RequestMinFresh);
        }
        return Decision::Fresh;
    }
    let staleness = age.saturating_sub(stored.lifetime.duration);
    if d.forbids_stale() {
        return revalidate(RevalidateReason::MustRevalidate);
    }
    if request.max_stale.is_some_and(|ms| ms.allows(staleness)) {
        return Decision::StaleAllowedByRequest;
    }
    if request.max_age.is_some() {
        return revalidate(RevalidateReason::RequestMaxAge);
    }
    if request.min_fresh.is_some() {
        return revalidate(RevalidateReason::RequestMinFresh);
    }
    if d.stale_while_revalidate.is_some_and(|swr| staleness <= swr) {
        return Decision::StaleWhileRevalidate;
    }
    revalidate(RevalidateReason::Stale)
}

/// Until when `stale-if-error` lets the stored response stand in for a failed origin
/// (RFC 5861 §4): `fresh_until + max(response window, request window)`, or `None` when no
/// window applies, a directive forbids it (§4.2.4), or it has already passed.
pub fn stale_if_error_until(
    stored: &StoredResponse,
    request: &RequestDirectives,
    now: SystemTime,
) -> Option<SystemTime> {
    let d = &stored.policy.directives;
    if d.always_validate() || d.forbids_stale() {
        return None;
    }
    let window = match (d.stale_if_error, request.stale_if_error) {
        (None, None) => return None,
        (a, b) => a.unwrap_or(Duration::ZERO).max(b.unwrap_or(Duration::ZERO)),
    };
    let until = stored.fresh_until()?.checked_add(window)?;
    (now <= until).then_some(until)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{at, hm};
    use crate::CacheConfig;
    use http::StatusCode;

    const T0: u64 = 1_420_070_400;
    const D0: &str = "Thu, 01 Jan 2015 00:00:00 GMT";

    fn stored(cc: &str) -> StoredResponse {
        let h = hm(&[("date", D0), ("cache-control", cc)]);
        StoredResponse::new(StatusCode::OK, &h, at(T0), at(T0), &CacheConfig::default())
    }

    fn decide_at(cc: &str, req: &str, secs: u64) -> Decision {
        decide(&stored(cc), &RequestDirectives::parse(req), at(T0 + secs))
    }

    fn reason(d: Decision) -> Option<RevalidateReason> {
        match d {
            Decision::Revalidate { reason, .. } => Some(reason),
            _ => None,
        }
    }

    #[test]
    fn rfc9111_4_2_fresh_then_stale() {
        assert_eq!(decide_at("max-age=60", "", 59), Decision::Fresh);
        assert_eq!(
            reason(decide_at("max-age=60", "", 60)),
            Some(RevalidateReason::Stale)
        );
        assert_eq!(
            reason(decide_at("max-age=0", "", 0)),
            Some(RevalidateReason::Stale)
        );
    }

    #[test]
    fn rfc9111_5_2_2_4_response_no_cache_always_validates() {
        assert_eq!(
            reason(decide_at("max-age=600, no-cache", "", 1)),
            Some(RevalidateReason::ResponseNoCache)
        );
        // Qualified: only the listed fields are kept from reuse (not stored).
        assert_eq!(
            decide_at("max-age=600, no-cache=\"set-cookie\"", "", 1),
            Decision::Fresh
        );
    }

    #[test]
    fn rfc9111_5_2_1_4_request_no_cache_validates() {
        assert_eq!(
            reason(decide_at("max-age=600", "no-cache", 1)),
            Some(RevalidateReason::RequestNoCache)
        );
    }

    #[test]
    fn rfc9111_5_2_1_1_request_max_age() {
        assert_eq!(decide_at("max-age=600", "max-age=10", 10), Decision::Fresh);
        assert_eq!(
            reason(decide_at("max-age=600", "max-age=10", 11)),
            Some(RevalidateReason::RequestMaxAge)
        );
        assert_eq!(
            reason(decide_at("max-age=600", "max-age=0", 1)),
            Some(RevalidateReason::RequestMaxAge)
        );
        // max-age without max-stale: no stale response, even inside SWR.
        assert_eq!(
            reason(decide_at(
                "max-age=10, stale-while-revalidate=100",
                "max-age=50",
                20
            )),
            Some(RevalidateReason::RequestMaxAge)
        );
        // ... but with max-stale it is fine.
        assert_eq!(
            decide_at("max-age=10", "max-age=50, max-stale=20", 20),
            Decision::StaleAllowedByRequest
        );
    }

    #[test]
    fn rfc9111_5_2_1_3_min_fresh() {
        assert_eq!(
            decide_at("max-age=100", "min-fresh=30", 70),
            Decision::Fresh
        );
        assert_eq!(
            reason(decide_at("max-age=100", "min-fresh=30", 71)),
            Some(RevalidateReason::RequestMinFresh)
        );
        assert_eq!(
            reason(decide_at(
                "max-age=10, stale-while-revalidate=100",
                "min-fresh=1",
                20
            )),
            Some(RevalidateReason::RequestMinFresh)
        );
    }

    #[test]
    fn rfc9111_5_2_1_2_max_stale() {
        assert_eq!(
            decide_at("max-age=10", "max-stale=5", 15),
            Decision::StaleAllowedByRequest
        );
        assert_eq!(
            reason(decide_at("max-age=10", "max-stale=5", 16)),
            Some(RevalidateReason::Stale)
        );
        assert_eq!(
            decide_at("max-age=10", "max-stale", 1_000_000),
            Decision::StaleAllowedByRequest
        );
    }

    #[test]
    fn rfc9111_4_2_4_must_revalidate_proxy_revalidate_s_maxage_beat_max_stale_and_swr() {
        for cc in [
            "max-age=10, must-revalidate, stale-while-revalidate=100",
            "max-age=10, proxy-revalidate, stale-while-revalidate=100",
            "s-maxage=10, stale-while-revalidate=100",
        ] {
            assert_eq!(decide_at(cc, "max-stale", 5), Decision::Fresh, "{cc}");
            let d = decide_at(cc, "max-stale", 20);
            assert_eq!(
                d,
                Decision::Revalidate {
                    reason: RevalidateReason::MustRevalidate,
                    stale_if_error_until: None
                },
                "{cc}"
            );
        }
    }

    #[test]
    fn rfc5861_3_stale_while_revalidate_window() {
        let cc = "max-age=10, stale-while-revalidate=30";
        assert_eq!(decide_at(cc, "", 5), Decision::Fresh);
        assert_eq!(decide_at(cc, "", 10), Decision::StaleWhileRevalidate);
        assert_eq!(decide_at(cc, "", 40), Decision::StaleWhileRevalidate);
        assert_eq!(reason(decide_at(cc, "", 41)), Some(RevalidateReason::Stale));
        assert!(Decision::StaleWhileRevalidate.serves_stored());
        assert!(Decision::StaleWhileRevalidate.contacts_origin());
    }

    #[test]
    fn rfc5861_4_stale_if_error_until() {
        let cc = "max-age=10, stale-if-error=100";
        assert_eq!(
            decide_at(cc, "", 50),
            Decision::Revalidate {
                reason: RevalidateReason::Stale,
                stale_if_error_until: Some(at(T0 + 110))
            }
        );
        // Beyond the window: not allowed.
        assert_eq!(
            decide_at(cc, "", 111),
            Decision::Revalidate {
                reason: RevalidateReason::Stale,
                stale_if_error_until: None
            }
        );
        // Request stale-if-error widens it; the larger window applies.
        assert_eq!(
            decide_at(cc, "stale-if-error=500", 200),
            Decision::Revalidate {
                reason: RevalidateReason::Stale,
                stale_if_error_until: Some(at(T0 + 510))
            }
        );
        assert_eq!(
            decide_at("max-age=10", "stale-if-error=5", 12),
            Decision::Revalidate {
                reason: RevalidateReason::Stale,
                stale_if_error_until: Some(at(T0 + 15))
            }
        );
        // Client no-cache: validation first, but SIE still covers an origin failure.
        assert_eq!(
            decide_at(cc, "no-cache", 1),
            Decision::Revalidate {
                reason: RevalidateReason::RequestNoCache,
                stale_if_error_until: Some(at(T0 + 110))
            }
        );
        // Forbidden under no-cache / must-revalidate.
        for cc in [
            "max-age=10, stale-if-error=100, no-cache",
            "max-age=10, stale-if-error=100, must-revalidate",
        ] {
            let d = decide_at(cc, "", 20);
            assert!(
                matches!(
                    d,
                    Decision::Revalidate {
                        stale_if_error_until: None,
                        ..
                    }
                ),
                "{cc}: {d:?}"
            );
        }
        // No window at all.
        assert_eq!(
            stale_if_error_until(&stored("max-age=10"), &RequestDirectives::default(), at(T0)),
            None
        );
    }

    #[test]
    fn rfc9111_5_2_1_7_only_if_cached() {
        assert_eq!(
            decide_at("max-age=60", "only-if-cached", 1),
            Decision::Fresh
        );
        assert_eq!(
            decide_at("max-age=60", "only-if-cached", 61),
            Decision::GatewayTimeout
        );
        assert_eq!(
            decide_at(
                "max-age=60, must-revalidate",
                "only-if-cached, max-stale",
                61
            ),
            Decision::GatewayTimeout
        );
        assert_eq!(
            decide_at("max-age=60", "only-if-cached, no-cache", 1),
            Decision::GatewayTimeout
        );
        assert_eq!(
            decide_at(
                "max-age=60, stale-while-revalidate=60",
                "only-if-cached",
                61
            ),
            Decision::StaleWhileRevalidate
        );
        assert!(!Decision::GatewayTimeout.serves_stored());
        assert!(!Decision::GatewayTimeout.contacts_origin());
    }

    #[test]
    fn rfc9111_4_2_3_age_from_upstream_counts() {
        let h = hm(&[("date", D0), ("age", "50"), ("cache-control", "max-age=60")]);
        let s = StoredResponse::new(StatusCode::OK, &h, at(T0), at(T0), &CacheConfig::default());
        let r = RequestDirectives::default();
        assert_eq!(decide(&s, &r, at(T0 + 9)), Decision::Fresh);
        assert_eq!(
            reason(decide(&s, &r, at(T0 + 10))),
            Some(RevalidateReason::Stale)
        );
    }

    #[test]
    fn rfc9211_reason_names_and_fwd_mapping() {
        assert!(RevalidateReason::RequestMaxAge.is_request_caused());
        assert!(!RevalidateReason::Stale.is_request_caused());
        assert!(!RevalidateReason::ResponseNoCache.is_request_caused());
        for r in [
            RevalidateReason::ResponseNoCache,
            RevalidateReason::RequestNoCache,
            RevalidateReason::RequestMaxAge,
            RevalidateReason::RequestMinFresh,
            RevalidateReason::MustRevalidate,
            RevalidateReason::Stale,
        ] {
            assert!(crate::sf::is_sf_token(r.as_str()));
        }
    }
}
