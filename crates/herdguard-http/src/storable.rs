//! May a response be stored by a shared cache? (RFC 9111 §3, §3.1, §3.5)
//!
//! [`check_storable`] answers with a [`StorePlan`] (what to strip before storing) or a typed
//! [`NotStorable`] reason that the proxy can put in `Cache-Status` (`detail`) and in metrics.
//!
//! Scope decisions, all conservative:
//! * Only `GET` responses are stored. `HEAD` shares `GET`'s cache entry (see [`crate::key`]), so a
//!   `HEAD` response (which has no body) is not stored; a `HEAD` request is served from a stored
//!   `GET` response instead (RFC 9110 §9.3.2 allows, but does not require, storing it).
//! * `206 Partial Content` is not stored (no range support), nor is a `304` on its own.
//! * `must-understand` (§5.2.2.3): the response is storable only if its status code is one this
//!   crate understands ([`is_understood_status`]), and then `no-store` is ignored, as the RFC
//!   says a cache that understands the status SHOULD.

use http::header::{HeaderName, AUTHORIZATION, CONTENT_LOCATION};
use http::{HeaderMap, Method, StatusCode};

use crate::directives::{FieldScope, RequestDirectives, ResponsePolicy};
use crate::freshness::is_heuristically_cacheable;
pub use crate::hop::connection_listed;
use crate::hop::{is_hop_by_hop, remove_hop_by_hop};
use crate::key::EffectiveUri;
use crate::vary::Vary;
use crate::CacheConfig;

/// Why a response may not be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotStorable {
    /// The request method is not `GET` (§3: "the request method is understood by the cache").
    Method,
    /// The request carried `Cache-Control: no-store` (§5.2.1.5).
    RequestNoStore,
    /// The status code is not final, is `206`/`304`, or otherwise cannot be stored (§3).
    Status,
    /// `must-understand` is present and the status code is not one this crate understands
    /// (§5.2.2.3).
    MustUnderstand,
    /// The response carried `no-store` (§5.2.2.5).
    ResponseNoStore,
    /// The response carried unqualified `private`; this is a shared cache (§5.2.2.7).
    Private,
    /// The request carried `Authorization` and the response did not allow shared caching with
    /// `public`, `must-revalidate` or `s-maxage` (§3.5).
    Authorization,
    /// `Vary: *` — a stored response could never be reused (§4.1).
    VaryStar,
    /// No explicit expiration, no `public`, and a status code that is not heuristically
    /// cacheable (§3, §4.2.2).
    NoFreshnessInformation,
}

impl NotStorable {
    /// A stable, short, token-safe name for metrics and the `Cache-Status` `detail` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            NotStorable::Method => "method",
            NotStorable::RequestNoStore => "request-no-store",
            NotStorable::Status => "status",
            NotStorable::MustUnderstand => "must-understand",
            NotStorable::ResponseNoStore => "no-store",
            NotStorable::Private => "private",
            NotStorable::Authorization => "authorization",
            NotStorable::VaryStar => "vary-star",
            NotStorable::NoFreshnessInformation => "no-freshness-info",
        }
    }
}

impl std::fmt::Display for NotStorable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do when storing a storable response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StorePlan {
    /// Header fields a shared cache must not store: those named by a qualified `private="..."`
    /// (§5.2.2.7) or `no-cache="..."` (§5.2.2.4; without them the response may be reused
    /// without validation). [`prepare_for_storage`] removes them along with the §3.1 fields.
    pub strip_fields: Vec<HeaderName>,
}

/// Status codes whose requirements this crate understands, for `must-understand`: the final
/// status codes defined by RFC 9110, except `206` and `304`.
pub fn is_understood_status(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200..=205 | 300..=303 | 305 | 307 | 308 | 400..=417 | 421 | 422 | 426 | 500..=505
    )
}

/// Decides whether a response to `method` (with `request_headers`) may be stored (RFC 9111 §3).
pub fn check_storable(
    method: &Method,
    request_headers: &HeaderMap,
    status: StatusCode,
    response_headers: &HeaderMap,
    config: &CacheConfig,
) -> Result<StorePlan, NotStorable> {
    if method != Method::GET {
        return Err(NotStorable::Method);
    }
    if RequestDirectives::from_headers(request_headers).no_store {
        return Err(NotStorable::RequestNoStore);
    }
    let code = status.as_u16();
    if !(200..=599).contains(&code) || code == 206 || code == 304 {
        return Err(NotStorable::Status);
    }
    let policy = ResponsePolicy::from_headers(response_headers, config);
    let d = &policy.directives;
    if d.must_understand {
        if !is_understood_status(status) {
            return Err(NotStorable::MustUnderstand);
        }
        // §5.2.2.3: a cache that understands the status ignores `no-store`
        // (which is there for caches that do not know `must-understand`).
    } else if d.no_store {
        return Err(NotStorable::ResponseNoStore);
    }
    if d.private == FieldScope::All {
        return Err(NotStorable::Private);
    }
    if request_headers.contains_key(AUTHORIZATION) && !d.shares_authorized() {
        return Err(NotStorable::Authorization);
    }
    if Vary::from_response(response_headers) == Vary::Any {
        return Err(NotStorable::VaryStar);
    }
    if !(d.public
        || policy.has_explicit_expiration(response_headers)
        || is_heuristically_cacheable(status))
    {
        return Err(NotStorable::NoFreshnessInformation);
    }
    Ok(StorePlan {
        strip_fields: d.fields_not_shared(),
    })
}

/// Whether the answer to a `POST` of `target` is the current answer to a `GET` of it, and may
/// be stored as such (RFC 9110 §9.3.3, RFC 9111 §4): a `200` with explicit expiration for this
/// cache and one `Content-Location` that is `target` itself. Whether it may be stored at all is
/// then [`check_storable`]'s question, as for any `GET` answer.
pub fn post_answer_reusable(
    status: StatusCode,
    target: &EffectiveUri,
    response_headers: &HeaderMap,
    config: &CacheConfig,
) -> bool {
    let mut locations = response_headers.get_all(CONTENT_LOCATION).iter();
    let (Some(location), None) = (locations.next(), locations.next()) else {
        return false;
    };
    status == StatusCode::OK
        && ResponsePolicy::from_headers(response_headers, config)
            .has_explicit_expiration(response_headers)
        && location
            .to_str()
            .ok()
            .and_then(|l| target.resolve(l))
            .is_some_and(|uri| uri == *target)
}

/// The field of a proxy's authentication that is never stored besides the hop-by-hop ones
/// (RFC 9111 §3.1: `Proxy-Authenticate` and `Proxy-Authorization` are among those).
static PROXY_AUTHENTICATION_INFO: HeaderName = HeaderName::from_static("proxy-authentication-info");

/// Whether a field is excepted from storage by RFC 9111 §3.1 on its own name: the hop-by-hop
/// fields ([`crate::hop::HOP_BY_HOP`]) and the proxy's own.
pub fn is_never_stored(name: &HeaderName) -> bool {
    is_hop_by_hop(name.as_str()) || *name == PROXY_AUTHENTICATION_INFO
}

/// Removes what RFC 9111 §3.1 excepts from storage: `Connection` and the fields it lists, the
/// other hop-by-hop fields (`Keep-Alive`, `TE`, `Transfer-Encoding`, `Upgrade`,
/// `Proxy-Connection`, ...), the proxy authentication fields, and `plan.strip_fields`.
pub fn prepare_for_storage(headers: &mut HeaderMap, plan: &StorePlan) {
    remove_hop_by_hop(headers);
    headers.remove(&PROXY_AUTHENTICATION_INFO);
    for name in &plan.strip_fields {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::hm;

    fn check(
        method: Method,
        req: &[(&str, &str)],
        status: u16,
        resp: &[(&str, &str)],
    ) -> Result<StorePlan, NotStorable> {
        check_storable(
            &method,
            &hm(req),
            StatusCode::from_u16(status).unwrap(),
            &hm(resp),
            &CacheConfig::default(),
        )
    }

    const MAX_AGE: (&str, &str) = ("cache-control", "max-age=60");

    #[test]
    fn rfc9111_3_plain_cacheable_get() {
        assert_eq!(
            check(Method::GET, &[], 200, &[MAX_AGE]),
            Ok(StorePlan::default())
        );
        // Heuristically cacheable status without explicit freshness (§4.2.2).
        assert!(check(Method::GET, &[], 200, &[]).is_ok());
        assert!(check(Method::GET, &[], 404, &[]).is_ok());
        assert!(check(Method::GET, &[], 301, &[]).is_ok());
    }

    #[test]
    fn rfc9111_3_methods() {
        for m in [
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::HEAD,
            Method::OPTIONS,
        ] {
            assert_eq!(
                check(m.clone(), &[], 200, &[MAX_AGE]),
                Err(NotStorable::Method),
                "{m}"
            );
        }
    }

    #[test]
    fn rfc9111_3_status_codes() {
        assert_eq!(
            check(Method::GET, &[], 206, &[MAX_AGE]),
            Err(NotStorable::Status)
        );
        assert_eq!(
            check(Method::GET, &[], 304, &[MAX_AGE]),
            Err(NotStorable::Status)
        );
        assert_eq!(
            check(Method::GET, &[], 101, &[MAX_AGE]),
            Err(NotStorable::Status)
        );
        // Not heuristically cacheable and no explicit freshness.
        for s in [302, 307, 500, 503, 403] {
            assert_eq!(
                check(Method::GET, &[], s, &[]),
                Err(NotStorable::NoFreshnessInformation),
                "{s}"
            );
        }
        // ... but explicit freshness makes them storable.
        assert!(check(Method::GET, &[], 302, &[MAX_AGE]).is_ok());
        assert!(check(Method::GET, &[], 503, &[("expires", "0")]).is_ok());
        assert!(check(Method::GET, &[], 307, &[("cache-control", "public")]).is_ok());
        assert!(check(Method::GET, &[], 500, &[("cache-control", "s-maxage=5")]).is_ok());
    }

    #[test]
    fn rfc9111_5_2_no_store_request_and_response() {
        assert_eq!(
            check(
                Method::GET,
                &[("cache-control", "no-store")],
                200,
                &[MAX_AGE]
            ),
            Err(NotStorable::RequestNoStore)
        );
        assert_eq!(
            check(
                Method::GET,
                &[],
                200,
                &[("cache-control", "max-age=60, no-store")]
            ),
            Err(NotStorable::ResponseNoStore)
        );
    }

    #[test]
    fn rfc9111_5_2_2_3_must_understand() {
        assert_eq!(
            check(
                Method::GET,
                &[],
                299,
                &[("cache-control", "must-understand, max-age=5")]
            ),
            Err(NotStorable::MustUnderstand)
        );
        // Understood status, no no-store: storable.
        assert!(check(
            Method::GET,
            &[],
            200,
            &[("cache-control", "must-understand, max-age=5")]
        )
        .is_ok());
        // An understood status: no-store is ignored (it is for caches that do not
        // know must-understand).
        assert!(check(
            Method::GET,
            &[],
            200,
            &[("cache-control", "must-understand, no-store, max-age=5")]
        )
        .is_ok());
        // Not understood: not stored, whatever else is said.
        assert_eq!(
            check(
                Method::GET,
                &[],
                299,
                &[("cache-control", "must-understand, no-store, max-age=5")]
            ),
            Err(NotStorable::MustUnderstand)
        );
        // A request's no-store still wins.
        assert_eq!(
            check(
                Method::GET,
                &[("cache-control", "no-store")],
                200,
                &[("cache-control", "must-understand, no-store, max-age=5")]
            ),
            Err(NotStorable::RequestNoStore)
        );
        // Without must-understand an unknown final status with explicit freshness is storable.
        assert!(check(Method::GET, &[], 299, &[MAX_AGE]).is_ok());
    }

    #[test]
    fn rfc9111_5_2_2_7_private_in_shared_cache() {
        assert_eq!(
            check(
                Method::GET,
                &[],
                200,
                &[("cache-control", "private, max-age=60")]
            ),
            Err(NotStorable::Private)
        );
        let plan = check(
            Method::GET,
            &[],
            200,
            &[("cache-control", "private=\"set-cookie\", max-age=60")],
        )
        .unwrap();
        assert_eq!(
            plan.strip_fields,
            vec![HeaderName::from_static("set-cookie")]
        );
    }

    #[test]
    fn rfc9111_5_2_2_4_qualified_no_cache_fields_are_not_stored() {
        let plan = check(
            Method::GET,
            &[],
            200,
            &[(
                "cache-control",
                "no-cache=\"x-user\", private=\"x-user, x-id\", max-age=60",
            )],
        )
        .unwrap();
        assert_eq!(
            plan.strip_fields,
            vec![
                HeaderName::from_static("x-user"),
                HeaderName::from_static("x-id")
            ]
        );
        let plan = check(
            Method::GET,
            &[],
            200,
            &[(
                "cache-control",
                "no-cache=\"set-cookie, x-user\", max-age=60",
            )],
        )
        .unwrap();
        assert_eq!(
            plan.strip_fields,
            vec![
                HeaderName::from_static("set-cookie"),
                HeaderName::from_static("x-user")
            ]
        );
    }

    #[test]
    fn rfc9111_3_5_authorization() {
        let auth = ("authorization", "Bearer x");
        assert_eq!(
            check(Method::GET, &[auth], 200, &[MAX_AGE]),
            Err(NotStorable::Authorization)
        );
        for cc in ["public", "must-revalidate, max-age=5", "s-maxage=5"] {
            assert!(
                check(Method::GET, &[auth], 200, &[("cache-control", cc)]).is_ok(),
                "{cc}"
            );
        }
        // proxy-revalidate is not one of the three.
        assert_eq!(
            check(
                Method::GET,
                &[auth],
                200,
                &[("cache-control", "proxy-revalidate, max-age=5")]
            ),
            Err(NotStorable::Authorization)
        );
    }

    #[test]
    fn rfc9110_9_3_3_post_answers_reusable_only_with_freshness_and_own_location() {
        let target = EffectiveUri::parse_absolute("https://api.example/items/1?x=1").unwrap();
        let ok = |status: u16, resp: &[(&str, &str)]| {
            post_answer_reusable(
                StatusCode::from_u16(status).unwrap(),
                &target,
                &hm(resp),
                &CacheConfig::default(),
            )
        };
        for location in [
            "/items/1?x=1",
            "https://API.example:443/items/./1?x=1",
            "1?x=1",
        ] {
            assert!(
                ok(200, &[MAX_AGE, ("content-location", location)]),
                "{location}"
            );
        }
        assert!(ok(
            200,
            &[("expires", "0"), ("content-location", "/items/1?x=1")]
        ));
        for location in ["/items/1", "/items/2?x=1", "http://api.example/items/1?x=1"] {
            assert!(
                !ok(200, &[MAX_AGE, ("content-location", location)]),
                "{location}"
            );
        }
        // No explicit freshness, another status, none or two locations.
        assert!(!ok(200, &[("content-location", "/items/1?x=1")]));
        assert!(!ok(201, &[MAX_AGE, ("content-location", "/items/1?x=1")]));
        assert!(!ok(200, &[MAX_AGE]));
        assert!(!ok(
            200,
            &[
                MAX_AGE,
                ("content-location", "/items/1?x=1"),
                ("content-location", "/items/1?x=1")
            ]
        ));
    }

    #[test]
    fn rfc9111_4_1_vary_star_not_stored() {
        assert_eq!(
            check(Method::GET, &[], 200, &[MAX_AGE, ("vary", "accept, *")]),
            Err(NotStorable::VaryStar)
        );
        assert!(check(Method::GET, &[], 200, &[MAX_AGE, ("vary", "accept")]).is_ok());
    }

    #[test]
    fn rfc9213_targeted_field_governs_storability() {
        // CDN-Cache-Control overrides Cache-Control: no-store for this cache.
        assert!(check(
            Method::GET,
            &[],
            200,
            &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=600")
            ]
        )
        .is_ok());
        assert_eq!(
            check(
                Method::GET,
                &[],
                200,
                &[
                    ("cache-control", "max-age=60"),
                    ("cdn-cache-control", "no-store")
                ]
            ),
            Err(NotStorable::ResponseNoStore)
        );
        // Targeted policy ignores Expires: a 302 with only Expires has no freshness info.
        assert_eq!(
            check(
                Method::GET,
                &[],
                302,
                &[
                    ("expires", "Thu, 01 Jan 2037 00:00:00 GMT"),
                    ("cdn-cache-control", "must-revalidate")
                ]
            ),
            Err(NotStorable::NoFreshnessInformation)
        );
    }

    #[test]
    fn rfc9111_3_1_prepare_for_storage_strips_fields() {
        let mut h = hm(&[
            ("connection", "close, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("proxy-authenticate", "Basic"),
            ("set-cookie", "a=b"),
            ("content-type", "text/plain"),
            ("etag", "\"x\""),
        ]);
        prepare_for_storage(
            &mut h,
            &StorePlan {
                strip_fields: vec![HeaderName::from_static("set-cookie")],
            },
        );
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["content-type", "etag"]);
    }

    #[test]
    fn every_hop_by_hop_field_is_never_stored_nor_updated() {
        let mut names: Vec<HeaderName> = crate::hop::HOP_BY_HOP.to_vec();
        names.push(PROXY_AUTHENTICATION_INFO.clone());
        for name in &names {
            assert!(is_never_stored(name), "{name}");
            assert!(crate::revalidate::is_update_exempt(name), "{name}");
            let mut h = HeaderMap::new();
            h.insert(name.clone(), http::HeaderValue::from_static("x"));
            prepare_for_storage(&mut h, &StorePlan::default());
            assert!(h.is_empty(), "{name} stored");
        }
    }

    #[test]
    fn not_storable_names_are_tokens() {
        for r in [
            NotStorable::Method,
            NotStorable::RequestNoStore,
            NotStorable::Status,
            NotStorable::MustUnderstand,
            NotStorable::ResponseNoStore,
            NotStorable::Private,
            NotStorable::Authorization,
            NotStorable::VaryStar,
            NotStorable::NoFreshnessInformation,
        ] {
            assert!(crate::sf::is_sf_token(r.as_str()));
            assert_eq!(r.to_string(), r.as_str());
        }
    }
}
