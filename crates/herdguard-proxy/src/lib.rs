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
//! Folders by concern; an import only ever goes down this list (no layer
//! reads one above it):
//!
//! - [`serve`](Server): the lifecycle — builds every layer from [`Settings`],
//!   opens the listeners, serves on `threads` threads, shuts down gracefully,
//!   [`run`]; the Redis tier (`--redis`).
//! - `config`: every setting declared once — flag, env var, TOML key, default,
//!   parser, reload class — and resolved into validated [`Settings`]
//!   ([`ServeArgs`], [`config_reference`]); what each layer reads of them;
//!   SIGHUP ([`Reloader`]).
//! - `admin`: the admin listener — `/metrics`, `/healthz`, `/readyz`, the
//!   [`dashboard`], `POST /purge` broadcast to the fleet, and
//!   [`purge_client`](purge_blocking) (`herdguard purge`).
//! - `listen`: the proxy listener — accept loop, HTTP/1.1 and HTTP/2 (h2c or
//!   ALPN), the connection cap, per-connection time limits ([`ConnectionLimits`]),
//!   TLS ([`TlsConfig`]).
//! - `handle`: the request path — request → key → cached or one coalesced
//!   load → answer with its `Cache-Status` ([`Proxy`], [`CachedResponse`],
//!   [`PathRules`]).
//! - [`origin`](Origin): pooled origin client, timeouts, streamed bodies, typed failures.
//! - [`stats`](Stats): the counters the request path bumps.
//! - [`body`](Body): the answer body, streamed bodies' time limits.

#![warn(missing_docs)]

mod admin;
mod body;
mod config;
mod handle;
mod listen;
mod origin;
mod serve;
mod stats;

pub use admin::auth::AdminAuth;
pub use admin::dashboard;
pub use admin::purge_client::{purge_blocking, PurgeArgs, PurgeError};
pub use body::{Body, BodyStalled};
pub use config::error::ConfigError;
pub use config::reference::config_reference;
pub use config::reload::{LogControl, Reloaded, Reloader, SetFilter};
pub use config::secret::Secret;
pub use config::settings::{ServeArgs, Settings};
pub use handle::path_rules::PathRules;
pub use handle::proxy::{Proxy, RequestCacheControl};
pub use handle::request::Peer;
pub use handle::response::{CachedResponse, Fetch};
pub use listen::limits::ConnectionLimits;
pub use listen::tls::TlsConfig;
pub use origin::{Origin, OriginError, OriginResponse, OriginTrust};
pub use serve::{run, run_blocking, shutdown_signal, ServeError, Server};
pub use stats::{Connections, Count, Stats, ORIGIN_ERRORS, RESULTS};
