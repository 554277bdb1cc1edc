//! A request whose own variant has no stored answer may be given another
//! stored variant it accepts by q-value (RFC 9111 §4.1's MAY; the rule and its
//! bounds are `herdguard_http::negotiate` and `Variants::negotiate`).

use std::time::SystemTime;

use herdguard::Cached;
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
        let tuning = self.tuning();
        let config = &tuning.rules.config;
        // Trusted as a hit is (`Cache::get`): fresh, and not one the fleet's
        // change feed could have missed a purge of.
        let chosen: Cached<CachedResponse> = self.variants.negotiate(
            primary,
            key,
            forward,
            |candidate| {
                self.cache
                    .get(&candidate.to_string())
                    .filter(|c| !c.falls_short_of(config, directives, SystemTime::now()))
            },
            |c| c.entry().value(),
        )?;
        Some(answer::entry(
            &self.stats,
            config,
            chosen.entry(),
            chosen.served(),
            head,
        ))
    }
}
