//! Errors, grouped so callers can match on the category: origin failure, timeout,
//! breaker, shared store, configuration.

use std::sync::Arc;
use std::time::Duration;

/// An error from the loader, shared by every caller that waited on the load.
pub type SharedError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Why a call to the cache returned no value.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The loader returned an error (shared by all callers of that load) and no
    /// stale value was allowed.
    #[error("origin failed: {0}")]
    Origin(#[source] SharedError),
    /// A load of this key failed moments ago and the failure is negatively cached:
    /// the origin was not called again.
    #[error("origin failed recently (negatively cached): {0}")]
    RecentlyFailed(#[source] SharedError),
    /// The loader panicked. Every waiter gets this; the next call loads again.
    #[error("the loader panicked")]
    LoaderPanicked,
    /// The load ended without a result (its task was cancelled, e.g. at runtime
    /// shutdown). The next call loads again.
    #[error("the load was abandoned before it produced a result")]
    LoadAbandoned,
    /// The caller's wait deadline passed. The load goes on for the other callers.
    #[error("timed out after {0:?} waiting for the value")]
    Timeout(Duration),
    /// The load ran past `load_timeout` and was cancelled (its lease given
    /// back). Every waiter of that load gets this; the next call loads again.
    #[error("the load ran past its limit of {0:?} and was cancelled")]
    LoadTimeout(Duration),
    /// The circuit breaker is open: no origin calls until it half-opens.
    #[error("circuit breaker open: origin calls are suspended")]
    CircuitOpen,
    /// The shared store failed and the cache was told to fail rather than degrade.
    #[error("shared store: {0}")]
    Remote(#[from] RemoteError),
    /// The per-call options are invalid.
    #[error("invalid call options: {0}")]
    InvalidOptions(#[from] ConfigError),
    /// `get_or_load` was called outside a Tokio runtime (loads run as Tokio tasks).
    #[error("herdguard needs a Tokio runtime to run loads")]
    NoRuntime,
}

/// The error waiting processes share when the process that held a key's lease
/// reports that its load failed (its text, as that process saw it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the fleet's load of this key failed: {0}")]
pub struct FleetLoadFailed(pub String);

/// A configuration value out of range, named by its field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A duration or count that must be positive was zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// The X-Fetch β must be a finite number > 0.
    #[error("early refresh beta must be a finite number > 0, got {0}")]
    Beta(f64),
    /// The TTL jitter fraction must be in [0, 1).
    #[error("ttl jitter must be in [0, 1), got {0}")]
    Jitter(f64),
    /// Any other invalid value.
    #[error("{field}: {reason}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// A failure of the shared (L2) store or fleet coordinator.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The store could not be reached or did not answer in time.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The value is larger than the store accepts; it is kept in process only.
    #[error("value of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// An entry could not be encoded or decoded (including a format-version
    /// mismatch, or bytes another program left under the key): this key only.
    #[error("codec: {0}")]
    Codec(String),
}
