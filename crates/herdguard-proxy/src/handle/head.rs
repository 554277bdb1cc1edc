//! A `HEAD` forwarded as `HEAD` (a request that passes the cache) still says
//! something about the stored `GET` answer of its key (RFC 9111 §4.3.5): a
//! `200` whose validators or `Content-Length` contradict that answer takes it
//! out of the cache ([`herdguard_http::revalidate::head_verdict`]).
//!
//! A `HEAD` the cache handles itself never gets here: a hit is answered from
//! the stored `GET` answer, and a miss or a stale answer loads the `GET`
//! (conditional when it can), which both serves the `HEAD` and refreshes the
//! stored answer — what §4.3.5 approximates. The `HEAD`s that do reach the
//! origin as `HEAD` are those of requests that said `no-store` (nothing of
//! their answer may be stored, §5.2.1.5, so a confirming answer updates
//! nothing) and the rare ones passed after a change of `Vary`.
//!
//! A `HEAD` with `Authorization` never removes anything: its answer may be
//! the one for those credentials, which an origin need not mark with `Vary`
//! (RFC 9111 §3.5), and a client must not evict what everyone else is served.
//!
//! Out of date means removed: the next `GET` loads it anew, here and — with a
//! shared store — on every instance (the core deletes it from Redis and its
//! change notice evicts every copy). A conditional `GET` would gain nothing:
//! the origin has just said its current answer has other validators, so it
//! would send the whole answer anyway.

use herdguard_http::revalidate::{self, HeadVerdict};

use super::proxy::Proxy;
use super::request::Forward;
use crate::origin::OriginResponse;

impl Proxy {
    /// RFC 9111 §4.3.5 for the origin's answer `response` to a `HEAD` of
    /// `forward`, whose stored `GET` answer would be under `key`.
    pub(crate) async fn head_answered(
        &self,
        key: &str,
        forward: &Forward,
        response: &OriginResponse,
    ) {
        // With credentials the origin may answer another representation than
        // the shared one without saying `Vary: Authorization` (§3.5): it says
        // nothing of the stored answer.
        if response.status != http::StatusCode::OK || forward.present.authorization {
            return;
        }
        let Some(entry) = self.cache.peek(&key.to_string()) else {
            return;
        };
        let stored = entry.value();
        // Only the stored answer this request could have been given (§4.1).
        if !self.may_have(stored, forward, false)
            || revalidate::head_verdict(&response.headers, &stored.header_map())
                != HeadVerdict::Contradicts
        {
            return;
        }
        // A shared-store failure is counted by the core; the local entry is gone regardless.
        self.partials.fence(key);
        let _ = self.cache.invalidate(&key.to_string()).await;
        self.stats.invalidations.inc();
    }
}
