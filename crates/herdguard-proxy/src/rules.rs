//! The proxy's storage policy on top of `herdguard-http`: which answers the
//! core caches, for how long, and with which stale windows.
//!
//! The RFC 9111 / 5861 / 9213 rules themselves (storability, targeted fields,
//! freshness lifetime, age) are `herdguard-http`'s; this module adds only the
//! proxy's own, stricter choices and maps the result onto the core's knobs.

use std::time::{Duration, SystemTime};

use herdguard_http::storable::prepare_for_storage;
use herdguard_http::{check_storable, revalidate, CacheConfig, StoredResponse};
use http::{header, HeaderMap, Method, StatusCode};

/// Settings of the storage policy.
#[derive(Clone, Debug)]
pub(crate) struct Rules {
    /// Target fields and heuristic settings, as `herdguard-http` reads them.
    pub config: CacheConfig,
    /// Stale-if-error window granted when the origin says nothing.
    pub default_stale_if_error: Duration,
}

/// How long a stored response stays fresh and usable stale, in the core's terms.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Freshness {
    /// Remaining freshness at arrival (lifetime minus the corrected initial age).
    pub ttl: Duration,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
}

/// Whether the proxy stores this answer to a GET, and for how long; `Err` names why not.
/// `response` is prepared for storage (hop-by-hop and `private="..."` fields removed) when
/// the answer is storable.
pub(crate) fn evaluate(
    rules: &Rules,
    request: &HeaderMap,
    status: StatusCode,
    response: &mut HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Result<Freshness, &'static str> {
    let plan = check_storable(&Method::GET, request, status, response, &rules.config)
        .map_err(|why| why.as_str())?;
    // Session-bearing answers are never shared: a conservative choice, as nginx makes.
    if response.contains_key(header::SET_COOKIE) {
        return Err("set-cookie");
    }
    prepare_for_storage(response, &plan);
    let stored = StoredResponse::new(status, response, request_time, response_time, &rules.config);
    // Nothing to serve and nothing to revalidate with: storing would only cost memory.
    if stored.lifetime.duration.is_zero() && !revalidate::has_validator(response) {
        return Err("no-freshness");
    }
    let d = &stored.policy.directives;
    let no_cache = d.no_cache.is_present();
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
            &HeaderMap::new(),
            StatusCode::OK,
            &mut h,
            now,
            now,
        )
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
