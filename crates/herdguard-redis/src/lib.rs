//! herdguard-redis: the Redis shared tier of [herdguard], so a whole fleet makes
//! one origin call per key and every waiting process wakes the moment the value
//! is stored.
//!
//! [`RedisRemote`] implements [`herdguard::Remote`]: entries live in Redis in a
//! compact versioned envelope, the right to load a key is a lease
//! (`SET NX PX` with a unique token, renewed and released by compare-and-set
//! scripts), and the write of a load is fenced on the key's version — which
//! every lease grant, write and invalidation advances — so a holder whose lease
//! lapsed, an invalidation or a newer write anywhere voids a load in flight.
//! Redis tells each process of the next change of every key it read (its
//! client tracking): waiters wake, and the processes that hold a copy evict
//! it — only they, whatever the size of the fleet. Where Redis refuses
//! tracking, every change is announced on one channel per prefix instead.
//!
//! ```no_run
//! use herdguard::Cache;
//! use herdguard_redis::{RedisConfig, RedisRemote};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let remote = RedisRemote::<String, String>::connect(RedisConfig::new("redis://127.0.0.1:6379/")).await?;
//! let cache: Cache<String, String> = Cache::builder().shared_store(remote).build()?;
//! let v = cache
//!     .get_or_load("k".to_string(), || async { Ok::<_, std::io::Error>("v".to_string()) })
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - [`config`](RedisConfig): settings and setup errors.
//! - `remote`: [`RedisRemote`], each `Remote` method as one bounded Redis call
//!   (with quorum leases, one per lock server too, in parallel).
//! - `conn`: where the data store is — one server, or the primary Redis
//!   Sentinel names (`redis+sentinel://…`), followed across a failover.
//! - `scripts`: the Lua scripts (lease, renew, release, fenced write, invalidate).
//! - `feed`: the change feed — wakes local watchers and tells the caches what
//!   changed; per key (`tracking`: Redis's client tracking, one connection per
//!   node, pinged, reconnected) or broadcast (one pub/sub connection).
//! - `envelope`: the stored bytes of an entry (format byte, version, header,
//!   value) and of a marker.
//! - `quorum`: quorum leases (Redlock) over independent lock servers, when
//!   configured ([`RedisConfig::lease_quorum`]), and their counters ([`QuorumStats`]).
//! - `keys`: every Redis key name — a cache key's (under one Redis Cluster hash
//!   tag), a surrogate key's set, the instance records, the write queue's, and
//!   the channels — and what a surrogate key may be ([`valid_tag`]).
//! - `queue`: [`RedisWriteQueue`], the durable write-behind queue (Redis
//!   Streams, a consumer group, partitions owned one process at a time).
//!
//! The `herdguard-redis-worker`, `-chaos` and `-writer` binaries are test and
//! benchmark helpers (one process of a fleet, of the fault test, of
//! write-behind), built only with the `test-helpers` feature.

#![warn(missing_docs)]

mod config;
mod conn;
mod envelope;
mod feed;
mod keys;
mod queue;
mod quorum;
mod remote;
mod scripts;
mod tracking;

pub use config::{redact_url, RedisConfig, RedisSetupError};
pub use keys::{valid_tag, MAX_TAG_BYTES};
pub use queue::{QueueConfig, RedisWriteQueue, MAX_DEAD_LETTERS, MAX_WRITTEN_KEYS};
pub use quorum::QuorumStats;
pub use remote::{RedisRemote, EXISTS_BATCH, MAX_INSTANCES, MAX_TAGGED_KEYS};
