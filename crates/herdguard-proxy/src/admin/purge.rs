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
//! Without a configured token the endpoint is disabled (404). The token is
//! checked as `auth` says (Bearer, or Basic's password).

use std::sync::{Arc, Weak};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};

use super::auth::{unauthorized, Token};
use crate::body::Body;
use crate::handle::answer::plain;
use crate::handle::proxy::{FleetRemote as Fleet, Proxy, Removed};

/// The log target of purge events (docs/observability.md: "Logs and lock metrics").
const LOG_TARGET: &str = "herdguard::purge";

/// The broadcast topic of purges; the payload is `<sender> <primary key>`.
const TOPIC: &str = "purge";
/// The broadcast topic of surrogate-key purges; the payload is `<sender> <tag>`.
const TAG_TOPIC: &str = "purge-tag";

/// Largest purge request body read.
pub(crate) const MAX_BODY_BYTES: usize = 8 << 10;

/// The purge endpoint of one instance.
pub(crate) struct Purger {
    proxy: Arc<Proxy>,
    token: Option<Token>,
    fleet: Option<Fleet>,
    /// This instance in its purge broadcasts: random, so no two share it.
    sender: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeBody {
    url: Option<String>,
    tag: Option<String>,
}

/// A purge done here: its broadcast topic, its subject (primary key or tag),
/// the answer's JSON, and why Redis may still hold some of it (`None`: it
/// confirmed every removal).
struct Purged {
    topic: &'static str,
    subject: String,
    done: serde_json::Value,
    unconfirmed: Option<String>,
}

/// What one purge names.
enum Target {
    /// A URL and its variants.
    Url(String),
    /// Every stored answer carrying a surrogate key.
    Tag(String),
}

impl Purger {
    /// The endpoint; with a fleet, also starts applying every instance's purges
    /// here (whether or not this instance has an admin listener or a token).
    pub(crate) fn new(proxy: Arc<Proxy>, token: Option<&str>, fleet: Option<Fleet>) -> Self {
        let sender = format!("{:016x}", fastrand::u64(..));
        if let Some(fleet) = &fleet {
            apply_others(fleet, &proxy, &sender, TOPIC, |proxy, primary| async move {
                proxy
                    .purge_keys(&proxy.variants.all_keys(&primary), false)
                    .await;
            });
            // The keys this instance saw carry the tag (the sender removed
            // those recorded in Redis).
            apply_others(fleet, &proxy, &sender, TAG_TOPIC, |proxy, tag| async move {
                let keys = proxy.tags.take(&tag);
                // Gone here regardless; the sender reports the shared store's failures.
                let _ = proxy.purge_keys(&keys, false).await;
            });
        }
        Purger {
            proxy,
            token: token.map(Token::new),
            fleet,
            sender,
        }
    }

    /// Answers one request to `/purge`.
    pub(crate) async fn answer(&self, request: Request<hyper::body::Incoming>) -> Response<Body> {
        if let Some(refused) = self.refusal(&request) {
            return refused;
        }
        let target = match target(request).await {
            Ok(target) => target,
            Err(refused) => return refused,
        };
        let purged = match target {
            Target::Url(url) => self.purge_url(url).await,
            Target::Tag(tag) => self.purge_tag(tag).await,
        };
        match purged {
            Ok(purged) => self.broadcast(purged).await,
            Err(refused) => refused,
        }
    }

    /// Why a request may not purge: purge disabled, not a POST, or not authorized.
    fn refusal(&self, request: &Request<hyper::body::Incoming>) -> Option<Response<Body>> {
        let Some(token) = &self.token else {
            return Some(plain(
                StatusCode::NOT_FOUND,
                "herdguard: purge is disabled: set --purge-token (HERDGUARD_PURGE_TOKEN, purge_token)\n",
            ));
        };
        if request.method() != Method::POST {
            let mut r = plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "herdguard: purge with POST /purge\n",
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return Some(r);
        }
        if !token.admits(request.headers()) {
            return Some(unauthorized("purge"));
        }
        None
    }

    /// Purges a URL and its variants here (Redis included), so the answer
    /// means it is gone here even when Redis is down; the broadcast then
    /// reaches every other instance, for the variants only they have seen.
    async fn purge_url(&self, url: String) -> Result<Purged, Response<Body>> {
        let Some(primary) = self.primary_key(&url) else {
            return Err(plain(
                StatusCode::BAD_REQUEST,
                &format!("herdguard: {url:?} is not a path (/a?b) or an http(s):// URL\n"),
            ));
        };
        // `keys`: how many of those this instance knows were stored, here or
        // in Redis (0: nothing was).
        let keys = self.proxy.variants.all_keys(&primary);
        let removed = self.proxy.purge_keys(&keys, true).await;
        let done = serde_json::json!({ "url": url, "key": primary, "keys": removed.stored });
        Ok(Purged {
            topic: TOPIC,
            subject: primary,
            done,
            unconfirmed: unconfirmed(removed, keys.len()),
        })
    }

    /// Purges every key carrying `tag`: those this instance saw carry it, and
    /// those any instance recorded in Redis (also of instances that have since gone).
    async fn purge_tag(&self, tag: String) -> Result<Purged, Response<Body>> {
        if !herdguard_redis::valid_tag(&tag) {
            return Err(plain(
                StatusCode::BAD_REQUEST,
                &format!(
                    "herdguard: {tag:?} is not a tag (1 to {} visible characters, no comma)\n",
                    herdguard_redis::MAX_TAG_BYTES
                ),
            ));
        }
        let mut keys = self.proxy.tags.take(&tag);
        let recorded = match &self.fleet {
            Some(fleet) => fleet.take_tagged(&tag).await.map_err(|e| e.to_string()),
            None => Ok(Vec::new()),
        };
        if let Ok(recorded) = &recorded {
            keys.extend(recorded.iter().cloned());
        }
        keys.sort();
        keys.dedup();
        let removed = self.proxy.purge_keys(&keys, true).await;
        let unconfirmed = match recorded {
            Err(e) => Some(format!("the keys recorded in Redis were not read: {e}")),
            Ok(_) => unconfirmed(removed, keys.len()),
        };
        let done = serde_json::json!({ "tag": tag, "keys": removed.stored });
        Ok(Purged {
            topic: TAG_TOPIC,
            subject: tag,
            done,
            unconfirmed,
        })
    }

    /// Sends a purge done here to the rest of the fleet (also when Redis did
    /// not confirm it: the others drop what they hold); the answer says whether
    /// it went (`done`, with `"fleet"`), and is 503 unless Redis confirmed it.
    async fn broadcast(&self, purged: Purged) -> Response<Body> {
        let Purged {
            topic,
            subject,
            done,
            unconfirmed,
        } = purged;
        let fleet = match &self.fleet {
            None => "none",
            Some(fleet) => match fleet
                .broadcast(topic, &format!("{} {subject}", self.sender))
                .await
            {
                Ok(()) => "broadcast",
                Err(e) => {
                    let why = format!("the fleet broadcast failed: {e}");
                    let why = match unconfirmed {
                        Some(also) => format!("{why}; {also}"),
                        None => why,
                    };
                    return self.only_here(&subject, &why);
                }
            },
        };
        if let Some(why) = unconfirmed {
            return self.only_here(&subject, &format!("{why} (the fleet was told)"));
        }
        let mut text = done;
        text["fleet"] = serde_json::Value::from(fleet);
        let mut r = Response::new(Body::full(Bytes::from(format!("{text}\n"))));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    }

    /// The answer when the fleet or Redis could not be reached: purged from
    /// this instance's memory only (`why` says what else failed).
    fn only_here(&self, subject: &str, why: &str) -> Response<Body> {
        // The key's hash, not the URL: its query may hold secrets.
        tracing::warn!(
            target: LOG_TARGET,
            key_hash = %herdguard::key_hash(subject),
            error = %why,
            "purge not confirmed beyond this instance"
        );
        plain(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("herdguard: purged on this instance only; {why}\n"),
        )
    }

    /// The primary key of `url`: an absolute `http(s)://` URL (its host is the
    /// key's host), or a path, on the host of requests without a `Host` — made
    /// as a request's is.
    fn primary_key(&self, url: &str) -> Option<String> {
        let default_host = &self.proxy.tuning().options.default_host;
        self.proxy
            .variants
            .config()
            .primary_for_url(url, default_host)
    }
}

/// What a purge request names: `?url=` / `?tag=`, or a JSON body
/// `{"url": ...}` / `{"tag": ...}` (at most [`MAX_BODY_BYTES`]), not both.
async fn target(request: Request<hyper::body::Incoming>) -> Result<Target, Response<Body>> {
    let from_query = request.uri().query().and_then(target_from_query);
    let body = match Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("herdguard: a purge body is at most {MAX_BODY_BYTES} bytes\n"),
            ))
        }
        Err(e) => {
            return Err(plain(
                StatusCode::BAD_REQUEST,
                &format!("herdguard: reading the purge body: {e}\n"),
            ))
        }
    };
    match (from_query, body.is_empty()) {
        (Some(target), true) => Ok(target),
        (None, false) => match serde_json::from_slice::<PurgeBody>(&body) {
            Ok(PurgeBody { url: Some(url), tag: None }) => Ok(Target::Url(url)),
            Ok(PurgeBody { url: None, tag: Some(tag) }) => Ok(Target::Tag(tag)),
            Ok(_) => Err(plain(
                StatusCode::BAD_REQUEST,
                "herdguard: the purge body names one of url or tag\n",
            )),
            Err(e) => Err(plain(
                StatusCode::BAD_REQUEST,
                &format!(
                    "herdguard: the purge body must be {{\"url\": \"...\"}} or {{\"tag\": \"...\"}}: {e}\n"
                ),
            )),
        },
        (Some(_), false) => Err(plain(
            StatusCode::BAD_REQUEST,
            "herdguard: give the URL or tag in the query or in the body, not both\n",
        )),
        (None, true) => Err(plain(
            StatusCode::BAD_REQUEST,
            "herdguard: nothing to purge: POST {\"url\": \"...\"}, {\"tag\": \"...\"}, ?url= or ?tag=\n",
        )),
    }
}

/// Applies every other instance's broadcasts on `topic` here, with `apply`.
fn apply_others<F, Fut>(fleet: &Fleet, proxy: &Arc<Proxy>, own: &str, topic: &str, apply: F)
where
    F: Fn(Arc<Proxy>, String) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    // Weak: the listener lives in the shared store the proxy owns.
    let weak: Weak<Proxy> = Arc::downgrade(proxy);
    let runtime = tokio::runtime::Handle::current();
    let own = own.to_string();
    fleet.on_broadcast(topic, move |payload| {
        let Some(subject) = others_purge(payload, &own) else {
            return;
        };
        let Some(proxy) = weak.upgrade() else {
            return;
        };
        runtime.spawn(apply(proxy, subject.to_string()));
    });
}

/// Why Redis may still hold some of `total` keys a purge removed here.
fn unconfirmed(removed: Removed, total: usize) -> Option<String> {
    let not_removed = (removed.unconfirmed > 0).then(|| {
        format!(
            "{} of {total} keys not removed from Redis",
            removed.unconfirmed
        )
    });
    let not_counted =
        (removed.uncounted > 0).then(|| format!("{} keys not counted in Redis", removed.uncounted));
    match (not_removed, not_counted) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    }
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

/// The `url` or `tag` parameter of a query string, percent-decoded.
fn target_from_query(query: &str) -> Option<Target> {
    form_urlencoded::parse(query.as_bytes()).find_map(|(k, v)| match &*k {
        "url" => Some(Target::Url(v.into_owned())),
        "tag" => Some(Target::Tag(v.into_owned())),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let url = |q: &str| match target_from_query(q) {
            Some(Target::Url(u)) => Some(u),
            _ => None,
        };
        assert_eq!(url("x=1&url=%2Fa%3Fb%3D1").as_deref(), Some("/a?b=1"));
        assert_eq!(url("x=1"), None);
        assert!(
            matches!(target_from_query("tag=product%2042"), Some(Target::Tag(t)) if t == "product 42")
        );
    }
}
