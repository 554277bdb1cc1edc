//! Listeners and lifecycle: build the cache and origin client from [`Settings`],
//! accept connections on the proxy and admin addresses, shut down gracefully.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use herdguard::{Cache, MemoryStore};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::admin;
use crate::config::{ConfigError, ServeArgs, Settings};
use crate::limits::{ConnState, ConnectionLimits, TimedIo, Tracked};
use crate::origin::Origin;
use crate::proxy::{HandlerOptions, Proxy};
use crate::request::Forwarding;
use crate::response::CachedResponse;
use crate::rules::Rules;
use crate::stats::Stats;
use crate::variants::Variants;

/// Why `herdguard serve` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A setting is invalid (exit code 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be opened.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The shared store could not be set up.
    #[error("redis: {0}")]
    Redis(String),
}

impl ServeError {
    /// The process exit code for this error: 2 for bad configuration, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            ServeError::Config(_) => 2,
            _ => 1,
        }
    }
}

/// A bound proxy, ready to serve (tests start one in process on port 0).
pub struct Server {
    proxy: Arc<Proxy>,
    listener: TcpListener,
    admin: Option<TcpListener>,
    max_header_bytes: usize,
    redis: bool,
    max_connections: usize,
    admin_max_connections: usize,
    limits: ConnectionLimits,
}

impl Server {
    /// Builds the cache, the origin client and the listeners from `settings`.
    pub async fn bind(settings: Settings) -> Result<Server, ServeError> {
        let store = MemoryStore::with_weigher(
            settings.max_entries,
            settings.max_cache_bytes,
            Arc::new(|k: &String, v: &CachedResponse| {
                (k.len()
                    + v.body.len()
                    + v.headers
                        .iter()
                        .map(|(n, v)| n.len() + v.len())
                        .sum::<usize>()) as u64
            }),
        )
        .map_err(|e| ConfigError {
            field: "max_cache_bytes".into(),
            reason: e.to_string(),
        })?;
        let builder = Cache::builder()
            .store(store)
            .uncacheable_ttl(settings.hit_for_miss)
            // Waiters never wait longer than the origin may take, plus a margin.
            .wait_timeout(
                settings.origin_timeout + settings.origin_connect_timeout + Duration::from_secs(1),
            );
        let builder = crate::fleet::attach(builder, &settings).await?;
        let cache = builder.build().map_err(|e| ConfigError {
            field: "cache".into(),
            reason: e.to_string(),
        })?;
        let origin = Origin::new(
            &settings.origin,
            settings.origin_connect_timeout,
            settings.origin_timeout,
        )
        .map_err(|reason| ConfigError {
            field: "origin".into(),
            reason,
        })?;
        let rules = Rules {
            config: herdguard_http::CacheConfig {
                target_fields: settings.cache_targets.clone(),
                max_heuristic_freshness: settings.heuristic_max,
                ..herdguard_http::CacheConfig::default()
            },
            default_stale_if_error: settings.stale_if_error,
        };
        let default_host = settings
            .origin
            .authority()
            .and_then(|a| herdguard_http::key::normalize_host(a.as_str()))
            .unwrap_or_default();
        let options = HandlerOptions {
            forwarding: Forwarding {
                trusted: settings.trusted_proxies.clone(),
            },
            request_cache_control: settings.request_cache_control,
            max_header_bytes: settings.max_header_bytes,
            max_request_body_bytes: settings.max_request_body_bytes,
            max_object_bytes: settings.max_body_bytes,
            body_read_timeout: settings.body_read_timeout,
            default_host,
        };
        let proxy = Arc::new(Proxy::new(
            cache,
            origin,
            rules,
            Arc::new(Stats::default()),
            Variants::new(settings.cache_key.clone()),
            options,
        ));
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| ServeError::Bind {
                    what: "proxy",
                    addr: settings.listen,
                    source,
                })?;
        let admin = match settings.admin {
            None => None,
            Some(addr) => {
                Some(
                    TcpListener::bind(addr)
                        .await
                        .map_err(|source| ServeError::Bind {
                            what: "admin",
                            addr,
                            source,
                        })?,
                )
            }
        };
        Ok(Server {
            proxy,
            listener,
            admin,
            max_header_bytes: settings.max_header_bytes,
            redis: settings.redis.is_some(),
            max_connections: settings.max_connections,
            admin_max_connections: settings.admin_max_connections,
            limits: settings.connection_limits,
        })
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
    /// in flight finish (at most 30 s).
    ///
    /// At most `max_connections` connections are open at once: the next one is
    /// accepted when one closes (until then it waits in the kernel's backlog).
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let graceful = GracefulShutdown::new();
        if let Some(admin) = self.admin {
            let proxy = Arc::clone(&self.proxy);
            let listener = admin::Admin {
                proxy,
                redis: self.redis,
                limits: self.limits,
                max_connections: self.admin_max_connections,
            };
            tokio::spawn(listener.serve(admin, stop_rx.clone()));
        }
        let mut builder = http1::Builder::new();
        builder
            .keep_alive(true)
            .max_buf_size(self.max_header_bytes)
            .timer(TokioTimer::new())
            // TimedIo enforces the head and idle limits (hyper's one timer cannot tell them apart).
            .header_read_timeout(None);
        let slots = Arc::new(Semaphore::new(self.max_connections));
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                accepted = accept(&self.listener, &slots) => accepted,
                () = &mut shutdown => break,
            };
            let Some((stream, peer, slot)) = accepted else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let proxy = Arc::clone(&self.proxy);
            let peer = Arc::new(proxy.peer(peer));
            let state = Arc::new(ConnState::default());
            let io = TimedIo::new(stream, Arc::clone(&state), self.limits);
            let service = service_fn(move |req| {
                let proxy = Arc::clone(&proxy);
                let peer = Arc::clone(&peer);
                let busy = state.begin();
                async move {
                    let response = proxy.handle(req, &peer).await;
                    Ok::<_, Infallible>(response.map(|body| Tracked::new(body, busy)))
                }
            });
            let conn = graceful.watch(builder.serve_connection(TokioIo::new(io), service));
            let stats = Arc::clone(&self.proxy.stats);
            tokio::spawn(async move {
                let _slot = slot;
                stats.connections.open();
                // A client that vanishes, stalls or sends garbage ends only its own connection.
                let _ = conn.await;
                stats.connections.close();
            });
        }
        drop(self.listener);
        let _ = stop_tx.send(true);
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(Duration::from_secs(30)) => tracing::warn!("shutdown: requests still running after 30 s"),
        }
        Ok(())
    }
}

/// Waits for a connection slot, then for a connection; `None` after an accept
/// error (out of file descriptors and the like), after a short back-off.
pub(crate) async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    let slot = Arc::clone(slots).acquire_owned().await.ok()?;
    match listener.accept().await {
        Ok((stream, peer)) => Some((stream, peer, slot)),
        Err(e) => {
            tracing::warn!("accept failed: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// `herdguard serve`: resolve the configuration, bind, serve until SIGTERM or ctrl-c.
pub async fn run(args: ServeArgs) -> Result<(), ServeError> {
    let settings = args.resolve()?;
    let server = Server::bind(settings).await?;
    if let Some(addr) = server.local_addr() {
        eprintln!("herdguard serve: listening on http://{addr}");
    }
    if let Some(addr) = server.admin_addr() {
        eprintln!("herdguard serve: admin on http://{addr}/metrics");
    }
    server.serve(shutdown_signal()).await
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
