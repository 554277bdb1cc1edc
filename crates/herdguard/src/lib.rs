//! herdguard: a read-through cache that makes a stampede one origin call.
//!
//! When a hot key is missing or expires, every concurrent caller of a naive cache
//! calls the slow origin at once (a *cache stampede*). [`Cache::get_or_load`] makes
//! that one call per key — in one process, and across a fleet with a shared store —
//! hands the value to every waiting caller the moment it exists, refreshes hot keys
//! before they expire (X-Fetch, stale-while-revalidate), serves stale values when
//! the origin fails, and keeps working when the shared store fails.
//!
//! ```
//! use herdguard::{Cache, Served};
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cache: Cache<String, String> = Cache::builder()
//!     .ttl(Duration::from_secs(60))
//!     .build()?;
//! let origin_calls = Arc::new(AtomicUsize::new(0));
//!
//! // 100 concurrent callers of one cold key...
//! let callers: Vec<_> = (0..100)
//!     .map(|_| {
//!         let (cache, calls) = (cache.clone(), origin_calls.clone());
//!         tokio::spawn(async move {
//!             cache
//!                 .get_or_load("weather:oslo".to_string(), move || async move {
//!                     calls.fetch_add(1, Ordering::SeqCst);
//!                     tokio::time::sleep(Duration::from_millis(50)).await; // slow origin
//!                     Ok::<_, std::io::Error>("-3 °C, snow".to_string())
//!                 })
//!                 .await
//!         })
//!     })
//!     .collect();
//! for caller in callers {
//!     assert_eq!(*caller.await??, "-3 °C, snow");
//! }
//! // ...made one origin call.
//! assert_eq!(origin_calls.load(Ordering::SeqCst), 1);
//!
//! // The next call is a hit, and says so.
//! let value = cache
//!     .get_or_load("weather:oslo".to_string(), || async { Ok::<_, std::io::Error>(String::new()) })
//!     .await?;
//! assert_eq!(value.served(), Served::Hit);
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - [`cache`](Cache): the hit path, the miss path, background refresh,
//!   invalidation — the public face.
//! - [`builder`](CacheBuilder): every knob, validated at `build()`.
//! - `flight`: the single-flight table — one load per key, waiters woken at once,
//!   nothing left behind; invalidations detach the running load.
//! - `load`: what a leader does — its task, the origin call under `load_timeout`,
//!   and the end of the flight (what is kept, who is woken, what comes after).
//! - `fleet`: the shared-store protocol — L2, lease, fenced write, markers.
//! - `health`: degraded or not, the background probe, the change feed's epoch.
//! - [`policy`](Policy): TTL and jitter, X-Fetch, stale windows, per-call overrides.
//! - [`breaker`](BreakerConfig): the circuit breaker around the loader.
//! - [`entry`](Entry), [`served`](Served): a value's times, and how a call was served.
//! - [`store`](Store): the in-process tier and its bounded default, [`MemoryStore`].
//! - [`remote`](Remote): the fleet seam — shared tier and lease (see `herdguard-redis`).
//! - [`write`](Writer): write-through and write-behind — the writer seam, the
//!   queue seam and its in-process default, the drainer.
//! - [`metrics`](MetricsSnapshot), [`clock`](Clock), [`error`](Error).
//! - `events`: the log events' targets, key hash and rate limit (`tracing`).
//!
//! Loads run as Tokio tasks, so a Tokio runtime is required.

#![warn(missing_docs)]

mod breaker;
mod builder;
mod cache;
mod clock;
mod entry;
mod error;
mod events;
mod fleet;
mod flight;
mod health;
mod load;
mod metrics;
mod policy;
mod remote;
mod served;
mod store;
mod sync;
mod write;

pub use breaker::{BreakerConfig, BreakerState, BreakerStats};
pub use builder::CacheBuilder;
pub use cache::{BoxError, Cache};
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use entry::{Entry, EntryMeta, LOCAL_VERSIONS};
pub use error::{ConfigError, Error, FleetLoadFailed, RemoteError, SharedError};
pub use events::key_hash;
pub use metrics::{HistogramSnapshot, MetricsSnapshot};
pub use policy::{CallOptions, Loaded, Policy};
pub use remote::{
    AtGrant, BoxFuture, ChangeListener, Lease, Marker, Notified, PutOutcome, QueuedPutError,
    Remote, Shared,
};
pub use served::{Cached, Served};
pub use store::{MemoryStore, Store};
pub use write::{
    MemoryWriteQueue, QueueError, QueueId, Queued, WhenFull, Write, WriteBehind, WriteError,
    WriteQueue, Writer,
};
