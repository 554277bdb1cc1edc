//! The request handler: which requests the cache answers, how a miss or a
//! revalidation becomes one coalesced origin call, and what goes back.

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
use crate::semantics::{self, RequestDirectives, Rules};
use crate::stats::Stats;

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
#[derive(Clone, Default)]
struct Variants {
    names: Vec<String>,
    keys: Vec<String>,
    /// The request values the entry under the primary key was loaded for: such
    /// requests keep using it (no second load for the first variant).
    primary_values: Vec<(String, Option<String>)>,
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
        let body = match Limited::new(body, self.max_request_body).collect().await {
            Ok(b) => b.to_bytes(),
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
        let pq = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string();
        if !pq.starts_with('/') {
            self.stats.count("error");
            return plain(
                StatusCode::BAD_REQUEST,
                "herdguard: only origin-form request targets are accepted\n",
            );
        }
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return self
                .forward_unsafe(parts.method, &pq, &parts.headers, body)
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
            return self.bypass(&parts.headers, &pq, head, why).await;
        }
        let mut response = self.cached(&parts.headers, &pq, head, &directives).await;
        if let Some(v) = response.headers().get(header::ETAG).cloned() {
            let inm = parts
                .headers
                .get(header::IF_NONE_MATCH)
                .and_then(|h| h.to_str().ok());
            if let (Some(inm), Ok(etag)) = (inm, v.to_str()) {
                if response.status() == StatusCode::OK && semantics::etag_matches(inm, etag) {
                    *response.status_mut() = StatusCode::NOT_MODIFIED;
                    *response.body_mut() = Full::new(Bytes::new());
                    response.headers_mut().remove(header::CONTENT_LENGTH);
                }
            }
        }
        response
    }

    /// GET/HEAD through the cache.
    async fn cached(
        self: &Arc<Self>,
        headers: &HeaderMap,
        pq: &str,
        head: bool,
        directives: &RequestDirectives,
    ) -> Response<Body> {
        let primary = pq.to_string();
        let mut key = self.variant_key(&primary, headers);
        if directives.only_if_cached {
            return match self.cache.get(&key) {
                Some(c) if vary_matches(&c, headers) => self.respond(&c, c.served(), head),
                _ => {
                    self.stats.count("error");
                    plain(
                        StatusCode::GATEWAY_TIMEOUT,
                        "herdguard: only-if-cached and not in cache\n",
                    )
                }
            };
        }
        // At most two rounds: the second when the first taught us the URL varies.
        for round in 0..2 {
            let result = self.lookup(&key, headers, pq).await;
            let cached = match result {
                Ok(c) => c,
                Err(e) => return self.failed(e, head),
            };
            if !vary_matches(&cached, headers) && round == 0 {
                self.learn_variants(&primary, &cached, key == primary);
                key = self.variant_key(&primary, headers);
                continue;
            }
            let age = cached.age(SystemTime::now());
            let too_old = directives.max_age.is_some_and(|m| age > m)
                || directives.min_fresh.is_some_and(|m| {
                    let ttl = cached.entry().time_to_live(SystemClock.now());
                    ttl < m
                });
            if too_old && cached.uncacheable.is_none() {
                return self.bypass(headers, pq, head, "request-max-age").await;
            }
            if cached.uncacheable.is_none() && !cached.vary.is_empty() {
                self.learn_variants(&primary, &cached, key == primary);
            }
            return self.respond(&cached, cached.served(), head);
        }
        // Two rounds disagreed on Vary (the origin changed it): answer uncached.
        self.bypass(headers, pq, head, "vary-changed").await
    }

    /// One coalesced load (or hit) of `key` through the core.
    async fn lookup(
        self: &Arc<Self>,
        key: &str,
        headers: &HeaderMap,
        pq: &str,
    ) -> Result<herdguard::Cached<CachedResponse>, Error> {
        let proxy = Arc::clone(self);
        let stale = self.store.get(&key.to_string());
        let mut request_headers = headers.clone();
        // The cache's request is its own: the client's conditionals are answered
        // by the proxy from the full response, never sent with a shared load.
        for h in [
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_MATCH,
            header::IF_UNMODIFIED_SINCE,
            header::IF_RANGE,
        ] {
            request_headers.remove(h);
        }
        let pq = pq.to_string();
        self.cache
            .get_or_load_with(key.to_string(), &CallOptions::new(), move || async move {
                proxy.load(stale, request_headers, pq).await
            })
            .await
    }

    /// The loader: a conditional request when there is a stored response with
    /// validators, else a plain one; freshness from the answer.
    async fn load(
        &self,
        stale: Option<Arc<Entry<CachedResponse>>>,
        mut headers: HeaderMap,
        pq: String,
    ) -> Result<Loaded<CachedResponse>, OriginError> {
        let stale = stale.filter(|e| e.value().uncacheable.is_none());
        let mut conditional = false;
        if let Some(s) = &stale {
            if let Some(etag) = s
                .value()
                .header("etag")
                .and_then(|v| HeaderValue::from_str(v).ok())
            {
                headers.insert(header::IF_NONE_MATCH, etag);
                conditional = true;
            }
            if let Some(lm) = s
                .value()
                .header("last-modified")
                .and_then(|v| HeaderValue::from_str(v).ok())
            {
                headers.insert(header::IF_MODIFIED_SINCE, lm);
                conditional = true;
            }
        }
        self.stats.origin_requests.inc();
        let fetched = self
            .origin
            .fetch(Method::GET, &pq, &headers, Bytes::new())
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
                for name in fetched.headers.keys() {
                    if name == header::CONTENT_LENGTH || name == header::CONTENT_ENCODING {
                        continue;
                    }
                    merged.remove(name);
                    for v in fetched.headers.get_all(name) {
                        merged.append(name.clone(), v.clone());
                    }
                }
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
        let verdict = semantics::evaluate(
            &self.rules,
            &Method::GET,
            request,
            status,
            &headers,
            fetched.request_time,
            fetched.response_time,
        );
        // Age is recomputed on every answer; the origin's own goes into initial_age.
        headers.remove(header::AGE);
        let vary = semantics::vary_values(request, &semantics::vary_names(&headers));
        let mut value = CachedResponse {
            status: status.as_u16(),
            headers: Vec::new(),
            body,
            initial_age_secs: 0,
            response_time_ms: to_ms(fetched.response_time),
            vary,
            fetch,
            uncacheable: None,
            parsed: std::sync::OnceLock::new(),
        };
        value.set_headers(&headers);
        match verdict {
            Ok(f) => {
                value.initial_age_secs = f.initial_age.as_secs();
                Loaded::new(value)
                    .ttl(f.ttl)
                    .stale_while_revalidate(f.stale_while_revalidate)
                    .stale_if_error(f.stale_if_error)
            }
            Err(reason) => {
                value.uncacheable = Some(reason.to_string());
                Loaded::uncacheable(value)
            }
        }
    }

    fn variant_key(&self, primary: &str, headers: &HeaderMap) -> String {
        match self.variants.get(primary) {
            Some(v)
                if !v.names.is_empty()
                    && semantics::vary_values(headers, &v.names) != v.primary_values =>
            {
                let mut key = primary.to_string();
                for (name, value) in semantics::vary_values(headers, &v.names) {
                    key.push('\n');
                    key.push_str(&name);
                    key.push('=');
                    key.push_str(value.as_deref().unwrap_or("\u{0}"));
                }
                let mut v = v;
                if !v.keys.contains(&key) && v.keys.len() < MAX_VARIANTS {
                    v.keys.push(key.clone());
                    self.variants.insert(primary.to_string(), v);
                }
                key
            }
            _ => primary.to_string(),
        }
    }

    fn learn_variants(&self, primary: &str, cached: &CachedResponse, from_primary: bool) {
        let names: Vec<String> = cached.vary.iter().map(|(n, _)| n.clone()).collect();
        let mut v = self.variants.get(primary).unwrap_or_default();
        let changed = v.names != names || (from_primary && v.primary_values != cached.vary);
        if changed {
            v.names = names;
            if from_primary {
                v.primary_values = cached.vary.clone();
            }
            self.variants.insert(primary.to_string(), v);
        }
    }

    /// Forwards a GET/HEAD the cache must not answer, without storing the answer.
    async fn bypass(&self, headers: &HeaderMap, pq: &str, head: bool, why: &str) -> Response<Body> {
        self.stats.origin_requests.inc();
        let method = if head { Method::HEAD } else { Method::GET };
        match self.origin.fetch(method, pq, headers, Bytes::new()).await {
            Ok(f) => {
                self.stats.count("bypass");
                let status = CacheStatus::forward("request", f.status, Some(why), false, false);
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
        let safe = semantics::is_safe(&method);
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
                let status = CacheStatus::forward("method", f.status, None, false, false);
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
        self.stats.count(status.label());
        let age = value.age(SystemTime::now());
        finish(
            value.status(),
            value.header_map(),
            value.body.clone(),
            Some(age),
            &status,
            head,
        )
    }

    fn failed(&self, error: Error, head: bool) -> Response<Body> {
        match error {
            Error::Origin(e) | Error::RecentlyFailed(e) => match e.downcast_ref::<OriginError>() {
                Some(OriginError::ServerError(f)) => {
                    self.stats.count("error");
                    let status =
                        CacheStatus::forward("miss", f.status, Some("origin-error"), false, false);
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
                let status =
                    CacheStatus::forward("miss", f.status, Some("origin-error"), false, false);
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
        if let Ok(v) = HeaderValue::from_str(&CacheStatus::error(status).to_string()) {
            r.headers_mut()
                .insert(crate::cache_status::CACHE_STATUS.clone(), v);
        }
        r
    }
}

fn vary_matches(cached: &CachedResponse, headers: &HeaderMap) -> bool {
    if cached.vary.is_empty() || cached.uncacheable.is_some() {
        return true;
    }
    let names: Vec<String> = cached.vary.iter().map(|(n, _)| n.clone()).collect();
    semantics::vary_values(headers, &names) == cached.vary
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
    if let Ok(v) = HeaderValue::from_str(&cache_status.to_string()) {
        headers.append(crate::cache_status::CACHE_STATUS.clone(), v);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
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
