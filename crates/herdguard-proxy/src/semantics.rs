//! The RFC 9111 / 5861 / 9213 rules the proxy needs, kept local and small.
//!
//! `herdguard-http` is the project's full model of these rules; it was not on main
//! when this crate was written, so the proxy carries the subset it applies here:
//! directive parsing, the targeted-field choice, storability, freshness lifetime
//! (explicit, then heuristic where allowed) and age.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, Method, StatusCode};

/// Largest delta-seconds honoured (RFC 9111 §1.2.2).
const MAX_DELTA: u64 = 2_147_483_648;

/// The directives of one `Cache-Control`-like field: `(lowercase name, argument)`.
pub(crate) fn parse_directives<'a>(
    values: impl Iterator<Item = &'a str>,
) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for value in values {
        for member in value.split(',') {
            let member = member.trim();
            if member.is_empty() {
                continue;
            }
            let (name, arg) = match member.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"').to_string())),
                None => (member, None),
            };
            out.push((name.to_ascii_lowercase(), arg));
        }
    }
    out
}

fn delta(arg: &Option<String>) -> Option<Duration> {
    arg.as_deref()
        .and_then(|a| a.parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(MAX_DELTA)))
}

fn field_values<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    headers.get_all(name).iter().filter_map(|v| v.to_str().ok())
}

/// What the client asked (RFC 9111 §5.2.1, with the `Pragma: no-cache` fallback of §5.4).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct RequestDirectives {
    pub no_cache: bool,
    pub no_store: bool,
    pub only_if_cached: bool,
    pub max_age: Option<Duration>,
    pub min_fresh: Option<Duration>,
}

impl RequestDirectives {
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        let mut d = RequestDirectives::default();
        let parsed = parse_directives(field_values(headers, &http::header::CACHE_CONTROL));
        if parsed.is_empty() {
            d.no_cache = field_values(headers, &http::header::PRAGMA)
                .any(|v| v.to_ascii_lowercase().contains("no-cache"));
        }
        for (name, arg) in &parsed {
            match name.as_str() {
                "no-cache" => d.no_cache = true,
                "no-store" => d.no_store = true,
                "only-if-cached" => d.only_if_cached = true,
                // An invalid request max-age means 0: the conservative reading.
                "max-age" => d.max_age = Some(delta(arg).unwrap_or(Duration::ZERO)),
                "min-fresh" => d.min_fresh = delta(arg),
                _ => {}
            }
        }
        d
    }
}

/// What the origin allows this cache (RFC 9111 §5.2.2, RFC 5861, RFC 9213).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ResponseDirectives {
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub max_age: Option<Duration>,
    pub s_maxage: Option<Duration>,
    pub stale_while_revalidate: Option<Duration>,
    pub stale_if_error: Option<Duration>,
    /// The directives came from a targeted field (RFC 9213): `Expires` is then ignored.
    pub targeted: bool,
}

impl ResponseDirectives {
    /// The directives that govern this cache: the first targeted field of `targets`
    /// present and non-empty wins over `Cache-Control` (RFC 9213 §2.2).
    pub(crate) fn from_headers(headers: &HeaderMap, targets: &[HeaderName]) -> Self {
        for target in targets {
            let parsed = parse_directives(field_values(headers, target));
            if !parsed.is_empty() {
                let mut d = Self::from_parsed(&parsed);
                d.targeted = true;
                return d;
            }
        }
        Self::from_parsed(&parse_directives(field_values(
            headers,
            &http::header::CACHE_CONTROL,
        )))
    }

    fn from_parsed(parsed: &[(String, Option<String>)]) -> Self {
        let mut d = ResponseDirectives::default();
        for (name, arg) in parsed {
            match name.as_str() {
                "no-store" => d.no_store = true,
                // A qualified no-cache/private is treated as unqualified: stricter, allowed.
                "no-cache" => d.no_cache = true,
                "private" => d.private = true,
                "public" => d.public = true,
                "must-revalidate" | "proxy-revalidate" => d.must_revalidate = true,
                // An invalid max-age makes the response stale (RFC 9111 §4.2.1).
                "max-age" => d.max_age = Some(delta(arg).unwrap_or(Duration::ZERO)),
                "s-maxage" => {
                    d.s_maxage = Some(delta(arg).unwrap_or(Duration::ZERO));
                    // s-maxage implies proxy-revalidate (§5.2.2.10).
                    d.must_revalidate = true;
                }
                "stale-while-revalidate" => d.stale_while_revalidate = delta(arg),
                "stale-if-error" => d.stale_if_error = delta(arg),
                _ => {}
            }
        }
        d
    }
}

/// How long a stored response stays fresh and usable stale.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Freshness {
    /// Freshness lifetime minus the response's current age at arrival.
    pub ttl: Duration,
    /// The age the response had when it arrived (RFC 9111 §4.2.3).
    pub initial_age: Duration,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
}

/// Settings of the storability rules.
#[derive(Clone, Debug)]
pub(crate) struct Rules {
    /// RFC 9213 targeted fields, in order of precedence.
    pub targets: Vec<HeaderName>,
    /// Cap of heuristic freshness (10 % of the Last-Modified age, RFC 9111 §4.2.2).
    pub heuristic_max: Duration,
    /// Stale-if-error window granted when the origin says nothing.
    pub default_stale_if_error: Duration,
}

/// Statuses that are cacheable by default (RFC 9110 §15.1).
fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Whether a shared cache may store this response, and for how long; `Err` names why not.
pub(crate) fn evaluate(
    rules: &Rules,
    method: &Method,
    request: &HeaderMap,
    status: StatusCode,
    response: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Result<Freshness, &'static str> {
    if method != Method::GET && method != Method::HEAD {
        return Err("method");
    }
    let req = RequestDirectives::from_headers(request);
    if req.no_store {
        return Err("request-no-store");
    }
    let d = ResponseDirectives::from_headers(response, &rules.targets);
    if d.no_store {
        return Err("no-store");
    }
    if d.private {
        return Err("private");
    }
    if status == StatusCode::PARTIAL_CONTENT || status.is_informational() {
        return Err("status");
    }
    if field_values(response, &http::header::VARY).any(|v| v.split(',').any(|f| f.trim() == "*")) {
        return Err("vary-star");
    }
    // Session-bearing answers are never shared: a conservative choice, as nginx makes.
    if response.contains_key(http::header::SET_COOKIE) {
        return Err("set-cookie");
    }
    // RFC 9111 §3.5: a shared cache stores answers to authorized requests only when allowed.
    if request.contains_key(http::header::AUTHORIZATION)
        && !(d.public || d.s_maxage.is_some() || d.must_revalidate)
    {
        return Err("authorization");
    }
    let date = header_date(response, &http::header::DATE).unwrap_or(response_time);
    let explicit = d.s_maxage.or(d.max_age).or_else(|| match d.targeted {
        true => None,
        false => response.get(http::header::EXPIRES).map(|v| {
            // An invalid Expires (e.g. "0") means already expired (§5.3).
            httpdate::parse_http_date(v.to_str().unwrap_or(""))
                .map(|e| e.duration_since(date).unwrap_or(Duration::ZERO))
                .unwrap_or(Duration::ZERO)
        }),
    });
    let lifetime = match explicit {
        Some(l) => l,
        None if heuristically_cacheable(status) || d.public => {
            match header_date(response, &http::header::LAST_MODIFIED) {
                Some(lm) => (date.duration_since(lm).unwrap_or(Duration::ZERO) / 10)
                    .min(rules.heuristic_max),
                None => Duration::ZERO,
            }
        }
        None => return Err("status"),
    };
    let has_validator = response.contains_key(http::header::ETAG)
        || response.contains_key(http::header::LAST_MODIFIED);
    if lifetime.is_zero() && !has_validator {
        return Err("no-freshness");
    }
    let initial_age = initial_age(response, date, request_time, response_time);
    let ttl = if d.no_cache {
        Duration::ZERO
    } else {
        lifetime.saturating_sub(initial_age)
    };
    let (swr, sie) = if d.must_revalidate || d.no_cache {
        (Duration::ZERO, Duration::ZERO)
    } else {
        (
            d.stale_while_revalidate.unwrap_or(Duration::ZERO),
            d.stale_if_error.unwrap_or(rules.default_stale_if_error),
        )
    };
    Ok(Freshness {
        ttl,
        initial_age,
        stale_while_revalidate: swr,
        stale_if_error: sie,
    })
}

/// corrected_initial_age of RFC 9111 §4.2.3.
fn initial_age(
    response: &HeaderMap,
    date: SystemTime,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Duration {
    let age_value = response
        .get(http::header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(MAX_DELTA)))
        .unwrap_or(Duration::ZERO);
    let apparent = response_time.duration_since(date).unwrap_or(Duration::ZERO);
    let delay = response_time
        .duration_since(request_time)
        .unwrap_or(Duration::ZERO);
    apparent.max(age_value + delay)
}

fn header_date(headers: &HeaderMap, name: &HeaderName) -> Option<SystemTime> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
}

/// The header names a response varies on (lowercase), `None` for none.
pub(crate) fn vary_names(response: &HeaderMap) -> Vec<String> {
    let mut names: Vec<String> = field_values(response, &http::header::VARY)
        .flat_map(|v| v.split(','))
        .map(|f| f.trim().to_ascii_lowercase())
        .filter(|f| !f.is_empty())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The request's values of `names`, normalised (whitespace collapsed) for comparison.
pub(crate) fn vary_values(request: &HeaderMap, names: &[String]) -> Vec<(String, Option<String>)> {
    names
        .iter()
        .map(|n| {
            let values: Vec<&str> = request
                .get_all(n.as_str())
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            let value = (!values.is_empty()).then(|| {
                values
                    .join(",")
                    .split(',')
                    .map(str::trim)
                    .collect::<Vec<_>>()
                    .join(",")
            });
            (n.clone(), value)
        })
        .collect()
}

/// Methods that never change state (RFC 9110 §9.2.1): the others invalidate (RFC 9111 §4.4).
pub(crate) fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Weak comparison of entity tags (RFC 9110 §8.8.3.2) for `If-None-Match`.
pub(crate) fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let etag = strip(etag);
    if_none_match
        .split(',')
        .any(|t| t.trim() == "*" || strip(t) == etag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn rules() -> Rules {
        Rules {
            targets: vec![HeaderName::from_static("cdn-cache-control")],
            heuristic_max: Duration::from_secs(86_400),
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
            &Method::GET,
            &HeaderMap::new(),
            StatusCode::OK,
            &h,
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
    fn targeted_field_wins_and_ignores_expires() {
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
        let f = eval(&[("cache-control", "s-maxage=1, stale-while-revalidate=9")]).unwrap();
        assert_eq!(f.stale_while_revalidate, Duration::ZERO);
    }

    #[test]
    fn etags_compare_weakly() {
        assert!(etag_matches("\"a\", W/\"b\"", "\"b\""));
        assert!(!etag_matches("\"a\"", "\"b\""));
    }
}
