//! The proxy's own counters: how requests were answered, origin requests and
//! failures, invalidations, purges and connections. Bumped on the request path
//! (relaxed atomics), read by `/metrics` and the dashboard.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// How requests were answered (the labels of `herdguard_proxy_requests_total`).
pub const RESULTS: [&str; 6] = ["hit", "stale", "miss", "coalesced", "bypass", "error"];
/// Kinds of origin failure (the labels of `herdguard_proxy_origin_errors_total`).
pub const ORIGIN_ERRORS: [&str; 5] = ["timeout", "failed", "tls", "server_error", "client_body"];

/// A plain counter.
#[derive(Default, Debug)]
pub struct Count(AtomicU64);

impl Count {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// The count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A gauge of what is open now (client connections, origin requests).
#[derive(Default, Debug)]
pub struct Connections(AtomicI64);

impl Connections {
    /// One more.
    pub fn open(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// One fewer.
    pub fn close(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    /// Sets it to `n`.
    pub fn set(&self, n: u64) {
        self.0
            .store(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Relaxed);
    }
    /// Open now.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters of one proxy.
#[derive(Default, Debug)]
pub struct Stats {
    results: [Count; 6],
    origin_errors: [Count; ORIGIN_ERRORS.len()],
    /// Requests sent to the origin.
    pub origin_requests: Count,
    /// Origin requests in flight now (each holds an origin slot).
    pub origin_in_flight: Connections,
    /// Requests refused for want of an origin slot (`max_origin_requests`).
    pub origin_refused: Count,
    /// Bytes the surrogate-key index holds (its share of `max_memory`).
    pub tag_index_bytes: Connections,
    /// URLs invalidated after unsafe methods.
    pub invalidations: Count,
    /// Purges applied here (asked on this instance or any of the fleet).
    pub purges: Count,
    /// Client connections open now.
    pub connections: Connections,
    /// TLS handshakes with clients that failed (or timed out).
    pub tls_handshake_failures: Count,
}

impl Stats {
    /// Counts one answer under `label` (one of [`RESULTS`]).
    pub fn count(&self, label: &str) {
        if let Some(i) = RESULTS.iter().position(|r| *r == label) {
            self.results[i].inc();
        }
    }

    /// Counts one origin failure of `kind` (one of [`ORIGIN_ERRORS`]).
    pub fn origin_error(&self, kind: &str) {
        if let Some(i) = ORIGIN_ERRORS.iter().position(|r| *r == kind) {
            self.origin_errors[i].inc();
        }
    }

    /// Answers counted under `label`.
    pub fn answered(&self, label: &str) -> u64 {
        RESULTS
            .iter()
            .position(|r| *r == label)
            .map(|i| self.results[i].get())
            .unwrap_or(0)
    }

    /// Answers counted under each of [`RESULTS`], in that order.
    pub fn results(&self) -> [u64; RESULTS.len()] {
        std::array::from_fn(|i| self.results[i].get())
    }

    /// Origin failures counted under each of [`ORIGIN_ERRORS`], in that order.
    pub fn origin_errors(&self) -> [u64; ORIGIN_ERRORS.len()] {
        std::array::from_fn(|i| self.origin_errors[i].get())
    }
}
