//! The request path, from a client request to its answer: the request made
//! into the one forwarded, its key, the cache's answer or one coalesced load,
//! and the answer with its `Cache-Status`.
//!
//! # Layout
//!
//! - `request`: a client request made into the request forwarded — hop-by-hop
//!   fields removed first, framing checked, target normalised, forwarding fields set.
//! - `handler`: what the cache answers, what passes through alone,
//!   invalidation after unsafe methods.
//! - `loader`: the one origin request of a load; unshareable answers go to their
//!   own caller only.
//! - `range`: a `Range` request answered 206 from the whole stored response.
//! - `head`: a `HEAD` forwarded as `HEAD` removes the stored `GET` answer it
//!   contradicts (RFC 9111 §4.3.5).
//! - `negotiate`: another stored variant a request accepts by q-value, when
//!   its own has none (`Vary: Accept-Encoding` / `Accept-Language`).
//! - `partial`: the prefixes of incomplete answers (RFC 9111 §3.3), kept in
//!   this process; a range within one is answered from it, a load completes it.
//! - `answer`: every outcome mapped to a response, its `Cache-Status` and its count.
//! - `access`: the access log (`--access-log`), one `tracing` event per request.
//! - `proxy`: the state all of them share — cache, origin client, the tuning a
//!   reload may replace — and the cache's upkeep (invalidation, purges, tags).
//! - `rules`: the storage policy (`herdguard-http`'s) under a path's `[[rule]]`.
//! - `path_rules`: the `[[rule]]` tables, matched on the normalised path.
//! - `tags`: surrogate keys, read from answers and indexed for purges.
//!
//! `herdguard-http` owns the RFC 9111 / 5861 / 9213 / 9211 rules, keys,
//! targets, invalidation, the cached value (`response`, serde so the fleet can
//! share it) and the `Vary` registry (`variants`): the tower layer uses the same.

pub(crate) mod access;
pub(crate) mod answer;
mod handler;
mod head;
pub(crate) use handler::{Begun, Pending};
pub(crate) mod loader;
mod negotiate;
pub(crate) mod partial;
pub(crate) mod path_rules;
pub(crate) mod proxy;
pub(crate) mod range;
pub(crate) mod request;
pub(crate) use herdguard_http::response;
pub(crate) mod rules;
pub(crate) mod tags;
pub(crate) use herdguard_http::variants;

/// The secondary key of a forwarded request is read from what the origin receives.
impl variants::VaryView for request::Forward {
    fn vary_view(&self, vary: &herdguard_http::Vary) -> std::borrow::Cow<'_, http::HeaderMap> {
        request::Forward::vary_view(self, vary)
    }
}
