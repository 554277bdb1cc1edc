//! A request whose own variant has no stored answer may be given another
//! stored variant it accepts by q-value (RFC 9111 §4.1's MAY; the rule and its
//! bounds are `herdguard_http::negotiate` and `Variants::negotiate`).

use std::sync::Arc;
use std::time::SystemTime;

use herdguard::{Clock, Entry, Served, SystemClock};
use herdguard_http::RequestDirectives;
use http::Response;

use super::answer;
use super::proxy::Proxy;
use super::request::Forward;
use super::response::CachedResponse;
use crate::body::Body;

impl Proxy {
    /// The answer from another fresh stored variant of `primary` that `forward`
    /// accepts — and whose age meets its `max-age` / `min-fresh` — when its own
    /// (`key`) has nothing stored; `None` to go on as usual.
    pub(crate) fn negotiated(
        &self,
        primary: &str,
        key: &str,
        forward: &Forward,
        directives: &RequestDirectives,
        head: bool,
    ) -> Option<Response<Body>> {
        // Its own variant, stored (even stale: revalidated or served stale as
        // usual), is never passed over.
        if self.cache.peek(&key.to_string()).is_some() {
            return None;
        }
        let now = SystemClock.now();
        let tuning = self.tuning();
        let config = &tuning.rules.config;
        let entry: Arc<Entry<CachedResponse>> = self.variants.negotiate(
            primary,
            key,
            forward,
            |candidate| {
                self.cache.peek(&candidate.to_string()).filter(|e| {
                    e.is_fresh(now)
                        && !e
                            .value()
                            .falls_short_of(config, directives, SystemTime::now())
                })
            },
            |e| e.value(),
        )?;
        Some(answer::stored(
            &self.stats,
            config,
            entry.value(),
            Served::Hit,
            entry.time_to_live(now),
            false,
            head,
        ))
    }
}
