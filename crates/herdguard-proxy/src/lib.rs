//! `herdguard serve`: an HTTP/1.1 and HTTP/2 caching reverse proxy (a sidecar in front of an
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
//! - [`server`](Server): listeners, HTTP/1.1 and HTTP/2 (h2c or ALPN), the
//!   connection cap, graceful shutdown, [`run`].
//! - [`tls`](TlsConfig): the TLS proxy listener (`--tls-cert` / `--tls-key`).
//! - `limits`: per-connection head, idle and write timeouts on the socket itself.
//! - `request`: a client request made into the request forwarded — hop-by-hop
//!   fields removed first, framing checked, target normalised, forwarding fields set.
//! - `variants`: primary keys (`herdguard-http`'s `KeyConfig`) and `Vary` variant keys.
//! - `proxy`: the handler — what the cache answers, what passes through alone,
//!   invalidation after unsafe methods.
//! - `loader`: the one origin request of a load; unshareable answers go to their
//!   own caller only.
//! - `range`: a `Range` request answered 206 from the whole stored response.
//! - `answer`: every outcome mapped to a response, its `Cache-Status` and its count.
//! - [`body`](Body): the answer body, streamed bodies' time limits.
//! - `rules`: the proxy's storage policy on top of `herdguard-http` (which owns
//!   the RFC 9111 / 5861 / 9213 / 9211 rules, keys, targets, invalidation).
//! - [`path_rules`](PathRules): the `[[rule]]` tables — per-path TTL, bypass,
//!   opt-in ignores, object size — matched on the normalised path.
//! - [`reload`](Reloader): SIGHUP — what changes live, what needs a restart.
//! - [`response`](CachedResponse): the cached value (serde, so the fleet can share it).
//! - [`origin`](Origin): pooled origin client, timeouts, streamed bodies, typed failures.
//! - [`stats`](Stats): counters and the Prometheus exposition; `admin`: its listener.
//! - `purge`: the admin listener's `POST /purge`, broadcast to the fleet through Redis;
//!   [`purge_client`](purge_blocking): `herdguard purge`, its client.
//! - [`dashboard`]: the live view on the admin listener — one sampler a
//!   second, the event stream, the fleet view through Redis, the page.
//! - `access`: the access log (`--access-log`), one `tracing` event per request.
//! - `fleet`: the Redis tier (`--redis`), namespaced by origin.

#![warn(missing_docs)]

mod access;
mod admin;
mod answer;
mod body;
mod config;
pub mod dashboard;
mod fleet;
mod limits;
mod loader;
mod origin;
mod path_rules;
mod proxy;
mod purge;
mod purge_client;
mod range;
mod reload;
mod request;
mod response;
mod rules;
mod server;
mod stats;
mod tags;
mod tls;
mod variants;

pub use body::{Body, BodyStalled};
pub use config::{ConfigError, RequestCacheControl, Secret, ServeArgs, Settings};
pub use limits::ConnectionLimits;
pub use origin::{Origin, OriginError, OriginResponse, OriginTrust};
pub use path_rules::PathRules;
pub use proxy::Proxy;
pub use purge_client::{purge_blocking, PurgeArgs, PurgeError};
pub use reload::{LogControl, Reloaded, Reloader, SetFilter};
pub use request::Peer;
pub use response::{CachedResponse, Fetch};
pub use server::{run, run_blocking, shutdown_signal, ServeError, Server};
pub use stats::{Connections, Count, Stats, ORIGIN_ERRORS, RESULTS};
pub use tls::TlsConfig;
