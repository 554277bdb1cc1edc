//! Freshness policy: TTL and jitter, X-Fetch early refresh, stale windows,
//! negative caching and wait deadlines — per cache, overridable per call.

use std::time::Duration;

use crate::clock::Timestamp;
use crate::entry::Entry;
use crate::error::ConfigError;

/// The freshness rules of a cache. Built and validated by
/// [`CacheBuilder`](crate::CacheBuilder); per call, [`CallOptions`] override them.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub(crate) ttl: Duration,
    pub(crate) jitter: f64,
    pub(crate) early_refresh_beta: Option<f64>,
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
    pub(crate) negative_ttl: Option<Duration>,
    pub(crate) wait_timeout: Option<Duration>,
    pub(crate) uncacheable_ttl: Duration,
    pub(crate) load_timeout: Duration,
    /// Per call only: load even when the stored entry is fresh.
    pub(crate) revalidate: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            ttl: Duration::from_secs(60),
            jitter: 0.0,
            early_refresh_beta: None,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            negative_ttl: None,
            wait_timeout: None,
            uncacheable_ttl: Duration::from_secs(10),
            load_timeout: Duration::from_secs(30),
            revalidate: false,
        }
    }
}

impl Policy {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.ttl.is_zero() {
            return Err(ConfigError::Zero("ttl"));
        }
        check_jitter(self.jitter)?;
        if let Some(beta) = self.early_refresh_beta {
            check_beta(beta)?;
        }
        if self.negative_ttl.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::Zero("negative_ttl"));
        }
        if self.wait_timeout.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::Zero("wait_timeout"));
        }
        if self.uncacheable_ttl.is_zero() {
            return Err(ConfigError::Zero("uncacheable_ttl"));
        }
        if self.load_timeout.is_zero() {
            return Err(ConfigError::Zero("load_timeout"));
        }
        Ok(())
    }

    /// This policy with the call's overrides applied.
    pub(crate) fn with(&self, call: &CallOptions) -> Result<Policy, ConfigError> {
        let mut p = self.clone();
        if let Some(ttl) = call.ttl {
            p.ttl = ttl;
        }
        if let Some(beta) = call.early_refresh_beta {
            p.early_refresh_beta = beta;
        }
        if let Some(d) = call.stale_while_revalidate {
            p.stale_while_revalidate = d;
        }
        if let Some(d) = call.stale_if_error {
            p.stale_if_error = d;
        }
        if let Some(d) = call.wait_timeout {
            p.wait_timeout = Some(d);
        }
        if let Some(d) = call.load_timeout {
            p.load_timeout = d;
        }
        p.revalidate = call.revalidate;
        p.validate()?;
        Ok(p)
    }

    /// The TTL of one new entry: `ttl · (1 − jitter · u)` for `u` uniform in
    /// `[0, 1)`, so it lies in `(ttl · (1 − jitter), ttl]`. Jitter spreads the
    /// expiries of keys written together, so they do not all expire together.
    pub(crate) fn jittered_ttl(&self, ttl: Duration, u: f64) -> Duration {
        if self.jitter == 0.0 {
            return ttl;
        }
        ttl.mul_f64(1.0 - self.jitter * u.clamp(0.0, 1.0))
    }
}

pub(crate) fn check_beta(beta: f64) -> Result<(), ConfigError> {
    if beta.is_finite() && beta > 0.0 {
        Ok(())
    } else {
        Err(ConfigError::Beta(beta))
    }
}

pub(crate) fn check_jitter(jitter: f64) -> Result<(), ConfigError> {
    if (0.0..1.0).contains(&jitter) {
        Ok(())
    } else {
        Err(ConfigError::Jitter(jitter))
    }
}

/// Per-call overrides of the cache's [`Policy`]. Unset fields keep the cache's value.
///
/// ```
/// use herdguard::CallOptions;
/// use std::time::Duration;
///
/// let opts = CallOptions::new()
///     .ttl(Duration::from_secs(5))
///     .wait_timeout(Duration::from_millis(200));
/// # let _ = opts;
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallOptions {
    ttl: Option<Duration>,
    early_refresh_beta: Option<Option<f64>>,
    stale_while_revalidate: Option<Duration>,
    stale_if_error: Option<Duration>,
    wait_timeout: Option<Duration>,
    load_timeout: Option<Duration>,
    revalidate: bool,
}

impl CallOptions {
    /// No overrides.
    pub fn new() -> Self {
        Self::default()
    }

    /// TTL of the value this call loads.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// X-Fetch β for this call (> 0).
    pub fn early_refresh_beta(mut self, beta: f64) -> Self {
        self.early_refresh_beta = Some(Some(beta));
        self
    }

    /// No X-Fetch early refresh for this call.
    pub fn no_early_refresh(mut self) -> Self {
        self.early_refresh_beta = Some(None);
        self
    }

    /// Stale-while-revalidate window of the value this call loads.
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.stale_while_revalidate = Some(window);
        self
    }

    /// Stale-if-error window of the value this call loads.
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.stale_if_error = Some(window);
        self
    }

    /// How long this caller waits for a load before it gets a stale value (inside
    /// the stale-if-error window) or [`Error::Timeout`](crate::Error::Timeout).
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = Some(timeout);
        self
    }

    /// The longest the load this call starts may run before it is cancelled
    /// with [`Error::LoadTimeout`](crate::Error::LoadTimeout).
    pub fn load_timeout(mut self, timeout: Duration) -> Self {
        self.load_timeout = Some(timeout);
        self
    }

    /// Load even if the stored entry is fresh (an HTTP client's `no-cache`, a
    /// user's "refresh"), and answer with what that load produces: a value
    /// produced after this call started, never the stored one.
    ///
    /// Coalesced like any load: concurrent revalidating callers share one load
    /// (fleet-wide with a shared store), while everybody else keeps getting the
    /// stored entry until the new one replaces it — which also stays the
    /// stale-if-error fallback should the load fail.
    ///
    /// ```
    /// use herdguard::{Cache, CallOptions, Served};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let cache: Cache<&str, u32> = Cache::builder().build()?;
    /// cache.insert("k", 1).await?;
    /// let fresh = cache
    ///     .get_or_load_with("k", &CallOptions::new().revalidate(), || async {
    ///         Ok::<_, std::io::Error>(herdguard::Loaded::new(2))
    ///     })
    ///     .await?;
    /// assert_eq!((*fresh, fresh.served()), (2, Served::Loaded));
    /// # Ok(())
    /// # }
    /// ```
    pub fn revalidate(mut self) -> Self {
        self.revalidate = true;
        self
    }
}

/// What a loader of [`Cache::get_or_load_with`](crate::Cache::get_or_load_with)
/// returns: the value and, optionally, freshness decided from the value itself
/// (an HTTP response's Cache-Control, say).
#[derive(Debug)]
pub struct Loaded<V> {
    pub(crate) value: V,
    pub(crate) ttl: Option<Duration>,
    pub(crate) stale_while_revalidate: Option<Duration>,
    pub(crate) stale_if_error: Option<Duration>,
    pub(crate) cacheable: bool,
}

impl<V> Loaded<V> {
    /// A cacheable value under the call's policy.
    pub fn new(value: V) -> Self {
        Loaded {
            value,
            ttl: None,
            stale_while_revalidate: None,
            stale_if_error: None,
            cacheable: true,
        }
    }

    /// A value that must not be stored nor shared: the caller that loaded it gets
    /// it; callers that waited on this load call the origin themselves, in
    /// parallel; and for a while the key skips coalescing altogether (the
    /// hit-for-miss lesson of Varnish: never queue callers behind an answer they
    /// cannot share).
    pub fn uncacheable(value: V) -> Self {
        Loaded {
            cacheable: false,
            ..Loaded::new(value)
        }
    }

    /// The value's own TTL (a zero TTL stores it already stale).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The value's own stale-while-revalidate window.
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.stale_while_revalidate = Some(window);
        self
    }

    /// The value's own stale-if-error window.
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.stale_if_error = Some(window);
        self
    }
}

/// How an entry stands at a moment, for a reader with a given X-Fetch β.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// Serve it.
    Fresh,
    /// Serve it and start one early refresh (X-Fetch fired).
    EarlyRefresh,
    /// Expired, inside the stale-while-revalidate window: serve it and refresh.
    StaleWhileRevalidate,
    /// Expired: load (it may still stand in on error).
    Expired,
}

/// The largest value of `−ln(u)` for `u` in `(0, 1]` drawn with 53 random bits
/// (`−ln(2⁻⁵³) ≈ 36.7`): farther than `Δ·β·37` from expiry, X-Fetch cannot fire,
/// so the hit path skips the random draw.
const XFETCH_MAX_EXP: f64 = 37.0;

pub(crate) fn classify<V>(
    entry: &Entry<V>,
    now: Timestamp,
    beta: Option<f64>,
    draw: impl FnOnce() -> f64,
) -> Freshness {
    let expires = entry.expires_at();
    if now < expires {
        if let Some((remaining, scale)) = refresh_window(entry, now, beta) {
            if xfetch_fires(remaining, scale, draw()) {
                return Freshness::EarlyRefresh;
            }
        }
        Freshness::Fresh
    } else if now < entry.revalidate_until() {
        Freshness::StaleWhileRevalidate
    } else {
        Freshness::Expired
    }
}

/// Whether an entry fresh at `now` may be refreshed early under `beta`: then
/// its seconds remaining and X-Fetch scale (`Δ·β`), else `None` (too far from
/// its expiry for the draw ever to fire).
fn refresh_window<V>(entry: &Entry<V>, now: Timestamp, beta: Option<f64>) -> Option<(f64, f64)> {
    let beta = beta?;
    let remaining = entry
        .expires_at()
        .saturating_duration_since(now)
        .as_secs_f64();
    let scale = entry.meta().load_duration.as_secs_f64() * beta;
    (remaining < scale * XFETCH_MAX_EXP).then_some((remaining, scale))
}

/// Whether `entry` is served as a plain hit at `now` whatever the draw: fresh,
/// and outside its early-refresh window.
pub(crate) fn surely_fresh<V>(entry: &Entry<V>, now: Timestamp, beta: Option<f64>) -> bool {
    now < entry.expires_at() && refresh_window(entry, now, beta).is_none()
}

/// X-Fetch (Vattani, Chierichetti, Lowenstein, VLDB 2015): refresh when
/// `now − Δ·β·ln(u) ≥ expiry`, i.e. when `remaining ≤ Δ·β·(−ln u)`, with `u`
/// uniform in `(0, 1]`. The chance of firing at `remaining` before expiry is
/// `exp(−remaining / (Δ·β))`: rare far from expiry, certain at it, and earlier for
/// values that are slow to load.
///
/// `u01` is uniform in `[0, 1)`; `1 − u01` maps it onto `(0, 1]`.
pub(crate) fn xfetch_fires(remaining_secs: f64, delta_beta_secs: f64, u01: f64) -> bool {
    let u = 1.0 - u01;
    remaining_secs <= -delta_beta_secs * u.ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::EntryMeta;

    fn entry(ttl: Duration, delta: Duration, swr: Duration) -> (Entry<()>, Timestamp) {
        let created = Timestamp::from_unix_nanos(1_000_000_000_000);
        let meta = EntryMeta {
            created,
            ttl,
            stale_while_revalidate: swr,
            stale_if_error: Duration::ZERO,
            load_duration: delta,
            version: 1,
        };
        (Entry::new((), meta), created)
    }

    /// The frequency of early refresh at time t before expiry, with seeded
    /// randomness, matches exp(−(expiry − t)/(Δ·β)) within sampling error
    /// (binomial, 5 standard deviations).
    #[test]
    fn xfetch_frequency_matches_the_exponential_law() {
        let delta = Duration::from_millis(200);
        let ttl = Duration::from_secs(10);
        let (e, created) = entry(ttl, delta, Duration::ZERO);
        let mut rng = fastrand::Rng::with_seed(42);
        let n = 20_000u32;
        for beta in [0.5, 1.0, 2.0] {
            for before_ms in [1u64, 50, 100, 200, 400, 800] {
                let now = created
                    .saturating_add(ttl)
                    .saturating_sub(Duration::from_millis(before_ms));
                let fired = (0..n)
                    .filter(|_| {
                        classify(&e, now, Some(beta), || rng.f64()) == Freshness::EarlyRefresh
                    })
                    .count() as f64;
                let p = (-(before_ms as f64 / 1000.0) / (delta.as_secs_f64() * beta)).exp();
                let expected = p * n as f64;
                let sd = (n as f64 * p * (1.0 - p)).sqrt().max(1.0);
                assert!(
                    (fired - expected).abs() <= 5.0 * sd,
                    "beta {beta}, {before_ms} ms before expiry: fired {fired}, expected {expected:.0} ± {sd:.0}"
                );
            }
        }
    }

    #[test]
    fn xfetch_never_fires_far_from_expiry_and_is_off_without_beta() {
        let (e, created) = entry(
            Duration::from_secs(60),
            Duration::from_millis(100),
            Duration::ZERO,
        );
        // 10 s before expiry is 100·Δ away: beyond the largest possible draw.
        let now = created.saturating_add(Duration::from_secs(50));
        let mut drew = false;
        assert_eq!(
            classify(&e, now, Some(1.0), || {
                drew = true;
                0.999_999
            }),
            Freshness::Fresh
        );
        assert!(!drew, "no random draw far from expiry");
        let near = created.saturating_add(Duration::from_millis(59_999));
        assert_eq!(classify(&e, near, None, || 0.999_999), Freshness::Fresh);
    }

    #[test]
    fn windows_after_expiry() {
        let (e, created) = entry(
            Duration::from_secs(10),
            Duration::ZERO,
            Duration::from_secs(5),
        );
        let at = |s| created.saturating_add(Duration::from_secs(s));
        assert_eq!(classify(&e, at(9), Some(1.0), || 0.5), Freshness::Fresh);
        assert_eq!(
            classify(&e, at(10), Some(1.0), || 0.5),
            Freshness::StaleWhileRevalidate
        );
        assert_eq!(
            classify(&e, at(14), None, || 0.5),
            Freshness::StaleWhileRevalidate
        );
        assert_eq!(classify(&e, at(15), None, || 0.5), Freshness::Expired);
    }

    #[test]
    fn jitter_stays_within_its_bounds() {
        let policy = Policy {
            jitter: 0.2,
            ..Policy::default()
        };
        let ttl = Duration::from_secs(100);
        let mut rng = fastrand::Rng::with_seed(7);
        let (mut lo, mut hi) = (ttl, Duration::ZERO);
        for _ in 0..10_000 {
            let t = policy.jittered_ttl(ttl, rng.f64());
            assert!(
                t > Duration::from_secs(80) && t <= ttl,
                "{t:?} out of (80 s, 100 s]"
            );
            lo = lo.min(t);
            hi = hi.max(t);
        }
        // And it really spreads over the range.
        assert!(lo < Duration::from_secs(81) && hi > Duration::from_secs(99));
    }

    #[test]
    fn bad_values_are_config_errors() {
        let bad = [
            Policy {
                ttl: Duration::ZERO,
                ..Policy::default()
            },
            Policy {
                jitter: 1.0,
                ..Policy::default()
            },
            Policy {
                jitter: -0.1,
                ..Policy::default()
            },
            Policy {
                early_refresh_beta: Some(0.0),
                ..Policy::default()
            },
            Policy {
                early_refresh_beta: Some(f64::NAN),
                ..Policy::default()
            },
            Policy {
                negative_ttl: Some(Duration::ZERO),
                ..Policy::default()
            },
        ];
        for p in bad {
            assert!(p.validate().is_err(), "{p:?} should be rejected");
        }
        assert!(Policy::default()
            .with(&CallOptions::new().ttl(Duration::ZERO))
            .is_err());
        assert!(Policy::default()
            .with(&CallOptions::new().early_refresh_beta(-1.0))
            .is_err());
    }
}
