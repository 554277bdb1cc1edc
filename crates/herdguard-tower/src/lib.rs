//! A [tower](https://docs.rs/tower) layer that caches a service's responses
//! with herdguard: the HTTP caching rules of `herdguard serve` (RFC 9111 for a
//! shared cache, `stale-while-revalidate`, `stale-if-error`, `Vary`,
//! `Cache-Status`), and one call of the handler per key — for every
//! concurrent request in the process and, with a shared Redis store, across a
//! fleet of processes.
//!
//! ```
//! use std::time::Duration;
//! use axum::{body::Body, http::{header, Request}, routing::get, Router};
//! use herdguard_tower::HerdLayer;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let layer = HerdLayer::new();
//! let app = Router::new()
//!     .route("/report", get(|| async {
//!         tokio::time::sleep(Duration::from_millis(200)).await; // a slow query
//!         ([(header::CACHE_CONTROL, "max-age=60")], "the report")
//!     }))
//!     .layer(layer.clone());
//!
//! let get = || Request::get("/report").body(Body::empty());
//! let first = app.clone().oneshot(get()?).await?;
//! let status = first.headers()["cache-status"].to_str()?;
//! assert!(status.starts_with("herdguard; fwd=miss; fwd-status=200; ttl=") && status.ends_with("; stored"));
//! let second = app.oneshot(get()?).await?;
//! assert!(second.headers()["cache-status"].to_str()?.starts_with("herdguard; hit"));
//! assert_eq!(layer.metrics().loads, 1); // one handler call
//! # Ok(())
//! # }
//! ```
//!
//! What is stored is what the handler says may be: a response with
//! `Cache-Control: max-age` (or `s-maxage`, `Expires`, `CDN-Cache-Control`)
//! and no `private`, `no-store` or `Set-Cookie`; anything else reaches its own
//! client only. The guide is `docs/tower.md`.
//!
//! # Layout
//!
//! - [`layer`](HerdLayer): the layer, its builder ([`HerdLayerBuilder`]) and
//!   bounds, [`HerdLayer::metrics`].
//! - [`service`](HerdService): the flow of a request — keyed GET/HEAD through
//!   the core, `Authorization` and `no-store` requests alone, other methods
//!   passed through with invalidation.
//! - `load`: the one call of the inner service a load makes, and what it hands
//!   the core (a storable response) or its own caller only (everything else).
//! - `answer`: every outcome as a response with its `Cache-Status`.
//! - [`body`](HerdBody): the response body, and the bounded read that stores a
//!   body or streams it on.
//!
//! Every rule — key, storability, freshness, `Vary`, revalidation, invalidation,
//! `Cache-Status` — is `herdguard-http`'s, the same code `herdguard serve` runs.
//!
//! # Panics and errors in the inner service
//!
//! A shared load runs as its own task: a handler that panics there is caught by
//! the core (`Error::LoaderPanicked`), every waiter gets a 500, and the next
//! request calls the handler again. The service's own error goes back to the
//! caller whose load it was; the others get a 500 made by the layer.
#![warn(missing_docs)]

mod answer;
mod body;
mod layer;
mod load;
mod service;

pub use body::HerdBody;
pub use herdguard::MetricsSnapshot;
pub use herdguard_http::response::CachedResponse;
pub use layer::{
    HerdLayer, HerdLayerBuilder, DEFAULT_HIT_FOR_MISS, DEFAULT_LOAD_TIMEOUT,
    DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_MEMORY,
};
pub use service::{HerdService, ResponseFuture};

/// Any error a body or a service may return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
