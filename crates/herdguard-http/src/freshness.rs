//! Freshness lifetime (RFC 9111 §4.2.1, §4.2.2) and age (§4.2.3) of a stored response.
//!
//! Every function takes explicit timestamps ([`SystemTime`]) so tests need no sleeping, and all
//! arithmetic saturates: no date or duration, however absurd, can panic or wrap.
//!
//! The proxy computes a [`StoredResponse`] once when it stores (or freshens) a response and keeps
//! it next to the body; [`crate::decision::decide`] then needs only that and the new request.

use std::time::{Duration, SystemTime};

use http::header::{HeaderValue, AGE, DATE, EXPIRES, LAST_MODIFIED};
use http::{HeaderMap, StatusCode};

use crate::directives::{ResponsePolicy, MAX_DELTA_SECONDS};
use crate::CacheConfig;

/// Where a freshness lifetime came from (RFC 9111 §4.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifetimeSource {
    /// The `s-maxage` directive (shared caches only).
    SMaxAge,
    /// The `max-age` directive.
    MaxAge,
    /// `Expires` minus `Date`.
    Expires,
    /// A heuristic (§4.2.2): a fraction of the time since `Last-Modified`.
    Heuristic,
    /// No explicit expiration and no heuristic allowed or possible: lifetime 0.
    None,
    /// Set by the cache's operator for responses that state none (nginx's
    /// `proxy_cache_valid`): [`StoredResponse::with_default_lifetime`].
    Configured,
}

/// A freshness lifetime and its origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// How long the response is fresh, counted from its generation at the origin.
    pub duration: Duration,
    /// Which rule produced it.
    pub source: LifetimeSource,
}

/// Parses an HTTP-date field value (RFC 9110 §5.6.7: IMF-fixdate, RFC 850, asctime), with
/// day and month names and `GMT` in any case (they are case-sensitive in the grammar, but
/// recipients are asked to be lenient: "Recipients of timestamp values are encouraged to be
/// robust in parsing timestamps").
pub fn parse_http_date(value: &HeaderValue) -> Option<SystemTime> {
    let s = value.to_str().ok()?.trim();
    if let Ok(t) = httpdate::parse_http_date(s) {
        return Some(t);
    }
    // Slow path, for dates not in the canonical case: "Sun", "Sunday", "Nov", "GMT".
    let mut canonical = String::with_capacity(s.len());
    let mut word_start = true;
    for c in s.chars() {
        if c.is_ascii_alphabetic() {
            canonical.push(if word_start {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            });
            word_start = false;
        } else {
            canonical.push(c);
            word_start = true;
        }
    }
    let canonical = canonical.replace("Gmt", "GMT");
    httpdate::parse_http_date(&canonical).ok()
}

/// Formats a timestamp as an IMF-fixdate header value.
pub fn format_http_date(time: SystemTime) -> HeaderValue {
    // IMF-fixdate is always visible ASCII; the fallback cannot happen but avoids a panic path.
    HeaderValue::from_str(&httpdate::fmt_http_date(time))
        .unwrap_or_else(|_| HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}

/// The single value of a singleton date field; `None` when absent, invalid, or when several
/// lines disagree.
fn single_date(headers: &HeaderMap, name: &http::header::HeaderName) -> Option<SystemTime> {
    let mut found: Option<SystemTime> = None;
    for v in headers.get_all(name) {
        let d = parse_http_date(v)?;
        match found {
            Some(prev) if prev != d => return None,
            _ => found = Some(d),
        }
    }
    found
}

/// The `Date` of a response, if present and valid.
pub fn date_value(headers: &HeaderMap) -> Option<SystemTime> {
    single_date(headers, &DATE)
}

/// The `Age` of a response in seconds: the first member of the first line; invalid values are
/// ignored (0), huge ones saturate at 2^31 (RFC 9111 §5.1).
pub fn age_value(headers: &HeaderMap) -> Duration {
    let Some(first) = headers.get(AGE) else {
        return Duration::ZERO;
    };
    let Ok(s) = first.to_str() else {
        return Duration::ZERO;
    };
    let member = s.split(',').next().unwrap_or("").trim();
    if member.is_empty() || !member.bytes().all(|c| c.is_ascii_digit()) {
        return Duration::ZERO;
    }
    let mut v: u64 = 0;
    for c in member.bytes() {
        v = v
            .saturating_mul(10)
            .saturating_add(u64::from(c - b'0'))
            .min(MAX_DELTA_SECONDS);
    }
    Duration::from_secs(v)
}

/// `a - b`, or zero when `b` is later.
fn since(a: SystemTime, b: SystemTime) -> Duration {
    a.duration_since(b).unwrap_or(Duration::ZERO)
}

/// `apparent_age = max(0, response_time - date_value)` (RFC 9111 §4.2.3).
pub fn apparent_age(date: SystemTime, response_time: SystemTime) -> Duration {
    since(response_time, date)
}

/// `corrected_initial_age` (RFC 9111 §4.2.3): the larger of the apparent age and
/// `Age + (response_time - request_time)`. A missing `Date` means `date_value = response_time`
/// (RFC 9110 §6.6.1: the recipient records the time it received the message).
pub fn corrected_initial_age(
    headers: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Duration {
    let date = date_value(headers).unwrap_or(response_time);
    let apparent = apparent_age(date, response_time);
    let response_delay = since(response_time, request_time);
    let corrected_age_value = age_value(headers).saturating_add(response_delay);
    apparent.max(corrected_age_value)
}

/// `current_age = corrected_initial_age + resident_time`, `resident_time = now - response_time`
/// (RFC 9111 §4.2.3).
pub fn current_age(
    corrected_initial_age: Duration,
    response_time: SystemTime,
    now: SystemTime,
) -> Duration {
    corrected_initial_age.saturating_add(since(now, response_time))
}

/// Status codes that are heuristically cacheable (RFC 9110 §15.1), except 206, which this crate
/// does not store (no range support).
pub fn is_heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// The freshness lifetime of a response for a shared cache (RFC 9111 §4.2.1): `s-maxage`, else
/// `max-age`, else `Expires - Date` (only when the policy comes from `Cache-Control`), else a
/// heuristic (§4.2.2) when allowed: `config.heuristic_percent` of `Date - Last-Modified`, capped
/// at `config.max_heuristic_freshness`.
///
/// `Expires` that is invalid (e.g. `0`) or given several times with different values means
/// "already expired" (§5.3, §4.2.1).
pub fn freshness_lifetime(
    status: StatusCode,
    headers: &HeaderMap,
    policy: &ResponsePolicy,
    response_time: SystemTime,
    config: &CacheConfig,
) -> Lifetime {
    let d = &policy.directives;
    if let Some(s) = d.s_maxage {
        return Lifetime {
            duration: s,
            source: LifetimeSource::SMaxAge,
        };
    }
    if let Some(m) = d.max_age {
        return Lifetime {
            duration: m,
            source: LifetimeSource::MaxAge,
        };
    }
    let date = date_value(headers).unwrap_or(response_time);
    if policy.uses_expires() && headers.contains_key(EXPIRES) {
        let duration = single_date(headers, &EXPIRES)
            .map(|expires| since(expires, date))
            .unwrap_or(Duration::ZERO);
        return Lifetime {
            duration,
            source: LifetimeSource::Expires,
        };
    }
    if is_heuristically_cacheable(status) || d.public {
        if let Some(lm) = single_date(headers, &LAST_MODIFIED) {
            let interval = since(date, lm);
            let pct = u128::from(config.heuristic_percent.min(100));
            let millis = interval.as_millis().saturating_mul(pct) / 100;
            let millis = u64::try_from(millis).unwrap_or(u64::MAX);
            let duration = Duration::from_millis(millis).min(config.max_heuristic_freshness);
            return Lifetime {
                duration,
                source: LifetimeSource::Heuristic,
            };
        }
    }
    Lifetime {
        duration: Duration::ZERO,
        source: LifetimeSource::None,
    }
}

/// What the cache knows about one stored response, computed once at store (or freshen) time.
///
/// Keep it beside the stored headers and body; pass it to [`crate::decision::decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// The stored status code.
    pub status: StatusCode,
    /// The directives governing this cache (RFC 9213 choice already made).
    pub policy: ResponsePolicy,
    /// The freshness lifetime (§4.2.1).
    pub lifetime: Lifetime,
    /// `corrected_initial_age` (§4.2.3).
    pub corrected_initial_age: Duration,
    /// When the request that produced the response was sent.
    pub request_time: SystemTime,
    /// When the response was received.
    pub response_time: SystemTime,
}

impl StoredResponse {
    /// Computes policy, lifetime and initial age. After a 304 freshens the entry, call it again
    /// with the updated headers and the 304's request/response times (RFC 9111 §4.3.4).
    pub fn new(
        status: StatusCode,
        headers: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
        config: &CacheConfig,
    ) -> Self {
        let policy = ResponsePolicy::from_headers(headers, config);
        let lifetime = freshness_lifetime(status, headers, &policy, response_time, config);
        StoredResponse {
            status,
            policy,
            lifetime,
            corrected_initial_age: corrected_initial_age(headers, request_time, response_time),
            request_time,
            response_time,
        }
    }

    /// With `lifetime` as the freshness lifetime when the response states none
    /// (its lifetime is a heuristic or nothing), as an operator's default may
    /// give it; an explicit `max-age`, `s-maxage` or `Expires` is kept.
    pub fn with_default_lifetime(mut self, lifetime: Duration) -> Self {
        if matches!(
            self.lifetime.source,
            LifetimeSource::Heuristic | LifetimeSource::None
        ) {
            self.lifetime = Lifetime {
                duration: lifetime,
                source: LifetimeSource::Configured,
            };
        }
        self
    }

    /// `current_age` at `now` (§4.2.3).
    pub fn current_age(&self, now: SystemTime) -> Duration {
        current_age(self.corrected_initial_age, self.response_time, now)
    }

    /// Whether the response is fresh at `now`: `lifetime > current_age` (§4.2).
    pub fn is_fresh(&self, now: SystemTime) -> bool {
        self.lifetime.duration > self.current_age(now)
    }

    /// How much freshness is left (zero when stale).
    pub fn remaining_freshness(&self, now: SystemTime) -> Duration {
        self.lifetime.duration.saturating_sub(self.current_age(now))
    }

    /// How long the response has been stale (zero when fresh).
    pub fn staleness(&self, now: SystemTime) -> Duration {
        self.current_age(now).saturating_sub(self.lifetime.duration)
    }

    /// Remaining freshness in whole seconds, negative once stale — the RFC 9211 `ttl` parameter.
    pub fn ttl_seconds(&self, now: SystemTime) -> i64 {
        let age = self.current_age(now).as_secs();
        let life = self.lifetime.duration.as_secs();
        if life >= age {
            i64::try_from(life - age).unwrap_or(i64::MAX)
        } else {
            i64::try_from(age - life).map_or(i64::MIN, |v| -v)
        }
    }

    /// The instant the response becomes stale (`None` if not representable).
    pub fn fresh_until(&self) -> Option<SystemTime> {
        let left = self
            .lifetime
            .duration
            .saturating_sub(self.corrected_initial_age);
        self.response_time.checked_add(left)
    }

    /// The last instant at which the response could still be served without contacting the
    /// origin under its own `stale-while-revalidate` / `stale-if-error` windows. Past this, the
    /// entry is only useful for conditional revalidation (and only if it has validators).
    pub fn stale_usable_until(&self) -> Option<SystemTime> {
        let d = &self.policy.directives;
        let window = d
            .stale_while_revalidate
            .unwrap_or(Duration::ZERO)
            .max(d.stale_if_error.unwrap_or(Duration::ZERO));
        self.fresh_until()?.checked_add(window)
    }

    /// The `Age` header value to send when serving this response at `now` (RFC 9111 §5.1).
    pub fn age_header(&self, now: SystemTime) -> HeaderValue {
        age_header_value(self.current_age(now))
    }
}

/// An `Age` header value in whole seconds, saturating at 2^31 (RFC 9111 §5.1, §1.2.2).
pub fn age_header_value(age: Duration) -> HeaderValue {
    HeaderValue::from(age.as_secs().min(MAX_DELTA_SECONDS))
}

/// Sets `Age` on a response about to be served from cache, replacing any present
/// (RFC 9111 §4: "a cache MUST generate an Age header field, replacing any present").
pub fn set_age(headers: &mut HeaderMap, age: Duration) {
    headers.insert(AGE, age_header_value(age));
}

/// Adds a `Date` (the time the response was received) when the response has none; a recipient
/// with a clock must do so before caching or forwarding (RFC 9110 §6.6.1). Returns whether it did.
pub fn ensure_date(headers: &mut HeaderMap, response_time: SystemTime) -> bool {
    if headers.contains_key(DATE) {
        return false;
    }
    headers.insert(DATE, format_http_date(response_time));
    true
}

/// Removes the fields through which an origin tells caches how long to keep a
/// response and whether to share it — `Cache-Control`, `Expires`, `Pragma` and
/// the targeted fields `config` obeys (RFC 9213) — so that a cache told by its
/// operator to ignore them (nginx's `proxy_ignore_headers`) sees none.
pub fn without_freshness_fields(headers: &HeaderMap, config: &CacheConfig) -> HeaderMap {
    let mut kept = headers.clone();
    for name in [http::header::CACHE_CONTROL, EXPIRES, http::header::PRAGMA]
        .iter()
        .chain(&config.target_fields)
    {
        kept.remove(name);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{at, hm};

    #[test]
    fn http_dates_in_all_three_formats_and_any_case() {
        let t = at(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        for text in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "sun, 06 nov 1994 08:49:37 gmt",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "SUNDAY, 06-NOV-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "sun NOV  6 08:49:37 1994",
        ] {
            assert_eq!(
                parse_http_date(&HeaderValue::from_static(text)),
                Some(t),
                "{text}"
            );
        }
        for bad in [
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nox 1994 08:49:37 GMT",
            "",
        ] {
            assert_eq!(
                parse_http_date(&HeaderValue::from_static(bad)),
                None,
                "{bad}"
            );
        }
    }

    fn lifetime(status: u16, pairs: &[(&str, &str)], response_time: SystemTime) -> Lifetime {
        let h = hm(pairs);
        let config = CacheConfig::default();
        let policy = ResponsePolicy::from_headers(&h, &config);
        freshness_lifetime(
            StatusCode::from_u16(status).unwrap(),
            &h,
            &policy,
            response_time,
            &config,
        )
    }

    const D0: &str = "Thu, 01 Jan 2015 00:00:00 GMT"; // at(1_420_070_400)
    const T0: u64 = 1_420_070_400;

    #[test]
    fn rfc9111_4_2_1_s_maxage_beats_max_age_beats_expires() {
        let l = lifetime(
            200,
            &[
                ("cache-control", "max-age=10, s-maxage=20"),
                ("date", D0),
                ("expires", "Thu, 01 Jan 2015 01:00:00 GMT"),
            ],
            at(T0),
        );
        assert_eq!(l.duration, Duration::from_secs(20));
        assert_eq!(l.source, LifetimeSource::SMaxAge);
        let l = lifetime(
            200,
            &[
                ("cache-control", "max-age=10"),
                ("date", D0),
                ("expires", "Thu, 01 Jan 2015 01:00:00 GMT"),
            ],
            at(T0),
        );
        assert_eq!(
            (l.duration.as_secs(), l.source),
            (10, LifetimeSource::MaxAge)
        );
        let l = lifetime(
            200,
            &[("date", D0), ("expires", "Thu, 01 Jan 2015 01:00:00 GMT")],
            at(T0 + 5),
        );
        assert_eq!(
            (l.duration.as_secs(), l.source),
            (3600, LifetimeSource::Expires)
        );
    }

    #[test]
    fn rfc9111_4_2_1_expires_without_date_uses_response_time() {
        let l = lifetime(
            200,
            &[("expires", "Thu, 01 Jan 2015 00:01:40 GMT")],
            at(T0 + 40),
        );
        assert_eq!(l.duration, Duration::from_secs(60));
    }

    #[test]
    fn rfc9111_5_3_invalid_or_past_or_conflicting_expires_is_expired() {
        for e in ["0", "-1", "garbage", "Thu, 01 Jan 2014 00:00:00 GMT"] {
            let l = lifetime(200, &[("date", D0), ("expires", e)], at(T0));
            assert_eq!(l.duration, Duration::ZERO, "{e}");
            assert_eq!(l.source, LifetimeSource::Expires);
        }
        let l = lifetime(
            200,
            &[
                ("date", D0),
                ("expires", "Thu, 01 Jan 2015 01:00:00 GMT"),
                ("expires", "Thu, 01 Jan 2015 02:00:00 GMT"),
            ],
            at(T0),
        );
        assert_eq!(l.duration, Duration::ZERO);
    }

    #[test]
    fn rfc9111_4_2_2_heuristic_ten_percent_of_last_modified_age() {
        // Last-Modified 1000 s before Date → 100 s.
        let l = lifetime(
            200,
            &[
                ("date", D0),
                ("last-modified", "Wed, 31 Dec 2014 23:43:20 GMT"),
            ],
            at(T0),
        );
        assert_eq!(
            (l.duration.as_secs(), l.source),
            (100, LifetimeSource::Heuristic)
        );
    }

    #[test]
    fn rfc9111_4_2_2_heuristic_capped_by_config() {
        let l = lifetime(
            200,
            &[
                ("date", D0),
                ("last-modified", "Sat, 01 Jan 2000 00:00:00 GMT"),
            ],
            at(T0),
        );
        assert_eq!(l.duration, Duration::from_secs(86_400));
    }

    #[test]
    fn rfc9111_4_2_2_heuristic_only_for_listed_status_or_public() {
        let lm = ("last-modified", "Wed, 31 Dec 2014 23:43:20 GMT");
        let l = lifetime(302, &[("date", D0), lm], at(T0));
        assert_eq!(
            (l.duration, l.source),
            (Duration::ZERO, LifetimeSource::None)
        );
        let l = lifetime(
            302,
            &[("date", D0), lm, ("cache-control", "public")],
            at(T0),
        );
        assert_eq!(l.duration.as_secs(), 100);
        // Last-Modified in the future: zero.
        let l = lifetime(
            200,
            &[
                ("date", D0),
                ("last-modified", "Fri, 01 Jan 2016 00:00:00 GMT"),
            ],
            at(T0),
        );
        assert_eq!(l.duration, Duration::ZERO);
        // No Last-Modified: no heuristic lifetime.
        let l = lifetime(200, &[("date", D0)], at(T0));
        assert_eq!(l.source, LifetimeSource::None);
    }

    #[test]
    fn rfc9213_targeted_policy_ignores_expires() {
        let l = lifetime(
            302,
            &[
                ("date", D0),
                ("expires", "Thu, 01 Jan 2015 01:00:00 GMT"),
                ("cdn-cache-control", "must-revalidate"),
            ],
            at(T0),
        );
        assert_eq!(l.source, LifetimeSource::None);
    }

    #[test]
    fn rfc9111_4_2_3_age_calculation() {
        // Date 10 s before receipt, Age 30, 2 s round trip.
        let h = hm(&[("date", D0), ("age", "30")]);
        let cia = corrected_initial_age(&h, at(T0 + 8), at(T0 + 10));
        // apparent = 10, corrected_age_value = 30 + 2 = 32.
        assert_eq!(cia, Duration::from_secs(32));
        assert_eq!(
            current_age(cia, at(T0 + 10), at(T0 + 110)),
            Duration::from_secs(132)
        );
        // Apparent age dominates when Age is small.
        let h = hm(&[("date", D0), ("age", "1")]);
        assert_eq!(
            corrected_initial_age(&h, at(T0 + 50), at(T0 + 50)),
            Duration::from_secs(50)
        );
        // Date in the future: apparent age 0, no negative ages.
        let h = hm(&[("date", D0)]);
        assert_eq!(
            corrected_initial_age(&h, at(T0 - 100), at(T0 - 100)),
            Duration::ZERO
        );
        // now before response_time (clock step back): resident time 0.
        assert_eq!(
            current_age(Duration::from_secs(5), at(T0), at(T0 - 10)),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn rfc9111_5_1_age_field_parsing() {
        assert_eq!(age_value(&hm(&[("age", "15")])), Duration::from_secs(15));
        assert_eq!(
            age_value(&hm(&[("age", "15, 20")])),
            Duration::from_secs(15)
        );
        assert_eq!(age_value(&hm(&[("age", "-3")])), Duration::ZERO);
        assert_eq!(age_value(&hm(&[("age", "abc")])), Duration::ZERO);
        assert_eq!(age_value(&hm(&[])), Duration::ZERO);
        assert_eq!(
            age_value(&hm(&[("age", "999999999999999999999999")])),
            Duration::from_secs(MAX_DELTA_SECONDS)
        );
    }

    #[test]
    fn rfc9111_4_2_stored_response_fresh_stale_ttl() {
        let h = hm(&[("date", D0), ("cache-control", "max-age=100")]);
        let s = StoredResponse::new(StatusCode::OK, &h, at(T0), at(T0), &CacheConfig::default());
        assert!(s.is_fresh(at(T0 + 99)));
        assert!(!s.is_fresh(at(T0 + 100)));
        assert_eq!(s.ttl_seconds(at(T0 + 30)), 70);
        assert_eq!(s.ttl_seconds(at(T0 + 130)), -30);
        assert_eq!(s.staleness(at(T0 + 130)), Duration::from_secs(30));
        assert_eq!(s.remaining_freshness(at(T0 + 130)), Duration::ZERO);
        assert_eq!(s.fresh_until(), Some(at(T0 + 100)));
        assert_eq!(s.age_header(at(T0 + 42)), HeaderValue::from_static("42"));
    }

    #[test]
    fn rfc5861_stale_usable_until_covers_largest_window() {
        let h = hm(&[
            ("date", D0),
            (
                "cache-control",
                "max-age=10, stale-while-revalidate=20, stale-if-error=300",
            ),
        ]);
        let s = StoredResponse::new(StatusCode::OK, &h, at(T0), at(T0), &CacheConfig::default());
        assert_eq!(s.stale_usable_until(), Some(at(T0 + 310)));
    }

    #[test]
    fn extreme_times_do_not_panic() {
        let h = hm(&[
            ("cache-control", "max-age=2147483648"),
            ("age", "2147483648"),
        ]);
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX) * 64);
        let s = StoredResponse::new(
            StatusCode::OK,
            &h,
            SystemTime::UNIX_EPOCH,
            far,
            &CacheConfig::default(),
        );
        let _ = s.ttl_seconds(SystemTime::UNIX_EPOCH);
        let _ = s.stale_usable_until();
        let _ = s.is_fresh(far);
        let _ = s.age_header(far);
    }

    #[test]
    fn rfc9110_6_6_1_ensure_date_and_age_header() {
        let mut h = HeaderMap::new();
        assert!(ensure_date(&mut h, at(T0)));
        assert_eq!(h.get(DATE).unwrap(), D0);
        assert!(!ensure_date(&mut h, at(T0 + 5)));
        assert_eq!(h.get(DATE).unwrap(), D0);
        set_age(&mut h, Duration::from_secs(3));
        set_age(&mut h, Duration::from_secs(7));
        assert_eq!(h.get_all(AGE).iter().count(), 1);
        assert_eq!(h.get(AGE).unwrap(), "7");
        assert_eq!(
            age_header_value(Duration::from_secs(u64::MAX)),
            HeaderValue::from(MAX_DELTA_SECONDS)
        );
    }

    #[test]
    fn a_default_lifetime_replaces_only_a_lifetime_the_response_does_not_state() {
        let config = CacheConfig::default();
        let stored = |pairs: &[(&str, &str)]| {
            StoredResponse::new(StatusCode::OK, &hm(pairs), at(T0), at(T0), &config)
                .with_default_lifetime(Duration::from_secs(60))
        };
        let none = stored(&[("date", D0)]);
        assert_eq!(none.lifetime.duration, Duration::from_secs(60));
        assert_eq!(none.lifetime.source, LifetimeSource::Configured);
        let heuristic = stored(&[
            ("date", D0),
            ("last-modified", "Sat, 06 Nov 1993 08:49:37 GMT"),
        ]);
        assert_eq!(heuristic.lifetime.source, LifetimeSource::Configured);
        let explicit = stored(&[("date", D0), ("cache-control", "max-age=5")]);
        assert_eq!(explicit.lifetime.duration, Duration::from_secs(5));
        assert_eq!(explicit.lifetime.source, LifetimeSource::MaxAge);
        let expires = stored(&[("date", D0), ("expires", D0)]);
        assert_eq!(expires.lifetime.duration, Duration::ZERO);
        assert_eq!(expires.lifetime.source, LifetimeSource::Expires);
    }

    #[test]
    fn freshness_fields_are_removed_with_the_targeted_ones() {
        let config = CacheConfig::default();
        let h = hm(&[
            ("cache-control", "private, no-store"),
            ("expires", "0"),
            ("pragma", "no-cache"),
            ("cdn-cache-control", "no-store"),
            ("herdguard-cache-control", "max-age=1"),
            ("etag", "\"a\""),
        ]);
        let kept = without_freshness_fields(&h, &config);
        assert_eq!(kept.len(), 1);
        assert!(kept.contains_key("etag"));
    }
}
