//! The loader: the one origin request a miss or a revalidation makes for every
//! caller of a key, and what it hands back to the core.
//!
//! Only an answer that may be stored in a shared cache is ever given to the
//! core as a value, and so to the callers that waited on the load. Anything
//! else — not storable (`private`, `no-store`, `Set-Cookie`, ...), larger than
//! the object limit, or a server error — goes, as a stream, to the caller whose
//! load it was (its [`Handoff`]); the core gets only a marker, so waiters go to
//! the origin themselves and the key turns hit-for-miss (Varnish's waiting-list
//! rule). Whether an answer is storable depends on the response and on the
//! leader's `Authorization` (RFC 9111 §3.5: then only answers marked `public`,
//! `s-maxage` or `must-revalidate`); a request that says `no-store` never leads
//! a load. [`Proxy::load_alone`] is the same load for one caller, coalesced with
//! nobody (a request with credentials, unless it refreshes a stored answer
//! marked shareable without demanding a revalidation), and the only load that
//! carries the caller's own `If-None-Match` tags (RFC 9111 §4.3.2): its answer
//! goes to nobody else, so a `304` for them can too.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herdguard::Loaded;
use herdguard_http::partial;
use herdguard_http::revalidate::{self, SelectedBy};
use herdguard_http::ResponsePolicy;
use http::header::{self, HeaderMap};
use http::{Method, StatusCode};

use super::answer::Passed;
use super::partial::Partial;
use super::path_rules::PathRule;
use super::proxy::{Proxy, Tuning};
use super::request::Forward;
use super::response::{CachedResponse, Fetch};
use super::rules;
use super::tags;
use super::variants::vary_matches;
use crate::body::{Body, Inactivity, Prefixed};
use crate::origin::{read_up_to, Buffered, OriginError, OriginResponse};

/// What a load made of an answer: the value, and — when it may be stored —
/// its freshness in the core's terms and its surrogate keys.
pub(crate) struct Made {
    /// The answer as stored, or (not storable) a marker whose `uncacheable`
    /// says why: the answer itself then went to the load's own caller.
    pub value: CachedResponse,
    freshness: Option<rules::Freshness>,
    tags: Vec<String>,
}

impl Made {
    /// Whether the answer may be stored (and so shared).
    pub(crate) fn storable(&self) -> bool {
        self.freshness.is_some()
    }

    /// Freshness left at arrival (zero when not storable).
    pub(crate) fn ttl(&self) -> Duration {
        self.freshness.as_ref().map_or(Duration::ZERO, |f| f.ttl)
    }

    /// The longest the stored answer may live (`None`: not stored).
    fn keep(&self) -> Option<Duration> {
        self.freshness.as_ref().map(|f| {
            f.ttl
                .saturating_add(f.stale_while_revalidate.max(f.stale_if_error))
        })
    }

    /// The core's value.
    fn into_loaded(self) -> Loaded<CachedResponse> {
        match self.freshness {
            Some(f) => herdguard_http::engine::loaded(self.value, &f),
            None => Loaded::uncacheable(self.value),
        }
    }

    /// The answer itself, for its own caller, when it went nowhere else (one
    /// a 304 made unstorable: the stored body with the 304's fields).
    pub(crate) fn into_passed(self) -> Passed {
        Passed {
            status: self.value.status(),
            headers: self.value.header_map(),
            body: Body::full(self.value.body.clone()),
        }
    }

    /// A marker for an answer that went to its own caller.
    fn passed(status: StatusCode, reason: &str, fetch: Fetch) -> Made {
        Made {
            value: CachedResponse::passed(status, reason, fetch),
            freshness: None,
            tags: Vec::new(),
        }
    }
}

/// Where a load leaves an answer only its own caller may see.
#[derive(Clone)]
pub(crate) struct Handoff(Option<Arc<Mutex<Option<Passed>>>>);

impl Default for Handoff {
    fn default() -> Self {
        Handoff(Some(Arc::default()))
    }
}

impl Handoff {
    /// The handoff of a request that loads nothing (a hit): empty, and allocates nothing.
    pub(crate) fn none() -> Self {
        Handoff(None)
    }

    fn put(&self, passed: Passed) {
        if let Some(Ok(mut slot)) = self.0.as_ref().map(|s| s.lock()) {
            *slot = Some(passed);
        }
    }

    /// The answer the load left for this caller, if it left one.
    pub(crate) fn take(&self) -> Option<Passed> {
        self.0
            .as_ref()?
            .lock()
            .ok()
            .and_then(|mut slot| slot.take())
    }
}

/// The client's conditionals are answered by the proxy from the full response,
/// never sent with a load other callers share.
const CLIENT_CONDITIONALS: [header::HeaderName; 5] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
];

impl Proxy {
    /// An origin answer as a stream for one client (the origin may pause at most
    /// the origin timeout between two reads).
    pub(crate) fn pass(&self, response: OriginResponse) -> Passed {
        let limit = self.origin.timeout();
        let mut headers = response.headers;
        // Surrogate keys are this cache's fields, never the client's.
        tags::take(&mut headers);
        Passed {
            status: response.status,
            headers,
            body: Body::stream(Inactivity::new(response.body, limit, "origin body")),
        }
    }

    /// Loads `key` for `forward`: conditional when the stored response (fresh,
    /// for a forced revalidation, or expired) has validators.
    pub(crate) async fn load(
        &self,
        key: &str,
        forward: &Forward,
        handoff: &Handoff,
    ) -> Result<Loaded<CachedResponse>, OriginError> {
        let made = self.make(key, forward, handoff, Conditions::Shared).await?;
        Ok(self.indexed(key, made).await)
    }

    /// An origin answer to `forward` for its caller alone (nothing coalesced):
    /// what it made, its stream in `handoff` when not storable. Conditional on
    /// the caller's own entity tags, merged with the stored response's when
    /// `revalidates_stored` (one this caller may have, RFC 9111 §4.3.2): a
    /// `304` that selects only the caller's goes to it alone, never stored.
    pub(crate) async fn load_alone(
        &self,
        key: &str,
        forward: &Forward,
        handoff: &Handoff,
        revalidates_stored: bool,
    ) -> Result<Made, OriginError> {
        let conditions = Conditions::Alone {
            stored: revalidates_stored,
        };
        self.make(key, forward, handoff, conditions).await
    }

    /// The answer of a load of `key` for `forward`, conditional as `conditions` allow.
    async fn make(
        &self,
        key: &str,
        forward: &Forward,
        handoff: &Handoff,
        conditions: Conditions,
    ) -> Result<Made, OriginError> {
        // The settings in force when the load began, for the whole load.
        let tuning = arc_swap::Guard::into_inner(self.tuning());
        let load = Load::new(key, forward, handoff, &tuning);
        let made = match self.ask_origin(&load, conditions).await? {
            Answer::Made(made) => made,
            Answer::ForCaller(response) => {
                // The caller's own 304: to it alone, and nothing stored.
                let status = response.status;
                load.handoff.put(self.pass(response));
                return Ok(Made::passed(status, "not-modified-for-client", Fetch::Miss));
            }
            Answer::Full {
                response,
                conditional,
                started,
            } => {
                self.store_or_pass(&load, response, conditional, started)
                    .await?
            }
        };
        if made.storable() {
            // A whole answer: a prefix of an older one is of no more use. Not
            // a fence: stores are frequent, and a fence slot is shared by a
            // 256th of the keys (a prefix is never served while an answer is
            // stored under its key anyway).
            self.partials.take(key);
        }
        Ok(made)
    }

    /// The origin's answer to `load`: at most two requests, the second,
    /// unconditional, when a 304's validator contradicts the stored response's
    /// (RFC 9111 §4.3.4; a 304 without one validates it).
    /// A server error that does not say how long it may be stored goes to
    /// the load's own caller and fails the load.
    async fn ask_origin(
        &self,
        load: &Load<'_>,
        conditions: Conditions,
    ) -> Result<Answer, OriginError> {
        let mut base = load.forward.to_send();
        for name in &CLIENT_CONDITIONALS {
            base.remove(name);
        }
        // A ranged request loads the whole object: ranges are cut from it.
        base.remove(header::RANGE);
        let (on_stored, client) = match conditions {
            Conditions::Shared => (true, None),
            // Only a load its caller alone consumes carries the caller's tags.
            Conditions::Alone { stored } => (
                stored,
                load.forward
                    .headers
                    .get(header::IF_NONE_MATCH)
                    .and_then(revalidate::client_tags),
            ),
        };
        let stale = self
            .cache
            .peek(&load.key.to_string())
            .filter(|e| on_stored && e.value().uncacheable.is_none());
        let mut with_validators = stale.is_some() || client.is_some();
        // With no stored response to validate, a kept prefix of its variant is
        // completed (RFC 9111 §3.4): taken out whatever the origin answers,
        // so one load asks for the rest once at most. Not with the caller's
        // own tags: a 304 to them would leave the prefix without its rest.
        let mut rest = match (&stale, on_stored, &client) {
            (None, true, None) => self.partials.take(load.key).filter(|p| {
                vary_matches(&p.value, load.forward) && p.complete <= load.max_object_bytes as u64
            }),
            _ => None,
        };
        loop {
            let mut headers = base.clone();
            let mut conditional = false;
            // The stored fields the request was conditional on, when the caller's tags went with them.
            let mut merged: Option<Option<HeaderMap>> = None;
            if with_validators {
                let stored = stale.as_ref().map(|s| s.value().header_map());
                let validators = stored
                    .as_ref()
                    .map(revalidate::conditional_headers)
                    .unwrap_or_default();
                match &client {
                    Some(tags) => {
                        // Merged onto the stored tag only: a 304 to a date and
                        // tags could not say whose it is.
                        let stored_tag = validators.get(header::IF_NONE_MATCH);
                        if let Some(inm) = revalidate::merged_if_none_match(stored_tag, tags) {
                            headers.insert(header::IF_NONE_MATCH, inm);
                            conditional = stored_tag.is_some();
                            merged = Some(stored.filter(|_| conditional));
                        }
                    }
                    None => {
                        conditional = !validators.is_empty();
                        headers.extend(validators);
                    }
                }
            }
            let completing = rest.take();
            if let Some(p) = &completing {
                headers.extend(partial::rest_request(&p.value.header_map(), p.kept()));
            }
            self.stats.origin_requests.inc();
            let started = Instant::now();
            let response = self
                .origin
                .send(
                    Method::GET,
                    load.forward.target.as_str(),
                    headers,
                    Body::empty(),
                    load.forward.interim.as_ref(),
                )
                .await
                .inspect_err(|e| self.stats.origin_error(e.kind()))?;
            let status = response.status;
            if matches!(status.as_u16(), 500 | 502 | 503 | 504) && !load.may_store_error(&response)
            {
                self.stats.origin_error("server_error");
                load.handoff.put(self.pass(response));
                return Err(OriginError::ServerError(status));
            }
            if let Some(p) = completing {
                if matches!(
                    status,
                    StatusCode::PARTIAL_CONTENT | StatusCode::RANGE_NOT_SATISFIABLE
                ) {
                    match self.completed(load, &p, response, started).await? {
                        Some(made) => return Ok(Answer::Made(made)),
                        // Not joined: the whole answer, asked for unconditionally.
                        None => continue,
                    }
                }
                // Anything else (a 200 above all) is a whole answer and replaces it.
            }
            if let (Some(asked), Some(tags), StatusCode::NOT_MODIFIED) = (&merged, &client, status)
            {
                match revalidate::selected_by(&response.headers, asked.as_ref(), tags) {
                    SelectedBy::Client => return Ok(Answer::ForCaller(response)),
                    SelectedBy::Stored => {
                        if let Some(made) = stale
                            .as_ref()
                            .and_then(|s| load.revalidated(s.value(), &response))
                        {
                            return Ok(Answer::Made(made));
                        }
                    }
                    SelectedBy::Unknown => {}
                }
                // Whose it is is unclear: asked again, without validators.
                with_validators = false;
                continue;
            }
            match (&stale, status, conditional) {
                (Some(s), StatusCode::NOT_MODIFIED, true) => {
                    match load.revalidated(s.value(), &response) {
                        Some(made) => return Ok(Answer::Made(made)),
                        None => with_validators = false,
                    }
                }
                _ => {
                    return Ok(Answer::Full {
                        response,
                        conditional,
                        started,
                    })
                }
            }
        }
    }

    /// A full answer stored (read whole, at most the object limit) when the
    /// rules allow; otherwise streamed to the load's own caller, the core
    /// getting a marker (hit-for-miss).
    pub(crate) async fn store_or_pass(
        &self,
        load: &Load<'_>,
        response: OriginResponse,
        conditional: bool,
        started: Instant,
    ) -> Result<Made, OriginError> {
        let status = response.status;
        let times = (response.request_time, response.response_time);
        let fetch = if conditional {
            Fetch::Replaced
        } else {
            Fetch::Miss
        };
        let mut stored_headers = response.headers.clone();
        if let Some(reason) = load.refusal(&response, &mut stored_headers) {
            load.handoff.put(self.pass(response));
            return Ok(Made::passed(status, reason, fetch));
        }
        let limit = self.origin.timeout();
        let passed_headers = response.headers;
        match read_up_to(response.body, load.max_object_bytes, started + limit, limit).await {
            Buffered::Whole(body) => Ok(load.to_made(status, stored_headers, body, fetch, times)),
            Buffered::Broken(prefix, error) => {
                let received = (status, &passed_headers);
                self.keep_prefix(load, received, stored_headers, prefix, (times, started));
                Err(error)
            }
            Buffered::TooLarge(prefix, rest) => {
                let mut headers = passed_headers;
                tags::take(&mut headers);
                load.handoff.put(Passed {
                    status,
                    headers,
                    body: Body::stream(Inactivity::new(
                        Prefixed::new(prefix, rest),
                        limit,
                        "origin body",
                    )),
                });
                Ok(Made::passed(status, "too-large", fetch))
            }
        }
    }

    /// Keeps the `prefix` of a storable answer (fields `stored`, as prepared
    /// for storage; its status and fields as they came in `received`) whose body broke off, marked
    /// incomplete, when the rules allow (RFC 9111 §3.3, `partial::keepable`;
    /// none carrying surrogate keys: see `handle::partial`).
    fn keep_prefix(
        &self,
        load: &Load<'_>,
        (status, received): (StatusCode, &HeaderMap),
        stored: HeaderMap,
        prefix: bytes::Bytes,
        (times, sent): ((std::time::SystemTime, std::time::SystemTime), Instant),
    ) {
        let Some(complete) = partial::keepable(status, received, prefix.len() as u64) else {
            return;
        };
        let made = load.to_made(status, stored, prefix, Fetch::Miss, times);
        if made.storable() && made.tags.is_empty() {
            let value = made.value;
            self.partials
                .put(load.key, Partial { value, complete }, sent);
        }
    }

    /// The answer a kept prefix `kept` and the origin's answer `response`
    /// (`206` or `416`) to its rest make together (RFC 9111 §3.4): the whole
    /// answer, when the `206` continues the prefix (`partial::continues`) and
    /// its bytes complete it exactly; `None` when they are not joined.
    async fn completed(
        &self,
        load: &Load<'_>,
        kept: &Partial,
        response: OriginResponse,
        started: Instant,
    ) -> Result<Option<Made>, OriginError> {
        let stored = kept.value.header_map();
        let Some(first) = partial::continues(
            &stored,
            (kept.kept(), kept.complete),
            response.status,
            &response.headers,
        ) else {
            return Ok(None);
        };
        let limit = self.origin.timeout();
        // At most the bytes the range holds: a longer body is not joined.
        let want = usize::try_from(kept.complete - first).unwrap_or(usize::MAX);
        let part = match read_up_to(response.body, want, started + limit, limit).await {
            Buffered::Whole(part) => part,
            Buffered::TooLarge(..) => return Ok(None),
            Buffered::Broken(_, error) => return Err(error),
        };
        let Some(body) = partial::combine(&kept.value.body, first, &part, kept.complete) else {
            return Ok(None);
        };
        let headers = partial::combined_headers(&stored, &response.headers);
        let times = (response.request_time, response.response_time);
        Ok(Some(load.to_made(
            StatusCode::OK,
            headers,
            body,
            Fetch::Miss,
            times,
        )))
    }

    /// `made` as the core's value, its surrogate keys indexed first (here and
    /// in the fleet's sets), so a purge that follows the store finds them.
    pub(crate) async fn indexed(&self, key: &str, made: Made) -> Loaded<CachedResponse> {
        if let Some(keep) = made.keep() {
            self.index_tags(key, &made.tags, Some(keep)).await;
        }
        made.into_loaded()
    }
}

/// One load: what it is for, and the settings it reads (as in force when it began).
pub(crate) struct Load<'a> {
    key: &'a str,
    forward: &'a Forward,
    handoff: &'a Handoff,
    rules: &'a rules::Rules,
    /// The `[[rule]]` of the path, if one matches.
    rule: Option<&'a PathRule>,
    /// The largest answer stored; larger ones stream to their own caller.
    max_object_bytes: usize,
    /// The request fields storability depends on: its `Authorization`, if any
    /// (RFC 9111 §3.5). Its cache directives never count: a request that says
    /// `no-store` leads no load.
    judged_with: HeaderMap,
}

/// How a load may be conditional.
#[derive(Clone, Copy)]
enum Conditions {
    /// A load its waiters share: on the stored response's validators only
    /// (a client's own are answered by the proxy from the whole response).
    Shared,
    /// A load for one caller: on its own entity tags, merged with the stored
    /// response's when `stored` (RFC 9111 §4.3.2).
    Alone { stored: bool },
}

/// What the origin answered a load.
enum Answer {
    /// A 304 that validated the stored response: that response, its fields
    /// updated; or a kept prefix completed by a `206`.
    Made(Made),
    /// A 304 that selects only the caller's own entity tag: for it alone.
    ForCaller(OriginResponse),
    /// A whole answer (the body still to read); `conditional` when it replaces
    /// a stored response.
    Full {
        response: OriginResponse,
        conditional: bool,
        started: Instant,
    },
}

impl<'a> Load<'a> {
    /// A load of `key` for `forward`, under `tuning`.
    pub(crate) fn new(
        key: &'a str,
        forward: &'a Forward,
        handoff: &'a Handoff,
        tuning: &'a Tuning,
    ) -> Self {
        let rule = tuning.paths.for_path(forward.target.path());
        let mut judged_with = HeaderMap::new();
        if let Some(credentials) = forward.headers.get(header::AUTHORIZATION) {
            judged_with.insert(header::AUTHORIZATION, credentials.clone());
        }
        Load {
            key,
            forward,
            handoff,
            rules: &tuning.rules,
            rule,
            max_object_bytes: rule
                .and_then(|r| r.max_object_bytes)
                .unwrap_or(tuning.options.max_object_bytes),
            judged_with,
        }
    }

    /// Whether the answer to a `POST` of `target` (this load's) says it is
    /// the current answer to a `GET` of it, as the path's rule lets it be read.
    pub(crate) fn post_answer_reusable(
        &self,
        response: &OriginResponse,
        target: &herdguard_http::EffectiveUri,
    ) -> bool {
        let config = &self.rules.config;
        let consulted = rules::overrides(self.rule).consulted(&response.headers, config);
        herdguard_http::storable::post_answer_reusable(response.status, target, &consulted, config)
    }

    /// Whether a server error may be stored: only when it says for how long.
    fn may_store_error(&self, response: &OriginResponse) -> bool {
        let config = &self.rules.config;
        let consulted = rules::overrides(self.rule).consulted(&response.headers, config);
        ResponsePolicy::from_headers(&consulted, config).has_explicit_expiration(&consulted)
    }

    /// The stored response `stored`, its fields updated from the 304 `response`
    /// (RFC 9111 §4.3.4); `None` when the 304's validator contradicts it.
    fn revalidated(&self, stored: &CachedResponse, response: &OriginResponse) -> Option<Made> {
        let stored_headers = stored.header_map();
        if !revalidate::validates(&response.headers, &stored_headers) {
            return None;
        }
        let mut merged = stored_headers;
        merged.remove(header::CONTENT_LENGTH);
        // The stored tags stand unless the 304 gives new ones.
        if !stored.tags.is_empty() {
            if let Ok(kept) = stored.tags.join(" ").parse() {
                merged.insert(tags::SURROGATE_KEY.clone(), kept);
            }
        }
        revalidate::update_stored_headers(&mut merged, &response.headers);
        Some(self.to_made(
            stored.status(),
            merged,
            stored.body.clone(),
            Fetch::Revalidated,
            (response.request_time, response.response_time),
        ))
    }

    /// Why a full answer is not stored: the rules refuse it, or it announces
    /// more than the object limit; `stored` is made ready for storage.
    fn refusal(&self, response: &OriginResponse, stored: &mut HeaderMap) -> Option<&'static str> {
        let verdict = rules::evaluate(
            self.rules,
            self.rule,
            &self.judged_with,
            response.status,
            stored,
            (response.request_time, response.response_time),
        );
        let announced = response
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match verdict {
            Err(reason) => Some(reason),
            Ok(_) if announced.is_some_and(|n| n > self.max_object_bytes as u64) => {
                Some("too-large")
            }
            Ok(_) => None,
        }
    }

    /// A whole answer as a value, with its freshness and surrogate keys when
    /// it may be stored.
    fn to_made(
        &self,
        status: StatusCode,
        mut headers: HeaderMap,
        body: bytes::Bytes,
        fetch: Fetch,
        times: (std::time::SystemTime, std::time::SystemTime),
    ) -> Made {
        let verdict = rules::evaluate(
            self.rules,
            self.rule,
            &self.judged_with,
            status,
            &mut headers,
            times,
        );
        let tags = tags::take(&mut headers);
        let mut value = CachedResponse::from_origin(
            status,
            headers,
            body,
            times,
            &self.forward.headers,
            fetch,
            verdict.as_ref().map_err(|reason| *reason),
        );
        match verdict {
            Ok(f) => {
                value.tags = tags.clone();
                Made {
                    value,
                    freshness: Some(f),
                    tags,
                }
            }
            // A 304 may have made a stored response unstorable (e.g. it now says no-store).
            Err(_) => Made {
                value,
                freshness: None,
                tags: Vec::new(),
            },
        }
    }
}
