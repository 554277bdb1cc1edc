//! The service: which requests the cache answers, how a miss becomes one
//! coalesced call of the inner service, and which requests go to it on their
//! own — the flow of `herdguard serve`'s handler, on `herdguard-http`'s rules.
//!
//! A GET or HEAD is keyed (`KeyConfig`), looked up through the core (one load
//! per key, waiters woken at once; with a shared store, one per fleet) and
//! answered from the stored response with `Age` and `Cache-Status`. A request
//! with `Authorization` or `no-store` never leads a shared load: it gets a
//! stored response only when one is fresh and, with `Authorization`, marked
//! shareable; otherwise the service answers it alone. Other methods go to the
//! service, and a non-error answer to an unsafe one invalidates the URL (RFC
//! 9111 §4.4).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use herdguard::{CallOptions, Clock, Served, SystemClock};
use herdguard_http::invalidate::invalidation_targets;
use herdguard_http::key::normalize_host;
use herdguard_http::negotiate::stored_variant;
use herdguard_http::range;
use herdguard_http::variants::{falls_short_for, vary_matches};
use herdguard_http::{
    revalidate, EffectiveUri, ForwardReason, RequestDirectives, RequestTarget, Vary,
};
use http::header::{self, HeaderMap};
use http::{Method, Request, Response, StatusCode};
use tower_service::Service;

use crate::answer;
use crate::body::HerdBody;
use crate::layer::Shared;
use crate::load::{self, call, streamed, Handoff, Template};
use crate::BoxError;

/// The service [`HerdLayer`](crate::HerdLayer) wraps around an inner one.
pub struct HerdService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> HerdService<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        HerdService { inner, shared }
    }
}

impl<S: Clone> Clone for HerdService<S> {
    fn clone(&self) -> Self {
        HerdService {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S> std::fmt::Debug for HerdService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HerdService").finish_non_exhaustive()
    }
}

/// The future of [`HerdService::call`].
pub type ResponseFuture<E> =
    Pin<Box<dyn Future<Output = Result<Response<HerdBody>, E>> + Send + 'static>>;

impl<S, ReqB, ResB> Service<Request<ReqB>> for HerdService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: http_body::Body + Default + Send + 'static,
    ResB: http_body::Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<HerdBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        // The clone that was made ready is the one used (tower's convention).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(handle(Arc::clone(&self.shared), inner, request))
    }
}

async fn handle<S, ReqB, ResB>(
    shared: Arc<Shared>,
    mut inner: S,
    request: Request<ReqB>,
) -> Result<Response<HerdBody>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: http_body::Body + Default + Send + 'static,
    ResB: http_body::Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    let method = request.method().clone();
    if method != Method::GET && method != Method::HEAD {
        return Box::pin(other_method(&shared, inner, request)).await;
    }
    let head = method == Method::HEAD;
    // The key is made from exactly what the service sees: a target that is not
    // its own normal form, or a GET with a body, is answered uncached.
    let target = keyed_target(request.uri());
    let Some(target) = target.filter(|_| request.body().is_end_stream()) else {
        let response = call(&mut inner, request).await?;
        return Ok(answer::passed(
            streamed(response),
            ForwardReason::Bypass,
            Some("not-keyed"),
            head,
        ));
    };
    let (mut parts, _) = request.into_parts();
    herdguard_http::hop::remove_hop_by_hop(&mut parts.headers);
    let primary = shared.variants.primary(&host_of(&parts), &target);
    let template = Arc::new(Template::new(parts));
    let directives = if shared.request_cache_control {
        RequestDirectives::from_headers(template.headers())
    } else {
        RequestDirectives::default()
    };
    let authorized = template.headers().contains_key(header::AUTHORIZATION);
    if authorized || directives.no_store {
        // Such a request may be answered from a stored response, but never
        // leads a shared load: its answer is its own.
        if let Some(r) = shareable_stored(&shared, &primary, &template, authorized, head) {
            return Ok(r);
        }
        let why = if authorized {
            "authorization"
        } else {
            "request-no-store"
        };
        return Box::pin(alone(inner, &template, head, why)).await;
    }
    let response = cached(&shared, inner, &primary, &template, head, &directives).await?;
    Ok(conditional(template.headers(), response, head))
}

/// The client's conditionals and `Range`, evaluated against the whole stored
/// response (as `herdguard serve` does): a `304`, a `206` / `416`, or the response.
fn conditional(
    request: &HeaderMap,
    mut response: Response<HerdBody>,
    head: bool,
) -> Response<HerdBody> {
    let whole = match response.body().whole() {
        Some(bytes) if response.status() == StatusCode::OK => bytes,
        _ => return response,
    };
    if revalidate::not_modified(request, response.headers()) {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        *response.body_mut() = HerdBody::empty();
        response.headers_mut().remove(header::CONTENT_LENGTH);
        return response;
    }
    if head {
        return response;
    }
    if let Some((status, part)) = range::cut(request, response.headers_mut(), &whole) {
        *response.status_mut() = status;
        *response.body_mut() = HerdBody::full(part);
    }
    response
}

/// GET/HEAD through the cache: a hit, one coalesced load, or one coalesced
/// forced revalidation; at most two rounds, the second when the first taught
/// that the URL varies.
async fn cached<S, ReqB, ResB>(
    shared: &Arc<Shared>,
    inner: S,
    primary: &str,
    template: &Arc<Template>,
    head: bool,
    directives: &RequestDirectives,
) -> Result<Response<HerdBody>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Default + Send + 'static,
    ResB: http_body::Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    let mut key = shared.variants.key_for(primary, template.headers());
    for round in 0..2 {
        let handoff = Handoff::default();
        let forced = demands_revalidation(shared, &key, template.headers(), directives);
        let config = &shared.rules.config;
        // Another stored variant the request accepts, when its own has none (RFC 9111 §4.1).
        let variant = (!forced).then(|| {
            let keys = (primary, key.as_str());
            stored_variant(
                &shared.cache,
                &shared.variants,
                keys,
                template.headers(),
                config,
                directives,
            )
        });
        if let Some(chosen) = variant.flatten() {
            let ttl = chosen.entry().time_to_live(SystemClock.now());
            let value = chosen.entry().value();
            return Ok(answer::stored(
                config,
                value,
                chosen.served(),
                ttl,
                false,
                head,
            ));
        }
        let options = if forced {
            CallOptions::new().revalidate()
        } else {
            CallOptions::new()
        };
        // Cheap to make (reference counts): on a hit it is dropped unused.
        let loader = {
            let (shared, service) = (Arc::clone(shared), inner.clone());
            let (template, key, handoff) = (Arc::clone(template), key.clone(), handoff.clone());
            move || load::load(shared, service, template, key, handoff)
        };
        let cached = match shared
            .cache
            .get_or_load_with(key.clone(), &options, loader)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                return match handoff.take() {
                    Some(Ok(own)) => Ok(answer::own_error(own, head)),
                    Some(Err(e)) => Err(e),
                    None => Ok(answer::failed(&e)),
                }
            }
        };
        if let Some(reason) = cached.uncacheable.as_deref() {
            return match handoff.take() {
                Some(own) => {
                    let (fwd, detail) = match cached.served() {
                        Served::Pass => (ForwardReason::Bypass, format!("hit-for-miss-{reason}")),
                        _ => (ForwardReason::Miss, reason.to_string()),
                    };
                    Ok(answer::passed(own?, fwd, Some(&detail), head))
                }
                None => Box::pin(alone(inner, template, head, reason)).await,
            };
        }
        if !vary_matches(&cached, template.headers()) {
            if round == 1 {
                break;
            }
            shared.variants.learn(primary, &cached, key == primary);
            key = shared.variants.key_for(primary, template.headers());
            continue;
        }
        if cached.vary() != Vary::None {
            shared.variants.learn(primary, &cached, key == primary);
        }
        let ttl = cached.entry().time_to_live(SystemClock.now());
        return Ok(answer::stored(
            &shared.rules.config,
            &cached,
            cached.served(),
            ttl,
            forced,
            head,
        ));
    }
    // Two rounds disagreed on Vary (the service changed it): answer uncached.
    Box::pin(alone(inner, template, head, "vary-changed")).await
}

/// Whether the request demands a revalidation (`no-cache`, `max-age=0`, or a
/// `max-age` / `min-fresh` the stored response does not meet).
fn demands_revalidation(
    shared: &Shared,
    key: &str,
    request: &HeaderMap,
    directives: &RequestDirectives,
) -> bool {
    if let Some(demanded) = directives.demands_revalidation() {
        return demanded;
    }
    let Some(entry) = shared.cache.peek(&key.to_string()) else {
        return false;
    };
    falls_short_for(entry.value(), request, &shared.rules.config, directives)
}

/// A stored response for a request that must not lead a shared load
/// (`Authorization`, `no-store`): fresh, matching, and — with `Authorization`
/// — one the service marked shareable (`public`, `s-maxage`,
/// `must-revalidate`, RFC 9111 §3.5).
fn shareable_stored(
    shared: &Shared,
    primary: &str,
    template: &Template,
    authorized: bool,
    head: bool,
) -> Option<Response<HerdBody>> {
    let key = shared.variants.key_for(primary, template.headers());
    let entry = shared.cache.peek(&key)?;
    let value = entry.value();
    let now = SystemClock.now();
    if value.uncacheable.is_some()
        || !entry.is_fresh(now)
        || !vary_matches(value, template.headers())
    {
        return None;
    }
    let config = &shared.rules.config;
    if authorized
        && !value
            .semantics(config)
            .policy
            .directives
            .shares_authorized()
    {
        return None;
    }
    Some(answer::stored(
        config,
        value,
        Served::Hit,
        entry.time_to_live(now),
        false,
        head,
    ))
}

/// The request sent to the service on its own: nothing stored, no coalescing.
async fn alone<S, ReqB, ResB>(
    mut inner: S,
    template: &Template,
    head: bool,
    why: &str,
) -> Result<Response<HerdBody>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ReqB: Default,
    ResB: http_body::Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    let response = call(&mut inner, template.as_sent()).await?;
    Ok(answer::passed(
        streamed(response),
        ForwardReason::Request,
        Some(why),
        head,
    ))
}

/// Other methods go to the service with their body; a non-error answer to an
/// unsafe one invalidates the URL and same-origin `Location` /
/// `Content-Location` (RFC 9111 §4.4), every variant of each.
async fn other_method<S, ReqB, ResB>(
    shared: &Shared,
    mut inner: S,
    request: Request<ReqB>,
) -> Result<Response<HerdBody>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: http_body::Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    let method = request.method().clone();
    let uri = keyed_target(request.uri())
        .and_then(|target| EffectiveUri::for_target("http", &host_of_request(&request), &target));
    let response = call(&mut inner, request).await?;
    if let Some(uri) = uri {
        for target in invalidation_targets(&method, response.status(), &uri, response.headers()) {
            let primary = shared.variants.config().primary_for_uri(&target);
            for key in shared.variants.all_keys(&primary) {
                // A shared-store failure is counted by the core; the local entry is gone regardless.
                let _ = shared.cache.invalidate(&key).await;
            }
        }
    }
    Ok(answer::passed(
        streamed(response),
        ForwardReason::Method,
        None,
        false,
    ))
}

/// The request target, when it is its own normal form (so the key names
/// exactly what the service is asked).
fn keyed_target(uri: &http::Uri) -> Option<RequestTarget> {
    let text = uri.path_and_query().map_or("/", |p| p.as_str());
    RequestTarget::parse(text)
        .ok()
        .filter(|t| t.as_str() == text)
}

/// The request's host, normalised: `Host`, else the URI's authority, else
/// `localhost` (an in-process call).
fn host_of(parts: &http::request::Parts) -> String {
    host_from(&parts.headers, &parts.uri)
}

fn host_of_request<B>(request: &Request<B>) -> String {
    host_from(request.headers(), request.uri())
}

fn host_from(headers: &HeaderMap, uri: &http::Uri) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .and_then(normalize_host)
        .unwrap_or_else(|| "localhost".to_string())
}
