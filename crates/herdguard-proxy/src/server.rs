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
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin;
use crate::config::{ConfigError, ServeArgs, Settings};
use crate::origin::Origin;
use crate::proxy::Proxy;
use crate::response::CachedResponse;
use crate::rules::Rules;
use crate::stats::Stats;

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
}

/// How long a client may take to send a request head (slowloris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

impl Server {
    /// Builds the cache, the origin client and the listeners from `settings`.
    pub async fn bind(settings: Settings) -> Result<Server, ServeError> {
        let store = Arc::new(
            MemoryStore::with_weigher(
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
            })?,
        );
        let builder = Cache::builder()
            .store(crate::proxy::PeekStore(Arc::clone(&store)))
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
            settings.max_body_bytes,
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
        let proxy = Arc::new(Proxy::new(
            cache,
            store,
            origin,
            rules,
            Arc::new(Stats::default()),
            settings.max_request_body_bytes,
            settings.max_header_bytes,
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
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let graceful = GracefulShutdown::new();
        if let Some(admin) = self.admin {
            let proxy = Arc::clone(&self.proxy);
            let redis = self.redis;
            tokio::spawn(admin::serve(admin, proxy, redis, stop_rx.clone()));
        }
        let mut builder = http1::Builder::new();
        builder
            .keep_alive(true)
            .max_buf_size(self.max_header_bytes)
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        tokio::pin!(shutdown);
        loop {
            let (stream, _) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let proxy = Arc::clone(&self.proxy);
            let service = service_fn(move |req| {
                let proxy = Arc::clone(&proxy);
                async move { Ok::<_, Infallible>(proxy.handle(req).await) }
            });
            let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                // A client that vanishes or sends garbage ends only its own connection.
                let _ = conn.await;
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
