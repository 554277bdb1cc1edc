//! The request handler: which requests the cache answers, how a miss or a
//! revalidation becomes one coalesced origin call, and which requests go to the
//! origin on their own — without changing anything for anybody else.
//!
//! The flow of a GET or HEAD: `request::prepare` makes the forwarded request;
//! a request that says `no-store` is answered from a fresh stored response or
//! passed through alone; one with `Authorization` has rules of its own
//! (`Proxy::with_credentials`: stored answers and coalesced loads only where
//! the origin marked them shareable, else a load of its own, stored when so
//! marked); everything else is one lookup through the core — or, when the
//! request demands validation, one forced revalidation per key (the core's
//! `CallOptions::revalidate`, coalesced like any load) — and the outcome becomes
//! an answer in `answer`. A plain hit is all of that without a wait, and is
//! answered by `Proxy::begin` in the listener's service call; the rest goes on
//! in `Proxy::finish`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use herdguard::{Cached, CallOptions, Clock, Served, SystemClock};
use herdguard_http::invalidate::invalidation_targets;
use herdguard_http::revalidate;
use herdguard_http::{decide, Decision, EffectiveUri, ForwardReason, RequestDirectives};
use http::header;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Limited;

use super::access::OriginTime;
use super::answer;
use super::loader::{Handoff, Load, Made};
use super::proxy::{Proxy, RequestCacheControl, Tuning};
use super::request::{self, Forward, Inbound, Peer};
use super::response::CachedResponse;
use super::variants::{falls_short_for, vary_matches};
use crate::body::{Body, BoxError, Inactivity};
use crate::origin::InterimHook;

/// What [`Proxy::begin`] makes of a request without waiting for anything.
pub(crate) enum Begun<B> {
    /// Answered at once: a hit, or a refusal.
    Answered(Response<Body>),
    /// To be finished by [`Proxy::finish`] (boxed: a hit's answer is moved,
    /// not the request's size).
    Pending(Box<Pending<B>>),
}

/// A request that needs more than a plain hit: the origin, a lock, another
/// round of the cache.
pub(crate) struct Pending<B> {
    inbound: Inbound<B>,
    tuning: Arc<Tuning>,
    /// The hit already taken (and counted) for the request's key, when it
    /// could not answer at once (a marker, another variant).
    first: Option<Cached<CachedResponse>>,
    /// A GET's or HEAD's reading of its directives and path rule (`None`:
    /// another method).
    read: Option<Read>,
}

/// What [`Proxy::begin`] read of a GET or HEAD, passed on rather than read again.
pub(crate) struct Read {
    directives: RequestDirectives,
    /// A `[[rule]]` sends its path past the cache.
    bypass: bool,
}

impl Proxy {
    /// Answers one client request from `peer`, as far as it can without
    /// waiting for anything (never fails: every problem is an HTTP answer).
    /// A plain hit is answered here, before the listener's service returns its future, so the
    /// request (and the read buffer its fields point into) is dropped before
    /// hyper reads again, and a hit opens no interim queue and moves no future.
    pub(crate) fn begin<B>(&self, request: Request<B>, peer: &Arc<Peer>) -> Begun<B>
    where
        B: hyper::body::Body,
    {
        // One reading of the settings per request: a reload takes effect from
        // the next request, and a hit reads them once (without a reference count).
        let tuning = self.tuning();
        let o = &tuning.options;
        let inbound = match request::prepare(
            request,
            peer,
            None,
            o.max_header_bytes,
            o.max_request_body_bytes,
            &o.default_host,
            o.keep_client_host,
        ) {
            Ok(i) => i,
            Err(refusal) => return Begun::Answered(answer::refused(&self.stats, &refusal)),
        };
        let (first, read) = if inbound.method == Method::GET || inbound.method == Method::HEAD {
            let forward = &inbound.forward;
            let read = Read {
                directives: self.directives(forward, &tuning),
                bypass: tuning
                    .paths
                    .for_path(forward.target.path())
                    .is_some_and(|r| r.bypass),
            };
            match self.hit_now(&inbound, &tuning, &read) {
                Ok(response) => return Begun::Answered(response),
                Err(first) => (first, Some(read)),
            }
        } else {
            (None, None)
        };
        Begun::Pending(Box::new(Pending {
            inbound,
            tuning: arc_swap::Guard::into_inner(tuning),
            first,
            read,
        }))
    }

    /// Answers a request [`Proxy::begin`] did not, its interim (1xx) answers
    /// from the origin going to `interim` when the client takes them.
    pub(crate) async fn finish<B>(
        self: Arc<Self>,
        pending: Box<Pending<B>>,
        interim: Option<InterimHook>,
    ) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let Pending {
            mut inbound,
            tuning,
            first,
            read,
        } = *pending;
        inbound.forward.interim = interim;
        match read {
            // A GET or HEAD.
            Some(read) => self.get_or_head(inbound, &tuning, first, read).await,
            // Cold paths are boxed, so the hit path's future stays small.
            None => Box::pin(self.forward_other(inbound)).await,
        }
    }

    /// A plain hit, answered without waiting: the same steps as
    /// [`Proxy::get_or_head`] and [`Proxy::cached`] take up to their first
    /// hit. Anything else (a rule's bypass, `no-store`, credentials,
    /// `only-if-cached`, `max-stale`, a demanded revalidation, a miss) is
    /// left to them; so is a hit that cannot answer as it is (a marker,
    /// another variant), handed on so that it is taken, and counted, once.
    fn hit_now<B>(
        &self,
        inbound: &Inbound<B>,
        tuning: &Tuning,
        read: &Read,
    ) -> Result<Response<Body>, Option<Cached<CachedResponse>>> {
        let forward = &inbound.forward;
        let directives = &read.directives;
        if directives.no_store
            || directives.only_if_cached
            || directives.max_stale.is_some()
            || forward.present.authorization
            || read.bypass
        {
            return Err(None);
        }
        // Borrowed from the target where the key is its text; the primary key
        // itself unless this is another variant: no copy of it.
        let primary = self.variants.primary_ref(&forward.host, &forward.target);
        let variant = self.variants.variant_for(&primary, forward);
        let key = variant.as_ref().unwrap_or(&*primary);
        if self.demands_revalidation(key, forward, directives) {
            return Err(None);
        }
        let cached = self.cache.get_fresh(key).ok_or(None)?;
        if cached.uncacheable.is_some() || !vary_matches(&cached, forward) {
            return Err(Some(cached));
        }
        if cached.vary() != herdguard_http::Vary::None {
            self.variants.learn(&primary, &cached, variant.is_none());
        }
        let head = inbound.method == Method::HEAD;
        let response = answer::entry(
            &self.stats,
            &tuning.rules.config,
            cached.entry(),
            cached.served(),
            head,
        );
        Ok(for_request(forward, head, response))
    }

    /// The request's cache directives, as the settings say to read them.
    fn directives(&self, forward: &Forward, tuning: &Tuning) -> RequestDirectives {
        match tuning.options.request_cache_control {
            // Parsed only when the scan saw a field that may carry some.
            RequestCacheControl::Revalidate if forward.present.directives => {
                RequestDirectives::from_headers(&forward.headers)
            }
            RequestCacheControl::Revalidate => RequestDirectives::default(),
            // As nginx and Varnish by default: the request's cache directives are not obeyed.
            RequestCacheControl::Ignore => RequestDirectives::default(),
        }
    }

    /// GET/HEAD: through the cache when the request allows it.
    async fn get_or_head<B>(
        self: &Arc<Self>,
        inbound: Inbound<B>,
        tuning: &Tuning,
        first: Option<Cached<CachedResponse>>,
        read: Read,
    ) -> Response<Body> {
        let head = inbound.method == Method::HEAD;
        let Inbound { forward, .. } = inbound;
        let forward = Arc::new(forward);
        let Read { directives, bypass } = read;
        if bypass {
            return Box::pin(self.pass_through(&forward, head, "rule-bypass", None)).await;
        }
        let primary = self
            .variants
            .primary(forward.host.as_str(), &forward.target);
        let authorized = forward.present.authorization;
        let response = if directives.no_store {
            // May be answered from a stored response, but never leads a shared
            // load, nor is its answer stored: it is its own.
            let key = self.variants.key_for(&primary, &forward);
            match self.stored_for(&key, &forward, authorized, head) {
                Some(r) => r,
                None => {
                    // Nothing of its answer may be stored; a HEAD's may show
                    // the stored one out of date (RFC 9111 §4.3.5).
                    let why = "request-no-store";
                    Box::pin(self.pass_through(&forward, head, why, Some(&key))).await
                }
            }
        } else if authorized {
            Box::pin(self.with_credentials(&primary, &forward, head, &directives)).await
        } else {
            self.cached(&primary, &forward, head, &directives, tuning, first)
                .await
        };
        for_request(&forward, head, response)
    }

    /// GET/HEAD through the cache: a hit, one coalesced load, or one coalesced
    /// forced revalidation.
    async fn cached(
        self: &Arc<Self>,
        primary: &str,
        forward: &Arc<Forward>,
        head: bool,
        directives: &RequestDirectives,
        tuning: &Tuning,
        mut first: Option<Cached<CachedResponse>>,
    ) -> Response<Body> {
        let mut key = self.variants.key_for(primary, forward);
        if directives.only_if_cached {
            return match self.stored_answer(&key, forward, directives, head) {
                Some(r) => r,
                None => {
                    self.stats.count("error");
                    answer::plain(
                        StatusCode::GATEWAY_TIMEOUT,
                        "herdguard: only-if-cached and not in cache\n",
                    )
                }
            };
        }
        // max-stale may accept a stored response the core would no longer serve.
        if directives.max_stale.is_some() {
            if let Some(r) = self.stored_answer(&key, forward, directives, head) {
                return r;
            }
        }
        // At most two rounds: the second when the first taught us the URL varies.
        for round in 0..2 {
            let forced = self.demands_revalidation(&key, forward, directives);
            // A plain hit first: no loader (its key, captures, policy) built for it.
            // `first`: the hit `hit_now` took already (counted once), of the
            // first round's key only.
            let handed = if round == 0 { first.take() } else { None };
            let hit = if forced {
                None
            } else {
                handed.or_else(|| self.cache.get_fresh(&key))
            };
            // A range within a kept prefix of an incomplete answer (RFC 9111 §3.3).
            if hit.is_none() && !forced && !head {
                if let Some(r) = self.answer_within_prefix(&key, forward, directives) {
                    return r;
                }
            }
            if hit.is_none() && !forced {
                // Another stored variant the request accepts (RFC 9111 §4.1).
                if let Some(r) = self.negotiated(primary, &key, forward, directives, head) {
                    return r;
                }
            }
            let (result, handoff) = match hit {
                Some(hit) => (Ok(hit), Handoff::none()),
                None => {
                    let handoff = Handoff::default();
                    // Boxed: the hit path's future stays small (it is moved
                    // whole, several times, on every request).
                    let lookup = Box::pin(self.lookup(&key, forward, &handoff, forced));
                    let result = lookup.await;
                    (result.map_err(Arc::new), handoff)
                }
            };
            let cached = match result {
                Ok(c) => c,
                Err(e) => {
                    // The request's own stale-if-error may accept what the response's did not.
                    if let Some(r) = self.stale_for_request(&key, forward, directives, head) {
                        return r;
                    }
                    return self.failed(&e, &handoff, head);
                }
            };
            if let Some(reason) = cached.uncacheable.as_deref() {
                return Box::pin(self.not_shared(&cached, reason, &handoff, forward, head)).await;
            }
            if !vary_matches(&cached, forward) {
                if round == 1 {
                    break;
                }
                self.variants.learn(primary, &cached, key == primary);
                key = self.variants.key_for(primary, forward);
                continue;
            }
            if cached.vary() != herdguard_http::Vary::None {
                self.variants.learn(primary, &cached, key == primary);
            }
            let ttl = cached.entry().time_to_live(SystemClock.now());
            let mut response = answer::stored(
                &self.stats,
                &tuning.rules.config,
                &cached,
                cached.served(),
                ttl,
                forced,
                head,
            );
            if cached.served() == Served::Shared {
                // Loaded by another instance (which recorded its tags in Redis):
                // indexed here too, for a purge during a Redis outage.
                Box::pin(self.index_tags(&key, &cached.tags, None)).await;
            }
            if matches!(cached.served(), Served::Loaded | Served::Coalesced) {
                // For the access log; never on a hit.
                let took = cached.entry().meta().load_duration;
                response.extensions_mut().insert(OriginTime(took));
            }
            return response;
        }
        // Two rounds disagreed on Vary (the origin changed it): answer uncached.
        Box::pin(self.pass_through(forward, head, "vary-changed", Some(&key))).await
    }

    /// Whether the request demands a revalidation (`no-cache`, `max-age=0`, or a
    /// `max-age` / `min-fresh` the stored response does not meet).
    fn demands_revalidation(
        &self,
        key: &str,
        forward: &Forward,
        directives: &RequestDirectives,
    ) -> bool {
        if let Some(demanded) = directives.demands_revalidation() {
            return demanded;
        }
        // max-age / min-fresh: only when the stored response falls short.
        let Some(entry) = self.cache.peek(&key.to_string()) else {
            return false;
        };
        falls_short_for(
            entry.value(),
            forward,
            &self.tuning().rules.config,
            directives,
        )
    }

    /// One coalesced load (or hit) of `key` through the core; with `revalidate`,
    /// a load even when the stored response is fresh, shared by every client that
    /// demands one meanwhile (fleet-wide with Redis), while the others keep
    /// getting the stored response until the new one replaces it. Everything the
    /// loader needs is captured cheaply: on a hit the closure is dropped unused.
    async fn lookup(
        self: &Arc<Self>,
        key: &str,
        forward: &Arc<Forward>,
        handoff: &Handoff,
        revalidate: bool,
    ) -> Result<Cached<CachedResponse>, herdguard::Error> {
        let proxy = Arc::clone(self);
        let forward = Arc::clone(forward);
        let handoff = handoff.clone();
        let load_key = key.to_string();
        let options = if revalidate {
            CallOptions::new().revalidate()
        } else {
            CallOptions::new()
        };
        self.cache
            .get_or_load_with(key.to_string(), &options, move || async move {
                proxy.load(&load_key, &forward, &handoff).await
            })
            .await
    }

    /// A load whose answer may not be shared: the caller whose load it was gets
    /// the origin's answer; anyone else (should it ever get here) asks the origin itself.
    async fn not_shared(
        &self,
        cached: &Cached<CachedResponse>,
        reason: &str,
        handoff: &Handoff,
        forward: &Forward,
        head: bool,
    ) -> Response<Body> {
        match handoff.take() {
            Some(passed) => {
                let (fwd, detail) = match cached.served() {
                    Served::Pass => (ForwardReason::Bypass, format!("hit-for-miss-{reason}")),
                    _ => (ForwardReason::Miss, reason.to_string()),
                };
                let took = OriginTime(cached.entry().meta().load_duration);
                let mut response = answer::passed(&self.stats, passed, fwd, Some(&detail), head);
                response.extensions_mut().insert(took);
                response
            }
            None => Box::pin(self.pass_through(forward, head, reason, None)).await,
        }
    }

    /// A failed load: the caller whose load it was gets the origin's own answer
    /// (a 5xx), every other caller an answer made by the proxy.
    fn failed(&self, error: &herdguard::Error, handoff: &Handoff, head: bool) -> Response<Body> {
        match handoff.take() {
            Some(passed) => answer::origin_error(&self.stats, passed, head),
            None => answer::failed(&self.stats, error),
        }
    }

    /// The fresh stored response of `key` for `forward`, when it may have it:
    /// matching, and — with `Authorization` — one the origin marked shareable.
    fn stored_for(
        &self,
        key: &str,
        forward: &Forward,
        authorized: bool,
        head: bool,
    ) -> Option<Response<Body>> {
        let entry = self.cache.peek(&key.to_string())?;
        let now = SystemClock.now();
        if !entry.is_fresh(now) || !self.may_have(entry.value(), forward, authorized) {
            return None;
        }
        Some(answer::stored(
            &self.stats,
            &self.tuning().rules.config,
            entry.value(),
            Served::Hit,
            entry.time_to_live(now),
            false,
            head,
        ))
    }

    /// Whether `value` may answer `forward`: a stored response (not a marker)
    /// of its variant, and — for a request with `Authorization` — one the origin
    /// marked shareable (`public`, `s-maxage`, `must-revalidate`, RFC 9111
    /// §3.5): a stored response may have been loaded for other credentials, or
    /// none, and so not be the one this request's would get.
    pub(super) fn may_have(
        &self,
        value: &CachedResponse,
        forward: &Forward,
        authorized: bool,
    ) -> bool {
        value.uncacheable.is_none()
            && vary_matches(value, forward)
            && (!authorized
                || value
                    .semantics(&self.tuning().rules.config)
                    .policy
                    .directives
                    .shares_authorized())
    }

    /// A request with `Authorization`. It is answered from a stored response
    /// only when the origin marked that shareable ([`Proxy::may_have`]). It joins
    /// a coalesced load only to refresh such a stored response: the answer is
    /// then very likely shareable too, and a load's answer that is not goes to
    /// its leader alone (the others call the origin themselves), so no request
    /// ever gets an answer loaded with other credentials unless it is marked
    /// shareable. Otherwise it loads alone, and its answer is stored when it is
    /// marked shareable (RFC 9111 §3.5).
    async fn with_credentials(
        self: &Arc<Self>,
        primary: &str,
        forward: &Arc<Forward>,
        head: bool,
        directives: &RequestDirectives,
    ) -> Response<Body> {
        let key = self.variants.key_for(primary, forward);
        let demanded = self.demands_revalidation(&key, forward, directives);
        if !demanded {
            if let Some(r) = self.stored_for(&key, forward, true, head) {
                return r;
            }
        }
        if directives.only_if_cached {
            self.stats.count("error");
            return answer::plain(
                StatusCode::GATEWAY_TIMEOUT,
                "herdguard: only-if-cached and not in cache\n",
            );
        }
        let shareable_stored = self
            .cache
            .peek(&key)
            .is_some_and(|e| self.may_have(e.value(), forward, true));
        if shareable_stored && !demanded {
            let handoff = Handoff::default();
            match self.lookup(&key, forward, &handoff, false).await {
                Ok(cached) if cached.uncacheable.is_some() => {
                    let reason = cached.uncacheable.clone().unwrap_or_default();
                    return self
                        .not_shared(&cached, &reason, &handoff, forward, head)
                        .await;
                }
                Ok(cached) if self.may_have(&cached, forward, true) => {
                    let config = &self.tuning().rules.config;
                    return answer::entry(
                        &self.stats,
                        config,
                        cached.entry(),
                        cached.served(),
                        head,
                    );
                }
                // Another's load, not marked shareable: not for this request.
                Ok(_) => {}
                Err(e) => return self.failed(&e, &handoff, head),
            }
        }
        self.load_own(primary, &key, forward, head).await
    }

    /// Loads `key` for `forward` alone (no other request shares the load), and
    /// stores the answer when the rules allow — for a request with
    /// `Authorization`, only when marked shareable.
    async fn load_own(
        self: &Arc<Self>,
        primary: &str,
        key: &str,
        forward: &Forward,
        head: bool,
    ) -> Response<Body> {
        let handoff = Handoff::default();
        let started = Instant::now();
        // Revalidated when stored and this request may have it (RFC 9111 §3.5).
        let revalidates_stored = self
            .cache
            .peek(&key.to_string())
            .is_some_and(|e| self.may_have(e.value(), forward, true));
        let made = match self
            .load_alone(key, forward, &handoff, revalidates_stored)
            .await
        {
            Ok(made) => made,
            Err(e) => {
                return match handoff.take() {
                    Some(passed) => answer::origin_error(&self.stats, passed, head),
                    None => answer::origin_failed(&self.stats, &e),
                }
            }
        };
        let took = OriginTime(started.elapsed());
        let mut response = if made.storable() {
            let (value, ttl) = self.keep(primary, key, made).await;
            let config = &self.tuning().rules.config;
            answer::stored(
                &self.stats,
                config,
                &value,
                Served::Loaded,
                ttl,
                false,
                head,
            )
        } else {
            let reason = made.value.uncacheable.clone();
            let passed = handoff.take().unwrap_or_else(|| made.into_passed());
            answer::passed(
                &self.stats,
                passed,
                ForwardReason::Request,
                reason.as_deref(),
                head,
            )
        };
        response.extensions_mut().insert(took);
        response
    }

    /// Stores the storable `made` under `key` (a variant of `primary`), and
    /// gives back its value and freshness, to answer its own caller with.
    async fn keep(
        self: &Arc<Self>,
        primary: &str,
        key: &str,
        made: Made,
    ) -> (CachedResponse, Duration) {
        let (value, ttl) = (made.value.clone(), made.ttl());
        self.store_made(key, made).await;
        if value.vary() != herdguard_http::Vary::None {
            self.variants.learn(primary, &value, key == primary);
        }
        (value, ttl)
    }

    /// Stores `made` under `key` (fleet-wide with a shared store) as a
    /// coalesced load whose loader is the answer in hand. A load of the key
    /// already in flight is joined instead, and its answer stands: it began
    /// earlier, and this one is answered already.
    async fn store_made(self: &Arc<Self>, key: &str, made: Made) {
        // A whole answer: a prefix kept of an older one is of no more use
        // (dropped, not fenced: see `make` in loader.rs).
        self.partials.take(key);
        let loaded = self.indexed(key, made).await;
        let options = CallOptions::new().revalidate();
        let _ = self
            .cache
            .get_or_load_with(key.to_string(), &options, move || async move {
                Ok::<_, std::convert::Infallible>(loaded)
            })
            .await;
    }

    /// Forwards a GET/HEAD on its own: nothing stored, nothing marked, no
    /// coalescing — but a HEAD's answer may show the stored GET answer of
    /// `key` out of date, and remove it (RFC 9111 §4.3.5).
    async fn pass_through(
        &self,
        forward: &Forward,
        head: bool,
        why: &str,
        key: Option<&str>,
    ) -> Response<Body> {
        self.stats.origin_requests.inc();
        let method = if head { Method::HEAD } else { Method::GET };
        let started = Instant::now();
        match self
            .origin
            .send(
                method,
                forward.target.as_str(),
                forward.to_send(),
                Body::empty(),
                forward.interim.as_ref(),
            )
            .await
        {
            Ok(r) => {
                let took = OriginTime(started.elapsed());
                if let (true, Some(key)) = (head, key) {
                    self.head_answered(key, forward, &r).await;
                }
                let passed = self.pass(r);
                let mut response =
                    answer::passed(&self.stats, passed, ForwardReason::Request, Some(why), head);
                response.extensions_mut().insert(took);
                response
            }
            Err(e) => {
                self.stats.origin_error(e.kind());
                answer::origin_failed(&self.stats, &e)
            }
        }
    }

    /// Other methods go to the origin with their body streamed; a non-error
    /// answer to an unsafe one invalidates the URL and same-origin `Location` /
    /// `Content-Location` (RFC 9111 §4.4).
    async fn forward_other<B>(self: &Arc<Self>, inbound: Inbound<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let Inbound {
            method,
            forward,
            body,
        } = inbound;
        let target = forward.target.clone();
        let headers = forward.to_send();
        let body = if body.is_end_stream() {
            Body::empty()
        } else {
            let o = &self.tuning().options;
            Body::stream(Limited::new(
                Inactivity::new(body, o.body_read_timeout, "request body"),
                o.max_request_body_bytes,
            ))
        };
        self.stats.origin_requests.inc();
        let started = Instant::now();
        let response = match self
            .origin
            .send(
                method.clone(),
                target.as_str(),
                headers,
                body,
                forward.interim.as_ref(),
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                self.stats.origin_error(e.kind());
                return answer::origin_failed(&self.stats, &e);
            }
        };
        let took = OriginTime(started.elapsed());
        let host = forward.host.as_str();
        let uri = EffectiveUri::for_target("http", host, &target);
        if let Some(uri) = &uri {
            let targets = invalidation_targets(&method, response.status, uri, &response.headers);
            for target in &targets {
                self.invalidate(&self.variants.config().primary_for_uri(target))
                    .await;
            }
        }
        let mut response = match uri {
            Some(uri) if method == Method::POST => {
                self.post_answer(host, &forward, &uri, response, started)
                    .await
            }
            _ => {
                let passed = self.pass(response);
                answer::passed(&self.stats, passed, ForwardReason::Method, None, false)
            }
        };
        response.extensions_mut().insert(took);
        response
    }

    /// The answer to a `POST` of `uri`: stored as the answer to a `GET` of it
    /// when it says it is that (RFC 9110 §9.3.3: explicit freshness, its own
    /// `Content-Location`) and the rules allow, else passed on.
    async fn post_answer(
        self: &Arc<Self>,
        host: &str,
        forward: &Forward,
        uri: &EffectiveUri,
        response: crate::origin::OriginResponse,
        started: Instant,
    ) -> Response<Body> {
        let primary = self.variants.primary(host, &forward.target);
        let key = self.variants.key_for(&primary, forward);
        let handoff = Handoff::default();
        let tuning = arc_swap::Guard::into_inner(self.tuning());
        let load = Load::new(&key, forward, &handoff, &tuning);
        if !load.post_answer_reusable(&response, uri) {
            let passed = self.pass(response);
            return answer::passed(&self.stats, passed, ForwardReason::Method, None, false);
        }
        match self.store_or_pass(&load, response, false, started).await {
            Ok(made) if made.storable() => {
                let (value, ttl) = self.keep(&primary, &key, made).await;
                answer::method_stored(&self.stats, &value, ttl)
            }
            Ok(made) => {
                let reason = made.value.uncacheable.clone();
                let passed = handoff.take().unwrap_or_else(|| made.into_passed());
                answer::passed(
                    &self.stats,
                    passed,
                    ForwardReason::Method,
                    reason.as_deref(),
                    false,
                )
            }
            Err(e) => {
                self.stats.origin_error(e.kind());
                answer::origin_failed(&self.stats, &e)
            }
        }
    }

    /// After a failed load: the stored response of `key`, when the request's
    /// `stale-if-error` covers its staleness (RFC 5861 §4) and nothing forbids it.
    fn stale_for_request(
        &self,
        key: &str,
        forward: &Forward,
        directives: &RequestDirectives,
        head: bool,
    ) -> Option<Response<Body>> {
        directives.stale_if_error?;
        let entry = self.cache.peek(&key.to_string())?;
        let value = entry.value();
        if value.uncacheable.is_some() || !vary_matches(value, forward) {
            return None;
        }
        let tuning = self.tuning();
        let config = &tuning.rules.config;
        herdguard_http::decision::stale_if_error_until(
            &value.semantics(config),
            directives,
            SystemTime::now(),
        )?;
        Some(answer::stale_accepted(
            &self.stats,
            config,
            value,
            "stale-if-error",
            head,
        ))
    }

    /// Answers from the stored response of `key` without loading, when the
    /// request's directives accept it as it is (`only-if-cached`, `max-stale`).
    fn stored_answer(
        &self,
        key: &str,
        forward: &Forward,
        directives: &RequestDirectives,
        head: bool,
    ) -> Option<Response<Body>> {
        let entry = self.cache.peek(&key.to_string())?;
        let value = entry.value();
        if value.uncacheable.is_some() || !vary_matches(value, forward) {
            return None;
        }
        let tuning = self.tuning();
        let config = &tuning.rules.config;
        match decide(&value.semantics(config), directives, SystemTime::now()) {
            Decision::Fresh => Some(answer::entry(
                &self.stats,
                config,
                &entry,
                Served::Hit,
                head,
            )),
            Decision::StaleAllowedByRequest => Some(answer::stale_accepted(
                &self.stats,
                config,
                value,
                "max-stale",
                head,
            )),
            Decision::StaleWhileRevalidate if directives.only_if_cached => Some(
                answer::stale_accepted(&self.stats, config, value, "only-if-cached", head),
            ),
            _ => None,
        }
    }
}

/// The whole stored answer made into the one this request asked for: `304`
/// when the client's conditionals say it holds it, the range it asked for.
/// The client's conditionals are evaluated against the whole stored response.
fn for_request(forward: &Forward, head: bool, mut response: Response<Body>) -> Response<Body> {
    let whole = response.status() == StatusCode::OK && matches!(response.body(), Body::Full(_));
    if whole && forward.present.conditional && not_modified(&forward.headers, response.headers()) {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        *response.body_mut() = Body::empty();
        response.headers_mut().remove(header::CONTENT_LENGTH);
        return response;
    }
    if whole && !head && forward.present.range {
        return super::range::apply(&forward.headers, response);
    }
    response
}

/// Whether the client's `If-None-Match` — or, without one, `If-Modified-Since`
/// (RFC 9110 §13.1.3: ignored when `If-None-Match` is present) — says it holds
/// this response already. The modification date is `Last-Modified`, else `Date`
/// (RFC 9111 §4.3.2).
fn not_modified(request: &http::HeaderMap, response: &http::HeaderMap) -> bool {
    revalidate::not_modified(request, response)
}
