//! Invalidation after unsafe requests (RFC 9111 §4.4).
//!
//! After a request with an unsafe method (anything but `GET`, `HEAD`, `OPTIONS`, `TRACE`,
//! RFC 9110 §9.2.1 — unknown methods count as unsafe) receives a non-error response (2xx or 3xx),
//! the cache must invalidate the target URI, and may invalidate the URIs in `Location` and
//! `Content-Location` — but only when they have the same origin as the target (a guard against
//! denial of service). This crate invalidates all three.

use http::header::{CONTENT_LOCATION, LOCATION};
use http::{HeaderMap, Method, StatusCode};

use crate::key::EffectiveUri;

/// Whether a method is safe (RFC 9110 §9.2.1).
pub fn is_safe_method(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The URIs whose stored responses must be invalidated (removed or marked as needing
/// validation) after `method` on `target` got `status` with `response_headers` (RFC 9111 §4.4).
/// Empty for safe methods and for error responses. The target comes first; duplicates are
/// removed. Map each to [`crate::key::CacheKey::for_uri`].
pub fn invalidation_targets(
    method: &Method,
    status: StatusCode,
    target: &EffectiveUri,
    response_headers: &HeaderMap,
) -> Vec<EffectiveUri> {
    if is_safe_method(method) || !(status.is_success() || status.is_redirection()) {
        return Vec::new();
    }
    let mut out = vec![target.clone()];
    for name in [LOCATION, CONTENT_LOCATION] {
        // Singleton fields: a repeated one is ignored.
        let mut values = response_headers.get_all(&name).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            continue;
        };
        let Ok(s) = value.to_str() else { continue };
        if let Some(uri) = target.resolve(s) {
            if uri.same_origin(target) && !out.contains(&uri) {
                out.push(uri);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::hm;

    fn target() -> EffectiveUri {
        EffectiveUri::parse_absolute("https://example.com/items/1").unwrap()
    }

    fn strings(v: Vec<EffectiveUri>) -> Vec<String> {
        v.into_iter().map(|u| u.to_string()).collect()
    }

    #[test]
    fn rfc9111_4_4_unsafe_success_invalidates_target_and_same_origin_locations() {
        let h = hm(&[
            ("location", "/items/2"),
            ("content-location", "https://EXAMPLE.com:443/items/1?v=2"),
        ]);
        for m in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            assert_eq!(
                strings(invalidation_targets(&m, StatusCode::CREATED, &target(), &h)),
                vec![
                    "https://example.com/items/1",
                    "https://example.com/items/2",
                    "https://example.com/items/1?v=2"
                ]
            );
        }
        // Unknown methods count as unsafe.
        let m = Method::from_bytes(b"PURGEX").unwrap();
        assert_eq!(
            invalidation_targets(&m, StatusCode::OK, &target(), &hm(&[])).len(),
            1
        );
    }

    #[test]
    fn rfc9111_4_4_other_origin_not_invalidated() {
        let h = hm(&[
            ("location", "https://evil.example/items/1"),
            ("content-location", "http://example.com/items/1"),
        ]);
        assert_eq!(
            strings(invalidation_targets(
                &Method::POST,
                StatusCode::SEE_OTHER,
                &target(),
                &h
            )),
            vec!["https://example.com/items/1"]
        );
    }

    #[test]
    fn rfc9111_4_4_errors_and_safe_methods_invalidate_nothing() {
        for s in [400, 404, 500, 503] {
            assert!(invalidation_targets(
                &Method::POST,
                StatusCode::from_u16(s).unwrap(),
                &target(),
                &hm(&[])
            )
            .is_empty());
        }
        for m in [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE] {
            assert!(invalidation_targets(&m, StatusCode::OK, &target(), &hm(&[])).is_empty());
        }
    }

    #[test]
    fn rfc9111_4_4_garbage_location_ignored_and_dedup() {
        let h = hm(&[
            ("location", "https://[oops/x"),
            ("content-location", "/items/1"),
        ]);
        assert_eq!(
            strings(invalidation_targets(
                &Method::PUT,
                StatusCode::OK,
                &target(),
                &h
            )),
            vec!["https://example.com/items/1"]
        );
    }
}
