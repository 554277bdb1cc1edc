//! The proxy's storage policy: `herdguard-http`'s (which owns it, for the
//! tower layer too) under the path's `[[rule]]`.

use std::time::SystemTime;

use herdguard_http::response::Overrides;
use http::{HeaderMap, StatusCode};

use super::path_rules::PathRule;

pub(crate) use herdguard_http::rules::{Freshness, Rules};

/// What `rule` changes in how a response is judged.
pub(crate) fn overrides(rule: Option<&PathRule>) -> Overrides {
    Overrides {
        default_ttl_ms: rule
            .and_then(|r| r.ttl)
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        ignore_cache_control: rule.is_some_and(|r| r.ignore_cache_control),
    }
}

/// [`herdguard_http::rules::evaluate`] under `rule`.
pub(crate) fn evaluate(
    rules: &Rules,
    rule: Option<&PathRule>,
    request: &HeaderMap,
    status: StatusCode,
    response: &mut HeaderMap,
    times: (SystemTime, SystemTime),
) -> Result<Freshness, &'static str> {
    let choices = (overrides(rule), rule.is_some_and(|r| r.ignore_set_cookie));
    herdguard_http::rules::evaluate(rules, choices, request, status, response, times)
}
