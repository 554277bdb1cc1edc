//! The request handler: which requests the cache answers, how a miss or a
//! revalidation becomes one coalesced origin call, and what goes back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use herdguard::{
    Cache, CallOptions, Clock, Entry, Error, Loaded, MemoryStore, Served, Store, SystemClock,
};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};

use crate::cache_status::CacheStatus;
use crate::origin::{Fetched, Origin, OriginError};
use crate::response::{to_ms, CachedResponse, Fetch};
use crate::rules::{self, Rules};
use crate::stats::Stats;
use herdguard_http::invalidate::is_safe_method;
use herdguard_http::revalidate::{self, EntityTag};
use herdguard_http::{decide, Decision, ForwardReason, RequestDirectives, Vary};

/// The body type the proxy answers with.
pub type Body = Full<Bytes>;

/// Most `Vary` variants remembered per URL (for invalidation).
const MAX_VARIANTS: usize = 64;

/// The in-process store, shared with the proxy so it can read an expired entry's
/// validators (the core's `get` shows fresh entries only).
pub(crate) struct PeekStore(pub Arc<MemoryStore<String, CachedResponse>>);

impl Store<String, CachedResponse> for PeekStore {
    fn get(&self, key: &String) -> Option<Arc<Entry<CachedResponse>>> {
        self.0.get(key)
    }
    fn insert(&self, key: String, entry: Arc<Entry<CachedResponse>>) {
        self.0.insert(key, entry)
    }
    fn remove(&self, key: &String) {
        self.0.remove(key)
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// What a URL varies on, and the variant keys seen (so all can be invalidated).
#[derive(Clone)]
struct Variants {
    vary: Vary,
    keys: Vec<String>,
    /// The secondary key the entry under the primary key was loaded for: such
    /// requests keep using it (no second load for the first variant).
    primary_key: Vec<u8>,
}

impl Default for Variants {
    fn default() -> Self {
        Variants {
            vary: Vary::None,
            keys: Vec::new(),
            primary_key: Vec::new(),
        }
    }
}

/// One proxy: cache, origin, rules and counters.
pub struct Proxy {
    pub(crate) cache: Cache<String, CachedResponse>,
    pub(crate) store: Arc<MemoryStore<String, CachedResponse>>,
    pub(crate) origin: Origin,
    pub(crate) rules: Rules,
    pub(crate) stats: Arc<Stats>,
    pub(crate) max_request_body: usize,
    pub(crate) max_header_bytes: usize,
    variants: quick_cache::sync::Cache<String, Variants>,
    /// Whether any URL has varied yet: until then the hit path skips `variants`.
    any_variants: AtomicBool,
}

impl Proxy {
    pub(crate) fn new(
        cache: Cache<String, CachedResponse>,
        store: Arc<MemoryStore<String, CachedResponse>>,
        origin: Origin,
        rules: Rules,
        stats: Arc<Stats>,
        max_request_body: usize,
        max_header_bytes: usize,
    ) -> Self {
        Proxy {
            cache,
            store,
            origin,
            rules,
            stats,
            max_request_body,
            max_header_bytes,
            variants: quick_cache::sync::Cache::new(10_000),
            any_variants: AtomicBool::new(false),
        }
    }

    /// Answers one client request. Never fails: every problem is an HTTP answer.
    pub async fn handle<B>(self: Arc<Self>, request: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body + Send + 'static,
        B::Error: Into<herdguard::BoxError>,
    {
        let (parts, body) = request.into_parts();
        // hyper bounds its read buffer, not the head itself: count the fields too.
        let head_bytes: usize = parts
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum();
        if head_bytes > self.max_header_bytes {
            self.stats.count("error");
            return plain(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "herdguard: request header fields too large\n",
            );
        }
        // Most requests (every GET a cache answers) have no body: skip the collector.
        let body = match body.is_end_stream() {
            true => Ok(Bytes::new()),
            false => Limited::new(body, self.max_request_body)
                .collect()
                .await
                .map(|b| b.to_bytes()),
        };
        let body = match body {
            Ok(b) => b,
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                self.stats.count("error");
                return plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "herdguard: request body too large\n",
                );
            }
            Err(e) => {
                self.stats.count("error");
                return plain(
                    StatusCode::BAD_REQUEST,
                    &format!("herdguard: bad request body: {e}\n"),
                );
            }
        };
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        if !pq.starts_with('/') {
            self.stats.count("error");
            return plain(
                StatusCode::BAD_REQUEST,
                "herdguard: only origin-form request targets are accepted\n",
            );
        }
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return self
                .forward_unsafe(parts.method.clone(), pq, &parts.headers, body)
                .await;
        }
        let head = parts.method == Method::HEAD;
        let directives = RequestDirectives::from_headers(&parts.headers);
        let bypass = if parts.headers.contains_key(header::RANGE) {
            Some("range")
        } else if directives.no_cache
            || directives.no_store
            || directives.max_age == Some(Duration::ZERO)
        {
            Some("request-no-cache")
        } else {
            None
        };
        if let Some(why) = bypass {
            return self.bypass(&parts.headers, pq, head, why).await;
        }
        // Shared with a load, if one starts, without copying the fields on a hit.
        let headers = Arc::new(parts.headers);
        let mut response = self.cached(&headers, pq, head, &directives).await;
        if let Some(inm) = headers.get(header::IF_NONE_MATCH) {
            let matched = response.status() == StatusCode::OK
                && EntityTag::from_headers(response.headers())
                    .is_some_and(|etag| revalidate::none_match(inm, &etag));
            if matched {
                *response.status_mut() = StatusCode::NOT_MODIFIED;
                *response.body_mut() = Full::new(Bytes::new());
                response.headers_mut().remove(header::CONTENT_LENGTH);
            }
        }
        response
    }

    /// GET/HEAD through the cache.
    async fn cached(
        self: &Arc<Self>,
        headers: &Arc<HeaderMap>,
        pq: &str,
        head: bool,
        directives: &RequestDirectives,
    ) -> Response<Body> {
        let primary = pq;
        let mut key = self.variant_key(primary, headers);
        if directives.only_if_cached {
            return match self.stored_answer(&key, headers, directives, head) {
                Some(r) => r,
                None => {
                    self.stats.count("error");
                    plain(
                        StatusCode::GATEWAY_TIMEOUT,
                        "herdguard: only-if-cached and not in cache\n",
                    )
                }
            };
        }
        // max-stale may accept a stored response the core would no longer serve.
        if directives.max_stale.is_some() {
            if let Some(r) = self.stored_answer(&key, headers, directives, head) {
                return r;
            }
        }
        // At most two rounds: the second when the first taught us the URL varies.
        for round in 0..2 {
            let result = self.lookup(&key, headers).await;
            let cached = match result {
                Ok(c) => c,
                Err(e) => return self.failed(e, head),
            };
            if !vary_matches(&cached, headers) && round == 0 {
                self.learn_variants(primary, &cached, key == primary);
                key = self.variant_key(primary, headers);
                continue;
            }
            // The core served by the response's own freshness; the request's
            // max-age / min-fresh may still ask for a newer one (RFC 9111 §5.2.1).
            if cached.uncacheable.is_none()
                && (directives.max_age.is_some() || directives.min_fresh.is_some())
            {
                let decision = decide(
                    cached.semantics(&self.rules.config),
                    directives,
                    SystemTime::now(),
                );
                if let Decision::Revalidate { reason, .. } = decision {
                    if reason.is_request_caused() {
                        return self.bypass(headers, pq, head, reason.as_str()).await;
                    }
                }
            }
            if cached.uncacheable.is_none() && cached.vary() != Vary::None {
                self.learn_variants(primary, &cached, key == primary);
            }
            return self.respond(&cached, cached.served(), head);
        }
        // Two rounds disagreed on Vary (the origin changed it): answer uncached.
        self.bypass(headers, pq, head, "vary-changed").await
    }

    /// One coalesced load (or hit) of `key` through the core.
    /// Everything the loader needs is captured cheaply (two `Arc`s and the key):
    /// on a hit the closure is dropped unused.
    async fn lookup(
        self: &Arc<Self>,
        key: &str,
        headers: &Arc<HeaderMap>,
    ) -> Result<herdguard::Cached<CachedResponse>, Error> {
        let proxy = Arc::clone(self);
        let client = Arc::clone(headers);
        let load_key = key.to_string();
        self.cache
            .get_or_load_with(key.to_string(), &CallOptions::new(), move || async move {
                proxy.load(&load_key, &client).await
            })
            .await
    }

    /// The loader: a conditional request when there is a stored response with
    /// validators, else a plain one; freshness from the answer.
    async fn load(
        &self,
        key: &str,
        client: &HeaderMap,
    ) -> Result<Loaded<CachedResponse>, OriginError> {
        // A variant key is the path and query, a newline, then the secondary key.
        let pq = key.split('\n').next().unwrap_or(key);
        let mut headers = client.clone();
        // The cache's request is its own: the client's conditionals are answered
        // by the proxy from the full response, never sent with a shared load.
        for h in [
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_MATCH,
            header::IF_UNMODIFIED_SINCE,
            header::IF_RANGE,
        ] {
            headers.remove(h);
        }
        // The entry being replaced, if any (the core's `get` shows fresh ones only).
        let stale = self
            .store
            .get(&key.to_string())
            .filter(|e| e.value().uncacheable.is_none());
        let mut conditional = false;
        if let Some(s) = &stale {
            let validators = revalidate::conditional_headers(&s.value().header_map());
            conditional = !validators.is_empty();
            headers.extend(validators);
        }
        self.stats.origin_requests.inc();
        let fetched = self
            .origin
            .fetch(Method::GET, pq, &headers, Bytes::new())
            .await;
        let fetched = match fetched {
            Ok(f) if matches!(f.status.as_u16(), 500 | 502 | 503 | 504) => {
                Err(OriginError::ServerError(Box::new(f)))
            }
            other => other,
        };
        let fetched = fetched.inspect_err(|e| self.stats.origin_error(e.kind()))?;
        let (status, response_headers, body, fetch) = match (&stale, fetched.status) {
            (Some(s), StatusCode::NOT_MODIFIED) if conditional => {
                // RFC 9111 §4.3.4: the stored response, its fields updated from the 304.
                let mut merged = s.value().header_map();
                revalidate::update_stored_headers(&mut merged, &fetched.headers);
                (
                    s.value().status(),
                    merged,
                    s.value().body.clone(),
                    Fetch::Revalidated,
                )
            }
            _ => {
                let fetch = if conditional {
                    Fetch::Replaced
                } else {
                    Fetch::Miss
                };
                (
                    fetched.status,
                    fetched.headers.clone(),
                    fetched.body.clone(),
                    fetch,
                )
            }
        };
        Ok(self.to_loaded(&headers, status, response_headers, body, fetch, &fetched))
    }

    fn to_loaded(
        &self,
        request: &HeaderMap,
        status: StatusCode,
        mut headers: HeaderMap,
        body: Bytes,
        fetch: Fetch,
        fetched: &Fetched,
    ) -> Loaded<CachedResponse> {
        let verdict = rules::evaluate(
            &self.rules,
            request,
            status,
            &mut headers,
            fetched.request_time,
            fetched.response_time,
        );
        // The origin's `Age` stays stored: the entry's semantics recompute the
        // initial age from it, and every answer replaces it with the current age.
        let vary_key = Vary::from_response(&headers)
            .secondary_key(request)
            .map(|k| k.as_bytes().to_vec())
            .unwrap_or_default();
        let mut value = CachedResponse {
            status: status.as_u16(),
            headers: Vec::new(),
            body,
            request_time_ms: to_ms(fetched.request_time),
            response_time_ms: to_ms(fetched.response_time),
            vary_key,
            fetch,
            uncacheable: None,
            parsed: Default::default(),
            semantics: Default::default(),
        };
        value.set_headers(&headers);
        match verdict {
            Ok(f) => Loaded::new(value)
                .ttl(f.ttl)
                .stale_while_revalidate(f.stale_while_revalidate)
                .stale_if_error(f.stale_if_error),
            Err(reason) => {
                value.uncacheable = Some(reason.to_string());
                Loaded::uncacheable(value)
            }
        }
    }

    fn variant_key(&self, primary: &str, headers: &HeaderMap) -> String {
        // Most URLs never vary: spare them the lookup.
        if !self.any_variants.load(Ordering::Relaxed) {
            return primary.to_string();
        }
        let Some(v) = self.variants.get(primary) else {
            return primary.to_string();
        };
        let secondary = match v.vary.secondary_key(headers) {
            Some(k) if v.vary != Vary::None && k.as_bytes() != v.primary_key => k,
            _ => return primary.to_string(),
        };
        let mut key = primary.to_string();
        key.push('\n');
        key.push_str(&String::from_utf8_lossy(secondary.as_bytes()));
        if !v.keys.contains(&key) && v.keys.len() < MAX_VARIANTS {
            let mut v = v;
            v.keys.push(key.clone());
            self.variants.insert(primary.to_string(), v);
        }
        key
    }

    fn learn_variants(&self, primary: &str, cached: &CachedResponse, from_primary: bool) {
        let vary = cached.vary();
        let mut v = self.variants.get(primary).unwrap_or_default();
        let changed = v.vary != vary || (from_primary && v.primary_key != cached.vary_key);
        if changed {
            v.vary = vary;
            if from_primary {
                v.primary_key = cached.vary_key.clone();
            }
            self.variants.insert(primary.to_string(), v);
            self.any_variants.store(true, Ordering::Relaxed);
        }
    }

    /// Forwards a GET/HEAD the cache must not answer, without storing the answer.
    async fn bypass(&self, headers: &HeaderMap, pq: &str, head: bool, why: &str) -> Response<Body> {
        self.stats.origin_requests.inc();
        let method = if head { Method::HEAD } else { Method::GET };
        match self.origin.fetch(method, pq, headers, Bytes::new()).await {
            Ok(f) => {
                self.stats.count("bypass");
                let status =
                    CacheStatus::forward(ForwardReason::Request, f.status, Some(why), false, false);
                finish(f.status, f.headers, f.body, None, &status, head)
            }
            Err(e) => {
                self.stats.origin_error(e.kind());
                self.origin_failure(e, head)
            }
        }
    }

    /// Unsafe methods go to the origin; a non-error answer invalidates the URL (RFC 9111 §4.4).
    async fn forward_unsafe(
        &self,
        method: Method,
        pq: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Response<Body> {
        self.stats.origin_requests.inc();
        let safe = is_safe_method(&method);
        match self.origin.fetch(method, pq, headers, body).await {
            Ok(f) => {
                if !safe && (f.status.is_success() || f.status.is_redirection()) {
                    self.invalidate(pq).await;
                    for h in [header::LOCATION, header::CONTENT_LOCATION] {
                        if let Some(target) = f
                            .headers
                            .get(&h)
                            .and_then(|v| v.to_str().ok())
                            .and_then(same_origin_path)
                        {
                            self.invalidate(&target).await;
                        }
                    }
                }
                self.stats.count("bypass");
                let status =
                    CacheStatus::forward(ForwardReason::Method, f.status, None, false, false);
                finish(f.status, f.headers, f.body, None, &status, false)
            }
            Err(e) => {
                self.stats.origin_error(e.kind());
                self.origin_failure(e, false)
            }
        }
    }

    async fn invalidate(&self, primary: &str) {
        let variants = self.variants.get(primary).unwrap_or_default();
        for key in std::iter::once(primary.to_string()).chain(variants.keys) {
            // A shared-store failure is counted by the core; the local entry is gone regardless.
            let _ = self.cache.invalidate(&key).await;
        }
        self.stats.invalidations.inc();
    }

    fn respond(
        &self,
        cached: &herdguard::Cached<CachedResponse>,
        served: Served,
        head: bool,
    ) -> Response<Body> {
        let value: &CachedResponse = cached;
        let ttl = cached.entry().time_to_live(SystemClock.now());
        let status = CacheStatus::served(served, value, ttl);
        self.respond_with(value, &status, head)
    }

    /// A stored response as the answer, with its current `Age` and `status`.
    fn respond_with(
        &self,
        value: &CachedResponse,
        status: &CacheStatus,
        head: bool,
    ) -> Response<Body> {
        self.stats.count(status.label());
        let age = value
            .semantics(&self.rules.config)
            .current_age(SystemTime::now());
        finish(
            value.status(),
            value.header_map(),
            value.body.clone(),
            Some(age),
            status,
            head,
        )
    }

    /// Answers from the stored response of `key` without loading, when the
    /// request's directives accept it as it is (`only-if-cached`, `max-stale`).
    fn stored_answer(
        &self,
        key: &str,
        headers: &HeaderMap,
        directives: &RequestDirectives,
        head: bool,
    ) -> Option<Response<Body>> {
        let entry = self.store.get(&key.to_string())?;
        let value = entry.value();
        if value.uncacheable.is_some() || !vary_matches(value, headers) {
            return None;
        }
        let now = SystemTime::now();
        let status = match decide(value.semantics(&self.rules.config), directives, now) {
            Decision::Fresh => {
                CacheStatus::served(Served::Hit, value, entry.time_to_live(SystemClock.now()))
            }
            Decision::StaleAllowedByRequest => CacheStatus::stale("max-stale"),
            Decision::StaleWhileRevalidate if directives.only_if_cached => {
                CacheStatus::stale("only-if-cached")
            }
            _ => return None,
        };
        Some(self.respond_with(value, &status, head))
    }

    fn failed(&self, error: Error, head: bool) -> Response<Body> {
        match error {
            Error::Origin(e) | Error::RecentlyFailed(e) => match e.downcast_ref::<OriginError>() {
                Some(OriginError::ServerError(f)) => {
                    self.stats.count("error");
                    let status = CacheStatus::forward(
                        ForwardReason::Miss,
                        f.status,
                        Some("origin-error"),
                        false,
                        false,
                    );
                    finish(
                        f.status,
                        f.headers.clone(),
                        f.body.clone(),
                        None,
                        &status,
                        head,
                    )
                }
                Some(OriginError::Timeout(d)) => self.gateway(
                    StatusCode::GATEWAY_TIMEOUT,
                    &format!("origin did not answer within {d:?}"),
                ),
                Some(other) => self.gateway(StatusCode::BAD_GATEWAY, &other.to_string()),
                None => self.gateway(StatusCode::BAD_GATEWAY, &e.to_string()),
            },
            Error::Timeout(d) => self.gateway(
                StatusCode::GATEWAY_TIMEOUT,
                &format!("timed out after {d:?} waiting for the origin"),
            ),
            Error::CircuitOpen => self.gateway(
                StatusCode::SERVICE_UNAVAILABLE,
                "origin calls suspended (circuit open)",
            ),
            other => self.gateway(StatusCode::BAD_GATEWAY, &other.to_string()),
        }
    }

    fn origin_failure(&self, e: OriginError, head: bool) -> Response<Body> {
        match e {
            OriginError::ServerError(f) => {
                self.stats.count("error");
                let status = CacheStatus::forward(
                    ForwardReason::Miss,
                    f.status,
                    Some("origin-error"),
                    false,
                    false,
                );
                finish(f.status, f.headers, f.body, None, &status, head)
            }
            OriginError::Timeout(d) => self.gateway(
                StatusCode::GATEWAY_TIMEOUT,
                &format!("origin did not answer within {d:?}"),
            ),
            other => self.gateway(StatusCode::BAD_GATEWAY, &other.to_string()),
        }
    }

    fn gateway(&self, status: StatusCode, why: &str) -> Response<Body> {
        self.stats.count("error");
        let mut r = plain(status, &format!("herdguard: {why}\n"));
        if let Some(v) = CacheStatus::error(status).to_header_value() {
            r.headers_mut()
                .insert(crate::cache_status::CACHE_STATUS.clone(), v);
        }
        r
    }
}

fn vary_matches(cached: &CachedResponse, headers: &HeaderMap) -> bool {
    if cached.uncacheable.is_some() {
        return true;
    }
    match cached.vary() {
        Vary::None => true,
        vary => vary
            .secondary_key(headers)
            .is_some_and(|k| k.as_bytes() == cached.vary_key.as_slice()),
    }
}

/// The path of a `Location`-like value when it names this origin (a relative
/// reference or an absolute-path one); other hosts are never invalidated.
fn same_origin_path(value: &str) -> Option<String> {
    value.starts_with('/').then(|| value.to_string())
}

/// A response with `Age` and `Cache-Status`; HEAD keeps the length, drops the body.
fn finish(
    status: StatusCode,
    mut headers: HeaderMap,
    body: Bytes,
    age: Option<Duration>,
    cache_status: &CacheStatus,
    head: bool,
) -> Response<Body> {
    if let Some(age) = age {
        headers.insert(header::AGE, HeaderValue::from(age.as_secs()));
    }
    if let Some(v) = cache_status.to_header_value() {
        headers.append(crate::cache_status::CACHE_STATUS.clone(), v);
    }
    // A stored response carries its length already (set once, at parse); an
    // origin's own is right for its body, or for the body a HEAD would have had.
    if !headers.contains_key(header::CONTENT_LENGTH) {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    let mut response = Response::new(Full::new(if head { Bytes::new() } else { body }));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// A short text answer made by the proxy itself.
pub(crate) fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(text.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
