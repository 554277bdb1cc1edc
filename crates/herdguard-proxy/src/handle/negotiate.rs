//! A request whose own variant has no stored answer may be given another
//! stored variant it accepts by q-value (RFC 9111 §4.1's MAY; the rule is
//! `herdguard_http::negotiate::stored_variant`, shared with the tower layer).

use herdguard_http::negotiate::stored_variant;
use herdguard_http::RequestDirectives;
use http::Response;

use super::answer;
use super::proxy::Proxy;
use super::request::Forward;
use crate::body::Body;

impl Proxy {
    /// The answer from another stored variant of `primary` that `forward`
    /// accepts, when its own (`key`) has nothing stored; `None` to go on as usual.
    pub(crate) fn negotiated(
        &self,
        primary: &str,
        key: &str,
        forward: &Forward,
        directives: &RequestDirectives,
        head: bool,
    ) -> Option<Response<Body>> {
        let tuning = self.tuning();
        let config = &tuning.rules.config;
        let chosen = stored_variant(
            &self.cache,
            &self.variants,
            (primary, key),
            forward,
            config,
            directives,
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
