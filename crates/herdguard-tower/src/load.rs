//! The load: the one call of the inner service a miss or a revalidation makes
//! for every caller of a key, and what it hands back to the core.
//!
//! As in `herdguard serve`: only an answer that a shared cache may store is
//! given to the core as a value, and so to the callers that waited. Anything
//! else — not storable (`private`, `no-store`, `Set-Cookie`, ...), larger than
//! the body bound, a server error, the service's own error — goes to the
//! caller whose load it was (its [`Handoff`]), streamed; the core gets a marker
//! or a failure, so waiters call the service themselves (hit-for-miss) or get
//! a 5xx made by the layer.

use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use herdguard::Loaded;
use herdguard_http::response::{CachedResponse, Fetch, Overrides};
use herdguard_http::rules::{evaluate, Freshness};
use herdguard_http::{revalidate, ResponsePolicy};
use http::header::{self, HeaderMap};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use tower_service::Service;

use crate::body::{read_up_to, Buffered, HerdBody};
use crate::layer::Shared;
use crate::BoxError;

/// Why a load gave the core no value.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    /// The inner service returned an error (handed to the load's own caller).
    #[error("the inner service failed")]
    Service,
    /// The inner service answered a server error that says nothing of how
    /// long it may be stored.
    #[error("the inner service answered {0}")]
    ServerError(StatusCode),
    /// The response body failed while it was read.
    #[error("the response body failed: {0}")]
    Body(BoxError),
}

/// The answer a load leaves for its own caller only: the service's response
/// (streamed) or its error.
pub(crate) type Own<E> = Result<Response<HerdBody>, E>;

/// Where a load leaves an answer only its own caller may see.
pub(crate) struct Handoff<E>(Arc<Mutex<Option<Own<E>>>>);

impl<E> Clone for Handoff<E> {
    fn clone(&self) -> Self {
        Handoff(Arc::clone(&self.0))
    }
}

impl<E> Default for Handoff<E> {
    fn default() -> Self {
        Handoff(Arc::new(Mutex::new(None)))
    }
}

impl<E> Handoff<E> {
    fn put(&self, own: Own<E>) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(own);
        }
    }

    /// The answer the load left for this caller, if it left one.
    pub(crate) fn take(&self) -> Option<Own<E>> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }
}

/// The client's conditionals are answered by the layer from the whole
/// response, never sent with a load other callers share; nor is `Range`.
const NOT_LOADED_WITH: [header::HeaderName; 6] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
    header::RANGE,
];

/// A client request kept to be made again: for a load (a GET without the
/// client's conditionals), or to call the service on its own.
pub(crate) struct Template {
    parts: Parts,
}

impl Template {
    pub(crate) fn new(parts: Parts) -> Self {
        Template { parts }
    }

    /// The request's fields.
    pub(crate) fn headers(&self) -> &HeaderMap {
        &self.parts.headers
    }

    /// The request as the client made it (without a body: GET and HEAD have none here).
    pub(crate) fn as_sent<B: Default>(&self) -> Request<B> {
        self.build(self.parts.method.clone(), self.parts.headers.clone())
    }

    /// The GET a load makes, with `validators` of a stored response.
    fn for_load<B: Default>(&self, validators: HeaderMap) -> Request<B> {
        let mut headers = self.parts.headers.clone();
        for name in &NOT_LOADED_WITH {
            headers.remove(name);
        }
        headers.extend(validators);
        self.build(Method::GET, headers)
    }

    fn build<B: Default>(&self, method: Method, headers: HeaderMap) -> Request<B> {
        let mut request = Request::new(B::default());
        *request.method_mut() = method;
        *request.uri_mut() = self.parts.uri.clone();
        *request.version_mut() = self.parts.version;
        *request.headers_mut() = headers;
        *request.extensions_mut() = self.parts.extensions.clone();
        request
    }
}

/// Calls `service` with `request` once it is ready.
pub(crate) async fn call<S, R>(service: &mut S, request: R) -> Result<S::Response, S::Error>
where
    S: Service<R>,
{
    poll_fn(|cx| service.poll_ready(cx)).await?;
    service.call(request).await
}

/// One load of `key` for the request of `template`: conditional when a stored
/// response with validators is there, at most twice (the second time
/// unconditional, when a 304 validates nothing stored: RFC 9111 §4.3.4).
pub(crate) async fn load<S, ReqB, ResB>(
    shared: Arc<Shared>,
    mut service: S,
    template: Arc<Template>,
    key: String,
    handoff: Handoff<S::Error>,
) -> Result<Loaded<CachedResponse>, LoadError>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ReqB: Default,
    ResB: http_body::Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    let stale = shared
        .cache
        .peek(&key)
        .filter(|e| e.value().uncacheable.is_none());
    let mut with_validators = stale.is_some();
    loop {
        let validators = match (&stale, with_validators) {
            (Some(s), true) => revalidate::conditional_headers(&s.value().header_map()),
            _ => HeaderMap::new(),
        };
        let conditional = !validators.is_empty();
        let request_time = SystemTime::now();
        let response = match call(&mut service, template.for_load(validators)).await {
            Ok(r) => r,
            Err(e) => {
                handoff.put(Err(e));
                return Err(LoadError::Service);
            }
        };
        let times = (request_time, SystemTime::now());
        let status = response.status();
        if matches!(status.as_u16(), 500 | 502 | 503 | 504)
            && !may_store_error(&shared, response.headers())
        {
            handoff.put(Ok(streamed(response)));
            return Err(LoadError::ServerError(status));
        }
        if let (Some(s), StatusCode::NOT_MODIFIED, true) = (&stale, status, conditional) {
            match revalidated(&shared, s.value(), response.headers(), &template, times) {
                Some(loaded) => return Ok(loaded),
                None => {
                    with_validators = false;
                    continue;
                }
            }
        }
        let fetch = if conditional {
            Fetch::Replaced
        } else {
            Fetch::Miss
        };
        return store_or_pass(&shared, response, fetch, &template, times, &handoff).await;
    }
}

/// Whether a server error may be stored: only when it says for how long.
fn may_store_error(shared: &Shared, headers: &HeaderMap) -> bool {
    ResponsePolicy::from_headers(headers, &shared.rules.config).has_explicit_expiration(headers)
}

/// A full answer stored (read whole, at most the body bound) when the rules
/// allow; otherwise streamed to the load's own caller, the core getting a
/// marker (hit-for-miss).
async fn store_or_pass<ResB, E>(
    shared: &Shared,
    response: Response<ResB>,
    fetch: Fetch,
    template: &Template,
    times: (SystemTime, SystemTime),
    handoff: &Handoff<E>,
) -> Result<Loaded<CachedResponse>, LoadError>
where
    ResB: http_body::Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    let status = response.status();
    let mut stored = response.headers().clone();
    herdguard_http::hop::remove_hop_by_hop(&mut stored);
    let verdict = judge(shared, status, &mut stored, times);
    let announced = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let refusal = match &verdict {
        Err(reason) => Some(*reason),
        Ok(_) if announced.is_some_and(|n| n > shared.max_body_bytes as u64) => Some("too-large"),
        Ok(_) => None,
    };
    if let Some(reason) = refusal {
        handoff.put(Ok(streamed(response)));
        return Ok(Loaded::uncacheable(CachedResponse::passed(
            status, reason, fetch,
        )));
    }
    let (parts, body) = response.into_parts();
    match read_up_to(Box::pin(body), shared.max_body_bytes)
        .await
        .map_err(LoadError::Body)?
    {
        Buffered::Whole(body) => Ok(to_loaded(
            status, stored, body, fetch, template, times, verdict,
        )),
        Buffered::TooLarge(rest) => {
            handoff.put(Ok(Response::from_parts(parts, HerdBody::stream(rest))));
            Ok(Loaded::uncacheable(CachedResponse::passed(
                status,
                "too-large",
                fetch,
            )))
        }
    }
}

/// The storage policy's verdict (`herdguard-http`'s, as `herdguard serve`
/// applies it with no path rule); `stored` is made ready for storage.
fn judge(
    shared: &Shared,
    status: StatusCode,
    stored: &mut HeaderMap,
    times: (SystemTime, SystemTime),
) -> Result<Freshness, &'static str> {
    evaluate(
        &shared.rules,
        (Overrides::default(), false),
        &HeaderMap::new(),
        status,
        stored,
        times,
    )
}

/// The stored response `stored`, its fields updated from a 304 (RFC 9111
/// §4.3.4); `None` when the 304's validator contradicts it.
fn revalidated(
    shared: &Shared,
    stored: &CachedResponse,
    not_modified: &HeaderMap,
    template: &Template,
    times: (SystemTime, SystemTime),
) -> Option<Loaded<CachedResponse>> {
    let stored_headers = stored.header_map();
    if !revalidate::validates(not_modified, &stored_headers) {
        return None;
    }
    let mut merged = stored_headers;
    merged.remove(header::CONTENT_LENGTH);
    revalidate::update_stored_headers(&mut merged, not_modified);
    // A 304 may have made the stored response unstorable (e.g. it now says no-store).
    let verdict = judge(shared, stored.status(), &mut merged, times);
    Some(to_loaded(
        stored.status(),
        merged,
        stored.body.clone(),
        Fetch::Revalidated,
        template,
        times,
        verdict,
    ))
}

/// A storable answer as the core's value, with its freshness (or, refused
/// after all, as a marker).
fn to_loaded(
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    fetch: Fetch,
    template: &Template,
    times: (SystemTime, SystemTime),
    verdict: Result<Freshness, &'static str>,
) -> Loaded<CachedResponse> {
    let value = CachedResponse::from_origin(
        status,
        headers,
        body,
        times,
        template.headers(),
        fetch,
        verdict.as_ref().map_err(|reason| *reason),
    );
    match verdict {
        Ok(f) => herdguard_http::engine::loaded(value, &f),
        Err(_) => Loaded::uncacheable(value),
    }
}

/// The service's response, its body streamed.
pub(crate) fn streamed<ResB>(response: Response<ResB>) -> Response<HerdBody>
where
    ResB: http_body::Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    response.map(HerdBody::stream)
}
