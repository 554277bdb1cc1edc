//! A request whose own variant has no fresh stored answer may be given another
//! stored variant it accepts by q-value (RFC 9111 §4.1's MAY; the rule and its
//! bounds are `herdguard_http::negotiate` and `Variants::negotiate`).

use std::sync::Arc;

use herdguard::{Clock, Entry, Served, SystemClock};
use http::Response;

use super::answer;
use super::proxy::Proxy;
use super::request::Forward;
use super::response::CachedResponse;
use crate::body::Body;

impl Proxy {
    /// The answer from another fresh stored variant of `primary` that `forward`
    /// accepts, when its own (`key`) has none; `None` to load as usual.
    pub(crate) fn negotiated(
        &self,
        primary: &str,
        key: &str,
        forward: &Forward,
        head: bool,
    ) -> Option<Response<Body>> {
        let now = SystemClock.now();
        let entry: Arc<Entry<CachedResponse>> = self.variants.negotiate(
            primary,
            key,
            forward,
            |candidate| {
                self.cache
                    .peek(&candidate.to_string())
                    .filter(|e| e.is_fresh(now))
            },
            |e| e.value(),
        )?;
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
}
