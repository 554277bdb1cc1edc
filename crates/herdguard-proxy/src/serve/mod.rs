//! `herdguard serve`'s lifecycle: build the cache, the origin client and the
//! layers from [`Settings`], open the proxy and admin listeners, serve until
//! SIGTERM or ctrl-c (reloading the configuration on SIGHUP), shut down
//! gracefully.
//!
//! Serving is thread-per-core, as nginx's workers are: `threads` OS threads,
//! each with a single-threaded Tokio runtime and its own listening socket on
//! the same address (`SO_REUSEPORT`, so the kernel spreads the connections).
//! A connection lives on one thread from accept to close: no work stealing and
//! no cross-thread wake-ups on the hit path. The cache, the origin client and
//! the counters are shared by all. The thread that calls [`Server::serve`] is
//! one of them and also runs the admin listener.

mod error;
mod fleet;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use herdguard::{Cache, MemoryStore};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use error::ServeError;

use crate::admin::auth::Token;
use crate::admin::dashboard::{instance_name, Sampler};
use crate::admin::purge::Purger;
use crate::admin::Admin;
use crate::config::error::ConfigError;
use crate::config::reload::{LogControl, Reloader};
use crate::config::settings::{ServeArgs, Settings};
use crate::config::tuning;
use crate::handle::partial::{Partials, PARTIAL_SHARE};
use crate::handle::proxy::{FleetRemote, Proxy};
use crate::handle::response::CachedResponse;
use crate::handle::tags::{TagIndex, INDEX_SHARE};
use crate::handle::variants::{Variants, REGISTRY_SHARE};
use crate::listen::acceptor::{self, Acceptor, LiveConnections};
use crate::listen::tls::TlsConfig;
use crate::origin::{Admission, Origin};
use crate::stats::Stats;

/// A bound proxy, ready to serve (tests start one in process on port 0).
pub struct Server {
    proxy: Arc<Proxy>,
    /// The connection tuning in force (a reload replaces it).
    live: LiveConnections,
    listener: TcpListener,
    admin: Option<TcpListener>,
    max_header_bytes: usize,
    redis: bool,
    remote: Option<FleetRemote>,
    max_connections: usize,
    admin_max_connections: usize,
    threads: usize,
    /// The admin listener's `POST /purge` (applying the fleet's purges from bind on).
    purger: Arc<Purger>,
    tls: Option<TlsConfig>,
    h2_max_concurrent_streams: u32,
    /// The settings it was bound with (what a reload compares with).
    settings: Settings,
}

impl Server {
    /// Builds the cache, the origin client and the listeners from `settings`.
    pub async fn bind(settings: Settings) -> Result<Server, ServeError> {
        let (cache, remote) = cache(&settings).await?;
        let stats = Arc::new(Stats::default());
        let origin = Origin::new(
            &settings.origin,
            &settings.origin_ca,
            (
                settings.origin_connect_timeout_ms,
                settings.origin_timeout_ms,
            ),
            settings.keep_client_host,
        )
        .map_err(|reason| ConfigError {
            field: "origin".into(),
            reason,
        })?
        .admitting(Admission::new(
            settings.max_origin_requests,
            settings.origin_queue_timeout_ms,
            Arc::clone(&stats),
        ));
        let proxy = Arc::new(Proxy::new(
            cache,
            origin,
            tuning::handler(&settings),
            Arc::clone(&stats),
            (
                Variants::new(
                    settings.cache_key.clone(),
                    settings.max_memory / REGISTRY_SHARE,
                ),
                TagIndex::new(settings.max_memory / INDEX_SHARE, stats),
                // Kept in this process only: none with a shared store (`handle::partial`).
                Partials::new(match &remote {
                    Some(_) => 0,
                    None => settings.max_memory / PARTIAL_SHARE,
                }),
            ),
            remote.clone(),
        ));
        let purger = Arc::new(Purger::new(
            Arc::clone(&proxy),
            settings.purge_token.as_ref().map(|t| t.0.as_str()),
            remote.clone(),
        ));
        let (listener, admin) = listeners(&settings).await?;
        Ok(Server {
            proxy,
            live: Arc::new(ArcSwap::from_pointee(tuning::connections(&settings))),
            listener,
            admin,
            max_header_bytes: settings.max_header_bytes,
            redis: settings.redis.is_some() || !settings.redis_cluster.is_empty(),
            remote,
            max_connections: settings.max_connections,
            admin_max_connections: settings.admin_max_connections,
            threads: settings.threads,
            purger,
            tls: settings.tls.clone(),
            h2_max_concurrent_streams: settings.h2_max_concurrent_streams,
            settings,
        })
    }

    /// What applies a re-read configuration to this server while it serves
    /// (SIGHUP in `herdguard serve`); `log` is the binary's log filter, if the
    /// file may set it.
    pub fn reloader(&self, log: Option<LogControl>) -> Reloader {
        Reloader::new(
            Arc::clone(&self.proxy),
            Arc::clone(&self.live),
            self.settings.clone(),
            log,
        )
    }

    /// The proxy's bound address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// The admin listener's bound address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The proxy (its cache and counters), for tests and embedding.
    pub fn proxy(&self) -> Arc<Proxy> {
        Arc::clone(&self.proxy)
    }

    /// Serves until `shutdown` completes, then stops accepting and lets requests
    /// in flight finish (at most 30 s), on `threads` threads (the module docs).
    ///
    /// At most `max_connections` connections are open at once: the next one is
    /// accepted when one closes (until then it waits in the kernel's backlog).
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        if let Some(admin) = self.admin {
            let port = self.listener.local_addr().map_or(0, |a| a.port());
            let sampler = Sampler::start(
                Arc::clone(&self.proxy),
                instance_name(port),
                self.remote.clone(),
                self.redis,
                stop_rx.clone(),
            );
            let listener = Admin {
                sampler: Arc::new(sampler),
                proxy: Arc::clone(&self.proxy),
                live: Arc::clone(&self.live),
                redis: self.redis,
                purger: Arc::clone(&self.purger),
                remote: self.remote,
                max_connections: self.admin_max_connections,
                max_event_streams: self.settings.admin_max_event_streams,
                auth: (
                    self.settings.admin_auth,
                    self.settings.purge_token.as_ref().map(|t| Token::new(&t.0)),
                ),
            };
            tokio::spawn(listener.serve(admin, stop_rx.clone()));
        }
        let acceptor = Acceptor::new(
            self.proxy,
            self.live,
            (
                self.max_header_bytes,
                self.max_connections,
                self.h2_max_concurrent_streams,
            ),
            self.tls.as_ref(),
        );
        let addr = self
            .listener
            .local_addr()
            .map_err(|source| ServeError::Bind {
                what: "proxy",
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                source,
            })?;
        let others = acceptor
            .spawn_others(addr, self.threads, &stop_rx)
            .map_err(|source| ServeError::Bind {
                what: "proxy",
                addr,
                source,
            })?;
        let stopper = async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        };
        tokio::join!(acceptor.run(self.listener, stop_rx), stopper);
        acceptor::join(others).await;
        Ok(())
    }
}

/// The cache of `settings`: its memory budget, and the fleet's shared store
/// when Redis is named (returned too, for the dashboard and `/metrics`).
async fn cache(
    settings: &Settings,
) -> Result<(Cache<String, CachedResponse>, Option<FleetRemote>), ServeError> {
    let store = MemoryStore::with_weigher(
        settings.max_entries,
        settings.max_memory,
        Arc::new(|k: &String, v: &CachedResponse| v.weight(k)),
    )
    .map_err(|e| ConfigError {
        field: "max_memory".into(),
        reason: e.to_string(),
    })?;
    let builder = Cache::builder()
        .store(store)
        .uncacheable_ttl(settings.hit_for_miss_secs)
        // Waiters never wait longer than the load may take (an origin slot,
        // then the origin), plus a margin.
        .wait_timeout(
            settings.origin_queue_timeout_ms
                + settings.origin_timeout_ms
                + settings.origin_connect_timeout_ms
                + Duration::from_secs(1),
        );
    let (builder, remote) = fleet::attach(builder, settings).await?;
    let cache = builder.build().map_err(|e| ConfigError {
        field: "cache".into(),
        reason: e.to_string(),
    })?;
    Ok((cache, remote))
}

/// The proxy listener (its socket shared with the other serving threads) and
/// the admin listener, if any.
async fn listeners(settings: &Settings) -> Result<(TcpListener, Option<TcpListener>), ServeError> {
    let listener = acceptor::socket(settings.listen, settings.threads > 1)
        .and_then(TcpListener::from_std)
        .map_err(|source| ServeError::Bind {
            what: "proxy",
            addr: settings.listen,
            source,
        })?;
    let admin = match settings.admin {
        None => None,
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind {
                    what: "admin",
                    addr,
                    source,
                })?,
        ),
    };
    Ok((listener, admin))
}

/// `herdguard serve` from `main`: resolves the configuration, then builds the
/// runtime of the first serving thread and serves until SIGTERM or ctrl-c,
/// reloading the configuration on SIGHUP; `log` lets the file's `log_level`
/// set the binary's log filter.
pub fn run_blocking(args: ServeArgs, log: Option<LogControl>) -> Result<(), ServeError> {
    let settings = args.resolve()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    runtime.block_on(serve_settings(args, settings, log))
}

/// `herdguard serve` inside a runtime the caller runs (tests, embedding).
pub async fn run(args: ServeArgs) -> Result<(), ServeError> {
    let settings = args.resolve()?;
    serve_settings(args, settings, None).await
}

async fn serve_settings(
    args: ServeArgs,
    settings: Settings,
    log: Option<LogControl>,
) -> Result<(), ServeError> {
    if let Some(log) = &log {
        log.apply(settings.log_level.as_deref())?;
    }
    let hangups = hangups();
    let key = key_line(&settings);
    let server = Server::bind(settings).await?;
    let reloader = server.reloader(log);
    if let Some(addr) = server.local_addr() {
        tracing::info!(target: "herdguard::serve", url = %format_args!("http://{addr}"), "listening");
    }
    if let Some(addr) = server.admin_addr() {
        tracing::info!(target: "herdguard::serve", url = %format_args!("http://{addr}/metrics"), "admin listening");
    }
    tracing::info!(target: "herdguard::serve", parts = key.0, query = key.1, client_host = key.2, "cache key");
    tokio::select! {
        served = server.serve(shutdown_signal()) => served,
        never = reload_on_hangup(hangups, &args, &reloader) => match never {},
    }
}

/// The cache key's parts, its query mode, and why the client's host is in it
/// or not: what the start-up log says of the key.
fn key_line(settings: &Settings) -> (&'static str, &'static str, &'static str) {
    let key = &settings.cache_key;
    let host = match (key.host, settings.keep_client_host, settings.forward_host) {
        (false, _, _) => "left out: the origin never sees it",
        (true, true, _) => "in the key: the origin gets it as Host (keep_client_host)",
        (true, false, true) => "in the key: the origin gets it as X-Forwarded-Host (forward_host)",
        (true, false, false) => "in the key as configured (the origin never sees it)",
    };
    (key.parts(), key.query_mode(), host)
}

/// SIGHUP, caught from before the listeners open (its default action would
/// end the process); `None` where it cannot be.
#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

fn hangups() -> Hangups {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        signal(SignalKind::hangup())
            .inspect_err(|e| tracing::warn!(target: "herdguard::serve", "no reload on SIGHUP: {e}"))
            .ok()
    }
    #[cfg(not(unix))]
    None
}

/// Reloads the configuration on every SIGHUP (never returns).
async fn reload_on_hangup(hangups: Hangups, args: &ServeArgs, reloader: &Reloader) -> Infallible {
    #[cfg(unix)]
    if let Some(mut hangups) = hangups {
        while hangups.recv().await.is_some() {
            reloader.reload_logged(args.resolve());
        }
    }
    #[cfg(not(unix))]
    let _ = (hangups, args, reloader);
    std::future::pending::<Infallible>().await
}

/// Completes on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
