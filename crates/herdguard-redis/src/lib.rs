//! herdguard-redis: the Redis shared tier of [herdguard], so a whole fleet makes
//! one origin call per key and every waiting process wakes the moment the value
//! is stored.
//!
//! [`RedisRemote`] implements [`herdguard::Remote`]: entries live in Redis in a
//! compact versioned envelope, the right to load a key is a lease
//! (`SET NX PX` with a unique token, renewed and released by compare-and-set
//! scripts), and the write of a load is fenced on the key's version, so an
//! invalidation or a newer write anywhere voids a load in flight. Waiters wake
//! through one pub/sub connection per remote.
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
//! - `remote`: [`RedisRemote`], each `Remote` method as one bounded Redis call.
//! - `scripts`: the Lua scripts (lease, renew, release, fenced write, invalidate).
//! - `notify`: the pub/sub hub — one connection, ref-counted channels, resubscribe on reconnect.
//! - `envelope`: the stored bytes of an entry (format byte, header, value).
//! - `keys`: key and channel names under one Redis Cluster hash tag.
//!
//! The `herdguard-redis-worker` binary is a test and benchmark helper: one
//! process of a fleet (see `tests/fleet.rs`).

#![warn(missing_docs)]

mod config;
mod envelope;
mod keys;
mod notify;
mod remote;
mod scripts;

pub use config::{RedisConfig, RedisSetupError};
pub use remote::RedisRemote;
