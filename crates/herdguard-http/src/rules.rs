//! A shared cache's storage policy on top of the RFC rules: which answers a
//! cache built on the herdguard core stores, for how long, and with which stale
//! windows — `herdguard serve` and the tower layer alike.
//!
//! The RFC 9111 / 5861 / 9213 rules themselves (storability, targeted fields,
//! freshness lifetime, age) are the other modules'; this one adds only the
//! cache's own, stricter choices and maps the result onto the core's knobs.

use std::time::{Duration, SystemTime};

use http::{header, HeaderMap, Method, StatusCode};

use crate::response::Overrides;
use crate::storable::prepare_for_storage;
use crate::{check_storable, revalidate, CacheConfig};

/// Settings of the storage policy.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    /// Target fields and heuristic settings, as the RFC modules read them.
    pub config: CacheConfig,
    /// Stale-if-error window granted when the origin says nothing.
    pub default_stale_if_error: Duration,
}

/// How long a stored response stays fresh and usable stale, in the core's terms.
#[derive(Clone, Debug, PartialEq)]
pub struct Freshness {
    /// Remaining freshness at arrival (lifetime minus the corrected initial age).
    pub ttl: Duration,
    /// How long after `ttl` it may be served while one refresh runs.
    pub stale_while_revalidate: Duration,
    /// How long after `ttl` it may stand in for a failed load.
    pub stale_if_error: Duration,
    /// What a per-path rule changed, to keep with the stored response.
    pub overrides: Overrides,
}

impl Freshness {
    /// How long the stored response may be kept at all: fresh, then stale.
    pub fn keep(&self) -> Duration {
        self.ttl
            .saturating_add(self.stale_while_revalidate.max(self.stale_if_error))
    }
}

/// Whether the cache stores this answer to a GET, and for how long; `Err` names why not.
/// `overrides` are a per-path rule's; `ignore_set_cookie` stores answers with
/// `Set-Cookie` (without it) instead of refusing them. `response` is prepared for
/// storage (hop-by-hop and `private="..."` fields removed, and `Set-Cookie` when
/// ignored) when the answer is storable.
pub fn evaluate(
    rules: &Rules,
    (overrides, ignore_set_cookie): (Overrides, bool),
    request: &HeaderMap,
    status: StatusCode,
    response: &mut HeaderMap,
    (request_time, response_time): (SystemTime, SystemTime),
) -> Result<Freshness, &'static str> {
    let plan = check_storable(
        &Method::GET,
        request,
        status,
        &overrides.consulted(response, &rules.config),
        &rules.config,
    )
    .map_err(|why| why.as_str())?;
    if response.contains_key(header::SET_COOKIE) {
        if !ignore_set_cookie {
            // Session-bearing answers are never shared: a conservative choice, as nginx makes.
            return Err("set-cookie");
        }
        // Opted in: stored, but nobody is handed another client's cookie.
        response.remove(header::SET_COOKIE);
    }
    prepare_for_storage(response, &plan);
    let stored = overrides.judge(
        status,
        response,
        (request_time, response_time),
        &rules.config,
    );
    // Nothing to serve and nothing to revalidate with: storing would only cost memory.
    if stored.lifetime.duration.is_zero() && !revalidate::has_validator(response) {
        return Err("no-freshness");
    }
    let d = &stored.policy.directives;
    let no_cache = d.always_validate();
    let ttl = if no_cache {
        Duration::ZERO
    } else {
        stored.remaining_freshness(response_time)
    };
    let (swr, sie) = if no_cache || d.forbids_stale() {
        (Duration::ZERO, Duration::ZERO)
    } else {
        (
            d.stale_while_revalidate.unwrap_or(Duration::ZERO),
            d.stale_if_error.unwrap_or(rules.default_stale_if_error),
        )
    };
    Ok(Freshness {
        ttl,
        stale_while_revalidate: swr,
        stale_if_error: sie,
        overrides,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    fn rules() -> Rules {
        Rules {
            config: CacheConfig {
                target_fields: vec![HeaderName::from_static("cdn-cache-control")],
                ..CacheConfig::default()
            },
            default_stale_if_error: Duration::ZERO,
        }
    }

    fn eval(resp: &[(&str, &str)]) -> Result<Freshness, &'static str> {
        eval_with(None, resp).map(|(f, _)| f)
    }

    /// A path rule's choices: overrides, and whether `Set-Cookie` is ignored.
    type Rule = (Overrides, bool);

    /// Evaluates under `rule`; also returns the fields as they would be stored.
    fn eval_with(
        rule: Option<&Rule>,
        resp: &[(&str, &str)],
    ) -> Result<(Freshness, HeaderMap), &'static str> {
        let mut h = HeaderMap::new();
        for (k, v) in resp {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let now = SystemTime::now();
        evaluate(
            &rules(),
            rule.cloned().unwrap_or_default(),
            &HeaderMap::new(),
            StatusCode::OK,
            &mut h,
            (now, now),
        )
        .map(|f| (f, h))
    }

    /// A rule, `set` as the test needs.
    fn everywhere(set: impl FnOnce(&mut Rule)) -> Rule {
        let mut rule = Rule::default();
        set(&mut rule);
        rule
    }

    #[test]
    fn a_rule_ttl_applies_only_where_the_origin_states_no_lifetime() {
        let r = everywhere(|r| r.0.default_ttl_ms = Some(60_000));
        let (f, _) = eval_with(Some(&r), &[]).unwrap();
        assert_eq!(f.ttl, Duration::from_secs(60));
        assert_eq!(f.overrides.default_ttl_ms, Some(60_000));
        let (f, _) = eval_with(Some(&r), &[("cache-control", "max-age=5")]).unwrap();
        assert_eq!(f.ttl, Duration::from_secs(5));
        // Without the rule the same answer is refused.
        assert_eq!(eval(&[]), Err("no-freshness"));
        // The origin's refusals still stand.
        assert_eq!(
            eval_with(Some(&r), &[("cache-control", "no-store")]).map(|(f, _)| f),
            Err("no-store")
        );
    }

    #[test]
    fn ignoring_cache_control_is_an_explicit_opt_in() {
        let r = everywhere(|r| {
            r.0.default_ttl_ms = Some(30_000);
            r.0.ignore_cache_control = true;
        });
        for fields in [
            &[("cache-control", "private, no-store")][..],
            &[("cache-control", "max-age=5")],
            &[("expires", "0")],
            &[("cdn-cache-control", "no-store"), ("pragma", "no-cache")],
        ] {
            let (f, _) = eval_with(Some(&r), fields).unwrap();
            assert_eq!(f.ttl, Duration::from_secs(30), "{fields:?}");
        }
        // no-cache ignored too: the stored response is fresh, not revalidated each time.
        let (f, _) = eval_with(Some(&r), &[("cache-control", "no-cache")]).unwrap();
        assert_eq!(f.ttl, Duration::from_secs(30));
        // Vary: * still refuses: it is not a freshness field.
        assert_eq!(
            eval_with(Some(&r), &[("vary", "*")]).map(|(f, _)| f),
            Err("vary-star")
        );
    }

    #[test]
    fn an_ignored_set_cookie_is_removed_from_what_is_stored() {
        let r = everywhere(|r| r.1 = true);
        let fields = [
            ("cache-control", "max-age=5"),
            ("set-cookie", "session=secret"),
        ];
        assert_eq!(eval(&fields), Err("set-cookie"));
        let (f, stored) = eval_with(Some(&r), &fields).unwrap();
        assert_eq!(f.ttl, Duration::from_secs(5));
        assert!(!stored.contains_key("set-cookie"));
    }

    #[test]
    fn max_age_and_age_header() {
        let f = eval(&[("cache-control", "max-age=60"), ("age", "10")]).unwrap();
        assert_eq!(f.ttl, Duration::from_secs(50));
    }

    #[test]
    fn targeted_field_wins() {
        let f = eval(&[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=30"),
        ])
        .unwrap();
        assert_eq!(f.ttl, Duration::from_secs(30));
        assert_eq!(
            eval(&[
                ("cache-control", "max-age=30"),
                ("cdn-cache-control", "no-store")
            ]),
            Err("no-store")
        );
    }

    #[test]
    fn refusals_are_named() {
        assert_eq!(
            eval(&[("cache-control", "private, max-age=5")]),
            Err("private")
        );
        assert_eq!(
            eval(&[("cache-control", "max-age=5"), ("vary", "*")]),
            Err("vary-star")
        );
        assert_eq!(
            eval(&[("cache-control", "max-age=5"), ("set-cookie", "a=b")]),
            Err("set-cookie")
        );
        assert_eq!(eval(&[]), Err("no-freshness"));
    }

    #[test]
    fn swr_and_sie_are_dropped_under_must_revalidate() {
        let f = eval(&[(
            "cache-control",
            "max-age=1, stale-while-revalidate=9, stale-if-error=9",
        )])
        .unwrap();
        assert_eq!(f.stale_while_revalidate, Duration::from_secs(9));
        assert_eq!(f.stale_if_error, Duration::from_secs(9));
        let f = eval(&[("cache-control", "s-maxage=1, stale-while-revalidate=9")]).unwrap();
        assert_eq!(f.stale_while_revalidate, Duration::ZERO);
    }
}
