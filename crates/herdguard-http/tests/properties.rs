//! Property tests of the parsers a client or an origin controls: `Cache-Control` (request and
//! response), `Vary` and secondary keys, the choice between variants by q-value, HTTP-dates, the
//! request-target normaliser, and the
//! agreement of every path that computes a cache key (request, purge, invalidation).
//!
//! CI runs proptest's default case count (256 per property). The 10⁶ run:
//! `PROPTEST_CASES=1000000 cargo test --release -p herdguard-http --test properties`
//! (or `scripts/proptest-million.sh`).

use std::time::{Duration, SystemTime};

use herdguard_http::freshness::{format_http_date, parse_http_date};
use herdguard_http::target::is_plain;
use herdguard_http::{RequestDirectives, RequestTarget, ResponseDirectives, TargetError, Vary};
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

/// Directive-shaped text: names, `=`, quotes, commas, digits, whitespace, and noise.
fn directive_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("max-age".to_string()),
            Just("s-maxage".to_string()),
            Just("no-cache".to_string()),
            Just("no-store".to_string()),
            Just("private".to_string()),
            Just("public".to_string()),
            Just("must-revalidate".to_string()),
            Just("stale-while-revalidate".to_string()),
            Just("max-stale".to_string()),
            Just("min-fresh".to_string()),
            Just("only-if-cached".to_string()),
            "[=,;\" \t\\\\]{1,3}",
            "[0-9]{1,25}",
            "-[0-9]{1,4}",
            "\"[a-zA-Z0-9, -]{0,12}\"?",
            "[\\x20-\\x7e]{0,8}",
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

fn header_value(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
}

proptest! {
    #[test]
    fn cache_control_parsers_never_panic(text in directive_text(), bytes in prop::collection::vec(any::<u8>(), 0..48)) {
        let _ = RequestDirectives::parse(&text);
        let _ = ResponseDirectives::parse(&text);
        let mut h = HeaderMap::new();
        if let Some(v) = header_value(&text) {
            h.append("cache-control", v.clone());
            h.append("pragma", v.clone());
            h.append("cdn-cache-control", v);
        }
        if let Ok(v) = HeaderValue::from_bytes(&bytes) {
            h.append("cache-control", v);
        }
        let req = RequestDirectives::from_headers(&h);
        let resp = ResponseDirectives::from_cache_control(&h);
        // Delta-seconds saturate at 2^31 (RFC 9111 §1.2.2), whatever the digits.
        for d in [req.max_age, req.min_fresh, resp.max_age, resp.s_maxage].into_iter().flatten() {
            prop_assert!(d <= Duration::from_secs(herdguard_http::directives::MAX_DELTA_SECONDS));
        }
    }

    #[test]
    fn vary_parser_and_secondary_keys(
        vary in "[a-zA-Z*, \t-]{0,40}",
        accepts in prop::collection::vec("[a-zA-Z0-9/*;=., \t-]{0,24}", 0..4),
    ) {
        let mut resp = HeaderMap::new();
        if let Some(v) = header_value(&vary) {
            resp.append("vary", v);
        }
        let parsed = Vary::from_response(&resp);
        let mut req = HeaderMap::new();
        for a in &accepts {
            if let Some(v) = header_value(a) {
                req.append("accept", v.clone());
                req.append("accept-encoding", v.clone());
                req.append(HeaderName::from_static("x-any"), v);
            }
        }
        let key = parsed.secondary_key(&req);
        // Deterministic, and `Vary: *` (or garbage) never matches.
        prop_assert_eq!(key.clone(), parsed.secondary_key(&req));
        prop_assert_eq!(key.is_none(), parsed == Vary::Any);
        // Member order of an Accept list does not change the key.
        let mut reversed = HeaderMap::new();
        let members: Vec<String> = accepts.iter().flat_map(|a| a.split(',')).map(str::to_string).collect();
        if let Some(v) = header_value(&members.iter().rev().cloned().collect::<Vec<_>>().join(",")) {
            reversed.append("accept", v);
            let mut forward = HeaderMap::new();
            if let Some(f) = header_value(&members.join(",")) {
                forward.append("accept", f);
                let accept = Vary::Fields(vec![HeaderName::from_static("accept")]);
                prop_assert_eq!(accept.secondary_key(&forward), accept.secondary_key(&reversed));
            }
        }
    }

    #[test]
    fn http_date_parser(text in "[A-Za-z0-9,: -]{0,40}", secs in 0u64..4_102_444_800) {
        if let Some(v) = header_value(&text) {
            let _ = parse_http_date(&v);
        }
        // Every date this crate writes reads back to the same second.
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        prop_assert_eq!(parse_http_date(&format_http_date(t)), Some(t));
    }

    #[test]
    fn request_target_normaliser(
        segments in prop::collection::vec(
            prop_oneof![
                Just(".".to_string()), Just("..".to_string()), Just("%2e".to_string()),
                Just("%2E%2e".to_string()), Just("..%2f".to_string()), Just("%5c".to_string()),
                Just("\\".to_string()), Just("%41".to_string()), Just("%zz".to_string()),
                Just("".to_string()), "[a-z0-9._~%-]{1,6}",
            ],
            0..10,
        ),
        query in proptest::option::of("[a-z0-9=&./%?-]{0,12}"),
    ) {
        let mut target = format!("/{}", segments.join("/"));
        if let Some(q) = &query {
            target.push('?');
            target.push_str(q);
        }
        match RequestTarget::parse(&target) {
            Ok(t) => {
                let path = t.path();
                // Under any base: starts with '/', no dot-segments, nothing encoded that
                // could become one.
                prop_assert!(path.starts_with('/'));
                prop_assert!(!path.split('/').any(|s| s == "." || s == ".."), "{}", path);
                let lower = path.to_ascii_lowercase();
                prop_assert!(!lower.contains("%2e") && !lower.contains("%5c") && !path.contains('\\'));
                // Idempotent: the normal form is its own normal form.
                prop_assert_eq!(RequestTarget::parse(t.as_str()), Ok(t.clone()));
                // The fast path agrees with the full one.
                if is_plain(&target) {
                    prop_assert_eq!(t.as_str(), target.as_str());
                }
            }
            Err(e) => {
                prop_assert!(!is_plain(&target));
                prop_assert!(matches!(
                    e,
                    TargetError::EncodedDot
                        | TargetError::Backslash
                        | TargetError::EncodedSlashDotSegment
                        | TargetError::BadPercentEncoding
                ), "{:?}", e);
            }
        }
    }

    #[test]
    fn request_target_normaliser_arbitrary_text(text in "[\\x00-\\x7f]{0,40}") {
        let _ = RequestTarget::parse(&text);
        let _ = is_plain(&text);
    }

    /// A purge of a URL, and an unsafe method's invalidation of it (as its target or its
    /// `Location`), compute the very key a GET of it stored — however the URL is spelled.
    #[test]
    fn purge_and_invalidation_keys_equal_the_request_key(
        segments in prop::collection::vec(
            prop_oneof![
                Just("a"), Just("B"), Just("~"), Just("%7E"), Just("%7e"), Just("%2F"),
                Just("%2f"), Just("%41"), Just("%3d"), Just("%3D"), Just("%c3%a9"), Just(""),
                Just("."), Just(".."), Just("%2e"), Just("..%2f"), Just("%zz"), Just("a%2Fb"),
                Just("%5c"), Just(";p"), Just("%25"),
            ],
            0..6,
        ),
        query in proptest::option::of(prop::collection::vec(
            prop_oneof![
                Just("x=%3d"), Just("x=%3D"), Just("%7e"), Just("~"), Just("%2F"), Just("%2f"),
                Just("/"), Just("a=1&b=2"), Just("?"), Just(""), Just("%26"), Just("&"),
                Just("="), Just("+"), Just("%20"), Just("%41"), Just("../"), Just("%zz"),
                Just("%2e"), Just("#f"),
            ],
            0..5,
        )),
        host in prop_oneof![Just("api.example"), Just("API.Example:80"), Just("h:8080")],
        parts in prop_oneof![Just("path"), Just("path,query"), Just("host,path,query")],
        mode in prop_oneof![Just("as-is"), Just("sorted")],
    ) {
        use herdguard_http::invalidation_targets;
        use herdguard_http::key::normalize_host;
        use herdguard_http::KeyConfig;
        use http::{Method, StatusCode};

        let mut target = format!("/{}", segments.join("/"));
        if let Some(q) = &query {
            target.push('?');
            target.push_str(&q.concat());
        }
        // What a client can send at all (hyper parses the request line with `http::Uri`).
        let Ok(uri) = target.parse::<http::Uri>() else { return Ok(()) };
        let raw = uri.path_and_query().map_or("/", |pq| pq.as_str());
        let config = KeyConfig::from_parts(parts, mode).unwrap();
        let key_host = normalize_host(host).unwrap();
        // The request path (`request::prepare` in the proxy): host, then the target.
        let stored = RequestTarget::parse(raw).ok().map(|t| config.primary(&key_host, &t));
        // Purge by absolute URL, and by a bare path on the default host.
        let purged = config.primary_for_url(&format!("http://{host}{raw}"), "other.example");
        prop_assert_eq!(&purged, &stored, "purge of http://{}{}", host, raw);
        let purged_path = config.primary_for_url(raw, &key_host);
        prop_assert_eq!(&purged_path, &stored, "purge of {}", raw);
        // An unsafe method on the URL itself, and one elsewhere whose `Location` names it.
        let invalidated = |at: &str, location: Option<&str>| -> Vec<String> {
            let Some(base) = RequestTarget::parse(at).ok().and_then(|t| herdguard_http::EffectiveUri::for_target("http", &key_host, &t)) else {
                return Vec::new();
            };
            let mut headers = HeaderMap::new();
            if let Some(l) = location.and_then(|l| HeaderValue::from_str(l).ok()) {
                headers.insert("location", l);
            }
            invalidation_targets(&Method::POST, StatusCode::OK, &base, &headers)
                .iter()
                .map(|u| config.primary_for_uri(u))
                .collect()
        };
        if let Some(stored) = &stored {
            prop_assert!(invalidated(raw, None).contains(stored), "POST {}", raw);
            // (`//x` as a reference names the host `x`, RFC 3986 §4.2.)
            if !raw.starts_with("//") {
                let other = invalidated("/elsewhere", Some(raw));
                prop_assert!(other.contains(stored), "Location: {} gave {:?}", raw, other);
            }
            let absolute = invalidated("/elsewhere", Some(&format!("http://{host}{raw}")));
            prop_assert!(absolute.contains(stored), "Location: http://{}{} gave {:?}", host, raw, absolute);
        }
    }

    /// The adversary of q-value negotiation: whatever `Accept-Encoding` a client sends, a
    /// stored variant is chosen for it only if it names each of the variant's codings (or `*`
    /// without naming it) and refuses none of them with `q=0`.
    #[test]
    fn a_refused_or_unnamed_coding_is_never_chosen(
        members in prop::collection::vec(
            (
                prop_oneof![
                    Just("gzip"), Just("x-gzip"), Just("GZIP"), Just("br"), Just("identity"),
                    Just("*"), Just("deflate"), Just(""), Just("g zip"),
                ],
                prop_oneof![
                    Just(""), Just(";q=0"), Just(";q=0.000"), Just("; Q = 0"), Just(";q=0.5"),
                    Just(";q=1"), Just(";q=1.0"), Just(";q=2"), Just(";q=abc"), Just(";q"),
                    Just(";level=1"),
                ],
            ),
            0..6,
        ),
        coding in prop_oneof![Just(None), Just(Some("gzip")), Just(Some("br")), Just(Some("gzip, br"))],
    ) {
        let accept: Vec<String> = members.iter().map(|(c, q)| format!("{c}{q}")).collect();
        let accept = accept.join(", ");
        let mut request = HeaderMap::new();
        if let Some(v) = header_value(&accept) {
            request.insert("accept-encoding", v);
        }
        let mut response = HeaderMap::new();
        if let Some(c) = coding {
            response.insert("content-encoding", HeaderValue::from_static(c));
        }
        let mut vary_fields = HeaderMap::new();
        vary_fields.insert("vary", HeaderValue::from_static("Accept-Encoding"));
        let vary = Vary::from_response(&vary_fields);
        let chosen = herdguard_http::negotiate::quality(&vary, &request, &response).is_some();
        let codings: Vec<&str> = coding.map_or(vec!["identity"], |c| c.split(", ").collect());
        let name = |c: &str| match c.trim().to_ascii_lowercase().as_str() {
            "x-gzip" => "gzip".to_string(),
            other => other.to_string(),
        };
        let refuses = |q: &str| {
            let q = q.to_ascii_lowercase().replace(' ', "");
            q == ";q=0" || q == ";q=0.000" || q == ";q=2" || q == ";q=abc" || q == ";q"
        };
        for c in codings {
            let named: Vec<&(&str, &str)> = members.iter().filter(|(m, _)| name(m) == c).collect();
            let star: Vec<&(&str, &str)> = members.iter().filter(|(m, _)| *m == "*").collect();
            let refused = if named.is_empty() {
                star.is_empty() || star.iter().any(|(_, q)| refuses(q))
            } else {
                named.iter().any(|(_, q)| refuses(q))
            };
            if refused {
                prop_assert!(!chosen, "{accept:?} chose {coding:?}");
            }
        }
    }
}
