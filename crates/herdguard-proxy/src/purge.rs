//! Purge: `POST /purge` on the admin listener, with `{"url": "..."}` or
//! `?url=...` and `Authorization: Bearer <purge_token>`, removes a URL and every
//! `Vary` variant of it — on this instance, and, with Redis, on every instance of
//! the fleet: this instance invalidates the variants it knows of the URL, in Redis
//! and in memory (the same way an unsafe method's invalidation does), then
//! broadcasts the purge on the change channel, and each other instance does the
//! same for the variants it knows. Each applies a purge once: the broadcast names
//! its sender, which skips its own coming back (it purged before sending, so a
//! purge still applies here when Redis is down).
//!
//! Without a configured token the endpoint is disabled (404). Tokens are
//! compared as SHA-256 digests in constant time.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use herdguard_http::EffectiveUri;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::answer::plain;
use crate::body::Body;
use crate::fleet::FleetRemote as Fleet;
use crate::proxy::Proxy;

/// The log target of purge events (README: "Logs and lock metrics").
const LOG_TARGET: &str = "herdguard::purge";

/// The broadcast topic of purges; the payload is `<sender> <primary key>`.
const TOPIC: &str = "purge";

/// Largest purge request body read.
pub(crate) const MAX_BODY_BYTES: usize = 8 << 10;

/// The purge endpoint of one instance.
pub(crate) struct Purger {
    proxy: Arc<Proxy>,
    token: Option<[u8; 32]>,
    fleet: Option<Fleet>,
    /// This instance in its purge broadcasts: random, so no two share it.
    sender: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeBody {
    url: String,
}

impl Purger {
    /// The endpoint; with a fleet, also starts applying every instance's purges
    /// here (whether or not this instance has an admin listener or a token).
    pub(crate) fn new(proxy: Arc<Proxy>, token: Option<&str>, fleet: Option<Fleet>) -> Self {
        let sender = format!("{:016x}", fastrand::u64(..));
        if let Some(fleet) = &fleet {
            // Weak: the listener lives in the shared store the proxy owns.
            let weak: Weak<Proxy> = Arc::downgrade(&proxy);
            let runtime = tokio::runtime::Handle::current();
            let own = sender.clone();
            fleet.on_broadcast(TOPIC, move |payload| {
                let Some(primary) = others_purge(payload, &own) else {
                    return;
                };
                let Some(proxy) = weak.upgrade() else {
                    return;
                };
                let primary = primary.to_string();
                runtime.spawn(async move { proxy.purge(&primary).await });
            });
        }
        Purger {
            proxy,
            token: token.map(digest),
            fleet,
            sender,
        }
    }

    /// Answers one request to `/purge`.
    pub(crate) async fn answer(&self, request: Request<hyper::body::Incoming>) -> Response<Body> {
        let Some(token) = &self.token else {
            return plain(
                StatusCode::NOT_FOUND,
                "herdguard: purge is disabled: set --purge-token (HERDGUARD_PURGE_TOKEN, purge_token)\n",
            );
        };
        if request.method() != Method::POST {
            let mut r = plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "herdguard: purge with POST /purge\n",
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return r;
        }
        if !authorized(request.headers(), token) {
            let mut r = plain(
                StatusCode::UNAUTHORIZED,
                "herdguard: purge needs Authorization: Bearer <purge token>\n",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
        let from_query = request.uri().query().and_then(url_from_query);
        let body = match Limited::new(request.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("herdguard: a purge body is at most {MAX_BODY_BYTES} bytes\n"),
                )
            }
            Err(e) => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    &format!("herdguard: reading the purge body: {e}\n"),
                )
            }
        };
        let url = match (from_query, body.is_empty()) {
            (Some(url), true) => url,
            (None, false) => match serde_json::from_slice::<PurgeBody>(&body) {
                Ok(b) => b.url,
                Err(e) => {
                    return plain(
                        StatusCode::BAD_REQUEST,
                        &format!("herdguard: the purge body must be {{\"url\": \"...\"}}: {e}\n"),
                    )
                }
            },
            (Some(_), false) => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    "herdguard: give the URL in ?url= or in the body, not both\n",
                )
            }
            (None, true) => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    "herdguard: no URL: POST {\"url\": \"...\"} or ?url=...\n",
                )
            }
        };
        let Some(primary) = self.primary_key(&url) else {
            return plain(
                StatusCode::BAD_REQUEST,
                &format!("herdguard: {url:?} is not a path (/a?b) or an http(s):// URL\n"),
            );
        };
        // This instance first (Redis included), so the answer means it is gone
        // here even when Redis is down; then every other instance, for the
        // variants only they have seen.
        self.proxy.purge(&primary).await;
        let fleet = match &self.fleet {
            None => "none",
            Some(fleet) => match fleet
                .broadcast(TOPIC, &format!("{} {primary}", self.sender))
                .await
            {
                Ok(()) => "broadcast",
                Err(e) => {
                    // The key's hash, not the URL: its query may hold secrets.
                    tracing::warn!(
                        target: LOG_TARGET,
                        key_hash = %herdguard::key_hash(&primary),
                        error = %e,
                        "purge broadcast failed"
                    );
                    return plain(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &format!(
                            "herdguard: purged on this instance only; the fleet broadcast failed: {e}\n"
                        ),
                    );
                }
            },
        };
        let text = serde_json::json!({ "purged": url, "key": primary, "fleet": fleet });
        let mut r = Response::new(Body::full(Bytes::from(format!("{text}\n"))));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    }

    /// The primary key of `url`: an absolute `http(s)://` URL (its host is the
    /// key's host), or a path, on the host of requests without a `Host`.
    fn primary_key(&self, url: &str) -> Option<String> {
        let absolute = if url.starts_with('/') {
            format!("http://{}{url}", self.proxy.tuning().options.default_host)
        } else {
            url.to_string()
        };
        let uri = EffectiveUri::parse_absolute(&absolute)?;
        Some(self.proxy.variants.config().primary_for_uri(&uri))
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether `Authorization` is `Bearer <token>` (digests compared in constant time).
fn authorized(headers: &http::HeaderMap, token: &[u8; 32]) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let Some(given) = value.to_str().ok().and_then(|v| {
        let (scheme, rest) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    }) else {
        return false;
    };
    bool::from(digest(given).ct_eq(token))
}

/// The primary key a purge broadcast names, unless this instance (`own`) sent
/// it: the sender purged before broadcasting. A payload without a sender (from
/// an older version) is the primary key alone; primary keys have no spaces.
fn others_purge<'a>(payload: &'a str, own: &str) -> Option<&'a str> {
    match payload.split_once(' ') {
        Some((sender, _)) if sender == own => None,
        Some((_, primary)) => Some(primary),
        None => Some(payload),
    }
}

/// The `url` parameter of a query string, percent-decoded.
fn url_from_query(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "url")
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_bearer_token_is_authorized() {
        let token = digest("s3cret");
        let with = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            authorized(&h, &token)
        };
        assert!(with("Bearer s3cret"));
        assert!(with("bearer  s3cret "));
        assert!(!with("Bearer s3cre"));
        assert!(!with("Bearer s3crett"));
        assert!(!with("Basic s3cret"));
        assert!(!with("s3cret"));
        assert!(!authorized(&http::HeaderMap::new(), &token));
    }

    #[test]
    fn an_instance_skips_only_its_own_purge_broadcasts() {
        let own = "00000000000000aa";
        assert_eq!(
            others_purge("00000000000000aa api.example/x?a=1", own),
            None
        );
        assert_eq!(
            others_purge("00000000000000bb api.example/x?a=1", own),
            Some("api.example/x?a=1")
        );
        assert_eq!(others_purge("api.example/x", own), Some("api.example/x"));
    }

    #[test]
    fn the_query_url_is_decoded() {
        assert_eq!(
            url_from_query("x=1&url=%2Fa%3Fb%3D1").as_deref(),
            Some("/a?b=1")
        );
        assert_eq!(url_from_query("x=1"), None);
    }
}
