//! `herdguard serve`: an HTTP/1.1 caching reverse proxy (a sidecar in front of an
//! API) that behaves as an RFC 9111 shared cache and makes every miss and every
//! revalidation of a URL one origin request — in one process, and across a fleet
//! of proxies sharing a Redis.
//!
//! ```no_run
//! # async fn demo() -> Result<(), herdguard_proxy::ServeError> {
//! use herdguard_proxy::{run, ServeArgs};
//! run(ServeArgs {
//!     listen: Some("127.0.0.1:8080".into()),
//!     origin: Some("http://127.0.0.1:9000".into()),
//!     admin: Some("127.0.0.1:9090".into()),
//!     ..ServeArgs::default()
//! })
//! .await
//! # }
//! ```
//!
//! # Layout
//!
//! - [`config`](ServeArgs): flags, env vars, TOML file → validated [`Settings`].
//! - [`server`](Server): listeners, connection limits, graceful shutdown, [`run`].
//! - `proxy`: the handler — cacheable or not, one coalesced load per miss or
//!   revalidation, `Vary`, conditional requests, invalidation after unsafe methods.
//! - `rules`: the proxy's storage policy on top of `herdguard-http` (which owns
//!   the RFC 9111 / 5861 / 9213 rules: storability, freshness, age, targeted fields).
//! - [`response`](CachedResponse): the cached value (serde, so the fleet can share it).
//! - [`origin`](Origin): pooled origin client, timeouts, body limit, typed failures.
//! - [`cache_status`](CacheStatus): the RFC 9211 `Cache-Status` field.
//! - [`stats`](Stats): counters and the Prometheus exposition; `admin`: its listener.
//! - `fleet`: the Redis tier (`--redis`).

#![warn(missing_docs)]

mod admin;
mod cache_status;
mod config;
mod fleet;
mod origin;
mod proxy;
mod response;
mod rules;
mod server;
mod stats;

pub use cache_status::{CacheStatus, CACHE_STATUS};
pub use config::{ConfigError, ServeArgs, Settings};
pub use origin::{Fetched, Origin, OriginError};
pub use proxy::{Body, Proxy};
pub use response::{CachedResponse, Fetch};
pub use server::{run, shutdown_signal, ServeError, Server};
pub use stats::{Count, Stats, ORIGIN_ERRORS, RESULTS};
