//! The cached value: one origin response with the times its age is computed
//! from — what `herdguard serve` and the tower layer keep, and what a fleet
//! shares through Redis (serde).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{CacheConfig, StoredResponse, Vary};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

/// How the value was produced by the load that made it (for `Cache-Status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fetch {
    /// A full response from the origin, no stored response to validate.
    Miss,
    /// A conditional request the origin answered `304`: the stored body with updated headers.
    Revalidated,
    /// A conditional request the origin answered with a full, new response.
    Replaced,
}

/// One origin response as the cache keeps it (and, with `--redis`, as the fleet
/// shares it: it is serde-serializable).
///
/// Kept compact, since a cache holds many: the header fields are one block of
/// bytes (`name:value\n` each; the values handed out are slices of it), and
/// what is derived from them — the parsed map for the hit path, the RFC 9111
/// facts — is built on demand and kept (boxed) only for responses that are
/// actually served again.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CachedResponse {
    /// Status code.
    pub status: u16,
    /// Header fields, end-to-end only (hop-by-hop fields are dropped at fetch):
    /// `name:value\n` per field, names lower case.
    head: Bytes,
    /// The whole body.
    pub body: Bytes,
    /// When the request that produced the response was sent, Unix milliseconds.
    #[serde(default)]
    pub request_time_ms: u64,
    /// When the response arrived, Unix milliseconds.
    pub response_time_ms: u64,
    /// The SHA-256 digest of the secondary key (RFC 9111 §4.1) of the request the
    /// response was loaded for, under the response's `Vary` (empty without `Vary`):
    /// it serves only requests with the same digest. A digest, not the header
    /// values themselves, so a shared store never holds a client's `Cookie`.
    #[serde(default)]
    pub vary_key: Vec<u8>,
    /// How the load that produced this value went.
    pub fetch: Fetch,
    /// Why the response may not be stored (`None` when it may); such a value is a
    /// marker only (its answer went to one client as a stream).
    pub uncacheable: Option<String>,
    /// What a per-path rule changed in how the response is judged, kept with it
    /// so that every use (and every instance of the fleet) judges it alike.
    #[serde(default)]
    pub overrides: Overrides,
    /// Its surrogate keys (`Surrogate-Key` / `Cache-Tag`, removed from the fields).
    #[serde(default)]
    pub tags: Vec<String>,
    /// The fields of an answer, parsed, kept from the second use on: the hit
    /// path then clones a map instead of re-validating every field; a response
    /// served once (most of a long tail) never holds one. It ends with an `Age`
    /// and a `Cache-Status` member to overwrite ([`CachedResponse::answer_headers`]),
    /// so a clone takes them in place, with no growth of the map.
    #[serde(skip)]
    parsed: OnceLock<Box<HeaderMap>>,
    #[serde(skip)]
    used: Used,
    #[serde(skip)]
    used_semantics: Used,
    /// The RFC 9111 facts (lifetime, initial age, directives), computed once.
    #[serde(skip)]
    semantics: OnceLock<Box<StoredResponse>>,
    /// Whether the fields hold a `Vary` (most responses have none), found once.
    #[serde(skip)]
    varies: OnceLock<bool>,
}

/// How a per-path rule (`[[rule]]`) changed the judgement of one response.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overrides {
    /// The freshness lifetime, milliseconds, when the response states none.
    pub default_ttl_ms: Option<u64>,
    /// The origin's `Cache-Control`, `Expires`, `Pragma` and targeted fields
    /// are not consulted.
    pub ignore_cache_control: bool,
}

impl Overrides {
    /// The fields the cache judges a response by: all of them, or, when the
    /// origin's freshness fields are ignored, the others.
    pub fn consulted<'a>(
        &self,
        headers: &'a HeaderMap,
        config: &CacheConfig,
    ) -> std::borrow::Cow<'a, HeaderMap> {
        if self.ignore_cache_control {
            std::borrow::Cow::Owned(crate::freshness::without_freshness_fields(headers, config))
        } else {
            std::borrow::Cow::Borrowed(headers)
        }
    }

    /// The RFC 9111 view of a response under these overrides.
    pub fn judge(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        (request_time, response_time): (SystemTime, SystemTime),
        config: &CacheConfig,
    ) -> StoredResponse {
        let stored = StoredResponse::new(
            status,
            &self.consulted(headers, config),
            request_time,
            response_time,
            config,
        );
        match self.default_ttl_ms {
            Some(ms) => stored.with_default_lifetime(Duration::from_millis(ms)),
            None => stored,
        }
    }
}

/// [`CachedResponse::semantics`]: kept with the response, or computed for this
/// use only.
#[derive(Debug)]
pub enum Semantics<'a> {
    /// Kept with the response.
    Kept(&'a StoredResponse),
    /// Computed for this use.
    Fresh(Box<StoredResponse>),
}

impl std::ops::Deref for Semantics<'_> {
    type Target = StoredResponse;

    fn deref(&self) -> &StoredResponse {
        match self {
            Semantics::Kept(s) => s,
            Semantics::Fresh(s) => s,
        }
    }
}

/// Whether something derived from the fields was built once already.
#[derive(Debug, Default)]
struct Used(AtomicBool);

impl Clone for Used {
    fn clone(&self) -> Self {
        Used(AtomicBool::new(self.0.load(Ordering::Relaxed)))
    }
}

/// An `Age` value, rendered once per value and thread while it repeats (a
/// hot response is answered with the same age for a second, thousands of times).
fn age_value(secs: u64) -> HeaderValue {
    thread_local! {
        static RENDERED: std::cell::Cell<Option<(u64, HeaderValue)>> =
            const { std::cell::Cell::new(None) };
    }
    RENDERED.with(|slot| {
        let kept = slot.take();
        let value = match kept {
            Some((s, v)) if s == secs => v,
            _ => HeaderValue::from(secs),
        };
        slot.set(Some((secs, value.clone())));
        value
    })
}

/// Bytes a response costs beyond its key, fields and body and the store's own
/// bookkeeping (which the store adds): the allocator's headers on its
/// allocations and the body's shared handle, created on its first clone.
/// Measured with heaptrack, rounded up.
pub const ENTRY_OVERHEAD: u64 = 128;

impl CachedResponse {
    /// A response with `headers` as its fields and nothing derived yet.
    pub fn new(
        status: StatusCode,
        headers: &HeaderMap,
        body: Bytes,
        (request_time_ms, response_time_ms): (u64, u64),
        vary_key: Vec<u8>,
        fetch: Fetch,
    ) -> Self {
        let mut value = CachedResponse {
            status: status.as_u16(),
            head: Bytes::new(),
            body: compact(body),
            request_time_ms,
            response_time_ms,
            vary_key,
            fetch,
            uncacheable: None,
            overrides: Overrides::default(),
            tags: Vec::new(),
            parsed: OnceLock::new(),
            used: Used::default(),
            used_semantics: Used::default(),
            semantics: OnceLock::new(),
            varies: OnceLock::new(),
        };
        value.set_headers(headers);
        value
    }

    /// An origin's whole answer as the value to store, made the one way the
    /// sidecar and the tower layer both make it: a `Date` added when the origin
    /// sent none (RFC 9110 §6.6.1: the time it arrived; the origin's `Age`
    /// stays, the entry's semantics recompute the initial age from it), the
    /// digest of the request's fields that its `Vary` names, and what the
    /// rules decided (`verdict`): their overrides, or why it is not stored.
    pub fn from_origin(
        status: StatusCode,
        mut headers: HeaderMap,
        body: Bytes,
        (request_time, response_time): (SystemTime, SystemTime),
        request_fields: &HeaderMap,
        fetch: Fetch,
        verdict: Result<&crate::rules::Freshness, &'static str>,
    ) -> Self {
        crate::freshness::ensure_date(&mut headers, response_time);
        let vary_key = crate::variants::digest_of(&Vary::from_response(&headers), request_fields)
            .unwrap_or_default();
        let mut value = CachedResponse::new(
            status,
            &headers,
            body,
            (to_ms(request_time), to_ms(response_time)),
            vary_key,
            fetch,
        );
        match verdict {
            Ok(f) => value.overrides = f.overrides.clone(),
            Err(reason) => value.uncacheable = Some(reason.to_string()),
        }
        value
    }

    /// The marker a load hands the core for an answer that went, as a stream, to
    /// its own caller only: status and reason, no fields, no body.
    pub fn passed(status: StatusCode, reason: &str, fetch: Fetch) -> Self {
        let mut value = CachedResponse::new(
            status,
            &HeaderMap::new(),
            Bytes::new(),
            (0, 0),
            Vec::new(),
            fetch,
        );
        value.uncacheable = Some(reason.to_string());
        value
    }

    /// The status code (502 if the stored one is out of range).
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_GATEWAY)
    }

    /// The header fields as a map; fields that do not parse are dropped.
    pub fn header_map(&self) -> HeaderMap {
        self.parse_headers()
    }

    /// The fields of an answer: the stored ones, then an `Age` and a
    /// `Cache-Status` member, both placeholders (the kept map, when there is one).
    fn answer_template(&self) -> HeaderMap {
        if let Some(map) = self.parsed.get() {
            return HeaderMap::clone(map);
        }
        let mut map = self.parse_headers();
        map.insert(http::header::AGE, HeaderValue::from_static("0"));
        map.append(
            crate::cache_status::CACHE_STATUS,
            HeaderValue::from_static(crate::cache_status::CACHE_NAME),
        );
        if self.used.0.swap(true, Ordering::Relaxed) {
            // Served again: worth keeping.
            let _ = self.parsed.set(Box::new(map.clone()));
        }
        map
    }

    /// The stored fields, in order: (name, value).
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], Bytes)> + '_ {
        let head = &self.head;
        let mut at = 0;
        std::iter::from_fn(move || {
            while at < head.len() {
                let end = head[at..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(head.len(), |i| at + i);
                let line = at..end;
                at = end + 1;
                if let Some(colon) = head[line.clone()].iter().position(|&b| b == b':') {
                    let name = &head[line.start..line.start + colon];
                    return Some((name, head.slice(line.start + colon + 1..line.end)));
                }
            }
            None
        })
    }

    fn parse_headers(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(8);
        for (name, value) in self.fields() {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name),
                HeaderValue::from_maybe_shared(value),
            ) {
                map.append(n, v);
            }
        }
        // The length of the body kept, rendered once rather than on every answer.
        map.insert(
            http::header::CONTENT_LENGTH,
            HeaderValue::from(self.body.len()),
        );
        map
    }

    /// Stores `headers` as the field list (and forgets what was derived from the
    /// previous one).
    pub fn set_headers(&mut self, headers: &HeaderMap) {
        self.parsed = OnceLock::new();
        self.semantics = OnceLock::new();
        self.used = Used::default();
        self.used_semantics = Used::default();
        self.varies = OnceLock::new();
        let len = headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 2)
            .sum();
        let mut head = Vec::with_capacity(len);
        for (n, v) in headers {
            head.extend_from_slice(n.as_str().as_bytes());
            head.push(b':');
            head.extend_from_slice(v.as_bytes());
            head.push(b'\n');
        }
        self.head = Bytes::from(head);
    }

    /// The fields this response is answered with at `now`: the stored ones
    /// (with `Content-Length`), its current `Age`, and `member` appended to
    /// `Cache-Status`.
    pub fn answer_headers(
        &self,
        config: &CacheConfig,
        member: HeaderValue,
        now: SystemTime,
    ) -> HeaderMap {
        let age = self.semantics(config).current_age(now);
        let mut headers = self.answer_template();
        // Both fields are in the template, `Age` once: each is overwritten in
        // place, found in one pass over the few fields (no hashing).
        let mut age = Some(age_value(age.as_secs()));
        let mut ours = None;
        for (name, value) in headers.iter_mut() {
            if name == http::header::AGE {
                if let Some(age) = age.take() {
                    *value = age;
                }
            } else if name == crate::cache_status::CACHE_STATUS {
                // Ours is the last member, after those of caches upstream.
                ours = Some(value);
            }
        }
        if let Some(last) = ours {
            *last = member;
        }
        headers
    }

    /// The first value of `name`, as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.fields()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .and_then(|(_, v)| String::from_utf8(v.to_vec()).ok())
    }

    /// What the response holds on the heap, bytes: key, fields, body, the parsed
    /// fields once it is served again, and the allocations' overhead (the store
    /// adds its own bookkeeping per entry).
    pub fn weight(&self, key: &str) -> u64 {
        let parsed = if self.uncacheable.is_some() {
            0
        } else {
            // The map a response served twice keeps: its table and one bucket a
            // field, the answer's `Age` and `Cache-Status` included.
            128 + 64 * (self.fields().count() as u64 + 2)
        };
        key.len() as u64
            + self.head.len() as u64
            + self.body.len() as u64
            + self.vary_key.len() as u64
            + self.uncacheable.as_ref().map_or(0, |r| r.len() as u64)
            + self.tags.iter().map(|t| t.len() as u64 + 24).sum::<u64>()
            + parsed
            + ENTRY_OVERHEAD
    }

    /// Whether this stored response falls short of a request's `max-age` or
    /// `min-fresh`, so that the request demands its revalidation (see
    /// [`crate::RequestDirectives::demands_revalidation`]).
    pub fn falls_short_of(
        &self,
        config: &CacheConfig,
        request: &crate::RequestDirectives,
        now: SystemTime,
    ) -> bool {
        matches!(
            crate::decision::decide(&self.semantics(config), request, now),
            crate::decision::Decision::Revalidate { reason, .. } if reason.is_request_caused()
        )
    }

    /// The RFC 9111 view of this response (lifetime, age, directives), computed
    /// from the stored fields and times; kept from the second use on.
    pub fn semantics(&self, config: &CacheConfig) -> Semantics<'_> {
        if let Some(kept) = self.semantics.get() {
            return Semantics::Kept(kept);
        }
        let response_time = from_ms(self.response_time_ms);
        // A value from an older peer has no request time: no delay is then assumed.
        let request_time = match self.request_time_ms {
            0 => response_time,
            ms => from_ms(ms),
        };
        let fresh = self.overrides.judge(
            self.status(),
            &self.parse_headers(),
            (request_time, response_time),
            config,
        );
        if self.used_semantics.0.swap(true, Ordering::Relaxed) {
            return Semantics::Kept(self.semantics.get_or_init(|| Box::new(fresh)));
        }
        Semantics::Fresh(Box::new(fresh))
    }

    /// The `Vary` of the stored response (from the kept parsed fields, or read
    /// from the block, nothing parsed or kept beyond the `Vary` fields).
    pub fn vary(&self) -> Vary {
        let varies = *self
            .varies
            .get_or_init(|| self.fields().any(|(n, _)| n.eq_ignore_ascii_case(b"vary")));
        if !varies {
            return Vary::None;
        }
        // A response served again keeps its parsed fields: the hit path reads
        // `Vary` from them instead of scanning the block.
        if let Some(map) = self.parsed.get() {
            return Vary::from_response(map);
        }
        let mut vary = HeaderMap::new();
        for (name, value) in self.fields() {
            if name.eq_ignore_ascii_case(b"vary") {
                if let Ok(v) = HeaderValue::from_maybe_shared(value) {
                    vary.append(http::header::VARY, v);
                }
            }
        }
        Vary::from_response(&vary)
    }
}

/// A body in an allocation of its own size: a body read frame by frame into a
/// growing buffer can hold twice its length, or share a larger read buffer.
fn compact(body: Bytes) -> Bytes {
    if body.is_empty() {
        return Bytes::new();
    }
    Bytes::from(body.to_vec())
}

/// Unix milliseconds of `t` (0 before the epoch).
pub fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The time `ms` Unix milliseconds stand for.
fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}
