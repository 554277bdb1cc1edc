//! Listeners and lifecycle: build the cache and origin client from [`Settings`],
//! accept connections on the proxy and admin addresses, shut down gracefully.
//!
//! Serving is thread-per-core, as nginx's workers are: `threads` OS threads,
//! each with a single-threaded Tokio runtime and its own listening socket on
//! the same address (`SO_REUSEPORT`, so the kernel spreads the connections).
//! A connection lives on one thread from accept to close: no work stealing and
//! no cross-thread wake-ups on the hit path. The cache, the origin client and
//! the counters are shared by all. The thread that calls [`Server::serve`] is
//! one of them and also runs the admin listener.
//!
//! # HTTP versions
//!
//! The plain listener speaks HTTP/1.1 and, to a client that opens with the
//! HTTP/2 preface (prior knowledge, "h2c"), HTTP/2: hyper-util's `auto`
//! builder reads the first bytes and picks. With `--tls-cert`/`--tls-key` the
//! listener speaks TLS instead ([`crate::tls`]) and the ALPN result picks (`h2`,
//! `http/1.1`, or none: the first bytes again). The handshake runs on the
//! connection's task under the header-read limit; a failed one is counted
//! (`herdguard_proxy_tls_handshake_failures_total`) and logged at debug.
//!
//! HTTP/2's limits match HTTP/1.1's: the header list is bounded by
//! `max_header_bytes`; at most `h2_max_concurrent_streams` requests are in
//! flight per connection (more are refused with `REFUSED_STREAM`); a client
//! that resets more than 20 streams before they were
//! taken up (rapid reset) gets `GOAWAY`; the idle limit closes a connection
//! without a request in flight (control frames do not keep it open, see
//! `limits`), and a ping every idle period, answered within the write limit,
//! finds a vanished peer while requests are in flight. `max_connections`
//! counts connections, whatever they multiplex.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herdguard::{Cache, MemoryStore};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::access;
use crate::admin;
use crate::config::{ConfigError, ServeArgs, Settings};
use crate::limits::{ConnState, TimedIo, Tracked};
use crate::origin::Origin;
use crate::proxy::{HandlerOptions, Proxy, Tuning};
use crate::reload::{LogControl, Reloader};
use crate::request::Forwarding;
use crate::response::CachedResponse;
use crate::rules::Rules;
use crate::stats::Stats;
use crate::tls::{Negotiated, TlsConfig};
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
    /// The async runtime could not be started.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
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
    remote: Option<crate::fleet::FleetRemote>,
    max_connections: usize,
    admin_max_connections: usize,
    threads: usize,
    /// The admin listener's `POST /purge` (applying the fleet's purges from bind on).
    purger: Arc<crate::purge::Purger>,
    tls: Option<TlsConfig>,
    h2_max_concurrent_streams: u32,
    /// The settings it was bound with (what a reload compares with).
    settings: Settings,
}

/// What of `settings` a reload may change while serving.
pub(crate) fn tuning(settings: &Settings) -> Tuning {
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
            host: settings.forward_host,
        },
        request_cache_control: settings.request_cache_control,
        max_header_bytes: settings.max_header_bytes,
        max_request_body_bytes: settings.max_request_body_bytes,
        max_object_bytes: settings.max_body_bytes,
        body_read_timeout: settings.body_read_timeout,
        default_host,
        keep_client_host: settings.keep_client_host,
    };
    Tuning {
        rules,
        options,
        paths: settings.path_rules.clone(),
        limits: settings.connection_limits,
        access_log: settings.access_log,
    }
}

/// A listening socket on `addr`; with `reuse_port`, others may listen on the
/// same address (one per serving thread).
fn listen(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

impl Server {
    /// Builds the cache, the origin client and the listeners from `settings`.
    pub async fn bind(settings: Settings) -> Result<Server, ServeError> {
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
            .uncacheable_ttl(settings.hit_for_miss)
            // Waiters never wait longer than the origin may take, plus a margin.
            .wait_timeout(
                settings.origin_timeout + settings.origin_connect_timeout + Duration::from_secs(1),
            );
        let (builder, remote) = crate::fleet::attach(builder, &settings).await?;
        let cache = builder.build().map_err(|e| ConfigError {
            field: "cache".into(),
            reason: e.to_string(),
        })?;
        let origin = Origin::new(
            &settings.origin,
            &settings.origin_trust,
            (settings.origin_connect_timeout, settings.origin_timeout),
            settings.keep_client_host,
        )
        .map_err(|reason| ConfigError {
            field: "origin".into(),
            reason,
        })?;
        let proxy = Arc::new(Proxy::new(
            cache,
            origin,
            tuning(&settings),
            Arc::new(Stats::default()),
            Variants::new(
                settings.cache_key.clone(),
                settings.max_memory / crate::variants::REGISTRY_SHARE,
            ),
            remote.clone(),
        ));
        let purger = Arc::new(crate::purge::Purger::new(
            Arc::clone(&proxy),
            settings.purge_token.as_ref().map(|t| t.0.as_str()),
            remote.clone(),
        ));
        let bind_error = |source| ServeError::Bind {
            what: "proxy",
            addr: settings.listen,
            source,
        };
        let listener = listen(settings.listen, settings.threads > 1)
            .and_then(TcpListener::from_std)
            .map_err(bind_error)?;
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
        Reloader::new(Arc::clone(&self.proxy), self.settings.clone(), log)
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
            let sampler = crate::dashboard::Sampler::start(
                Arc::clone(&self.proxy),
                crate::dashboard::instance_name(port),
                self.remote.clone(),
                self.redis,
                stop_rx.clone(),
            );
            let listener = admin::Admin {
                sampler: Arc::new(sampler),
                proxy: Arc::clone(&self.proxy),
                redis: self.redis,
                purger: Arc::clone(&self.purger),
                remote: self.remote,
                max_connections: self.admin_max_connections,
            };
            tokio::spawn(listener.serve(admin, stop_rx.clone()));
        }
        let acceptor = Acceptor {
            proxy: self.proxy,
            max_header_bytes: self.max_header_bytes,
            slots: Arc::new(Semaphore::new(self.max_connections)),
            tls: self.tls.as_ref().map(TlsConfig::acceptor),
            h2_max_concurrent_streams: self.h2_max_concurrent_streams,
        };
        let addr = self
            .listener
            .local_addr()
            .map_err(|source| ServeError::Bind {
                what: "proxy",
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                source,
            })?;
        let mut threads = Vec::new();
        for i in 1..self.threads {
            let bind_error = |source| ServeError::Bind {
                what: "proxy",
                addr,
                source,
            };
            let listener = listen(addr, true).map_err(bind_error)?;
            let (acceptor, stop) = (acceptor.clone(), stop_rx.clone());
            let thread = std::thread::Builder::new()
                .name(format!("herdguard-serve-{i}"))
                .spawn(move || -> std::io::Result<()> {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    runtime.block_on(async move {
                        acceptor.run(TcpListener::from_std(listener)?, stop).await;
                        Ok(())
                    })
                })
                .map_err(bind_error)?;
            threads.push(thread);
        }
        let stopper = async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        };
        tokio::join!(acceptor.run(self.listener, stop_rx), stopper);
        for thread in threads {
            // Joined off this runtime: it still runs the tasks the other threads'
            // last requests may need (the Redis connections).
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if let Ok(Ok(Err(e))) = joined {
                tracing::warn!("a serving thread failed: {e}");
            }
        }
        Ok(())
    }
}

/// What every serving thread needs to accept and serve connections.
#[derive(Clone)]
struct Acceptor {
    proxy: Arc<Proxy>,
    max_header_bytes: usize,
    /// Shared by all threads: `max_connections` holds for the whole process.
    slots: Arc<Semaphore>,
    /// The TLS listener's handshakes (`None`: plain HTTP/1.1 and h2c).
    tls: Option<tokio_rustls::TlsAcceptor>,
    h2_max_concurrent_streams: u32,
}

/// Streams an HTTP/2 client may reset before the server took them up, the
/// rapid-reset bound (CVE-2023-44487): past it the connection gets GOAWAY.
const MAX_PENDING_ACCEPT_RESETS: usize = 20;

/// How a plain connection opens, from its first bytes (one peek).
enum Opening {
    /// Not the HTTP/2 preface (almost always told by the first byte).
    Http1,
    /// The preface so far: the `auto` builder reads on and decides.
    MaybeHttp2,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Peeks at the first bytes (within the header-read limit, which goes on from
/// the connection's start); `None`: nothing came, or the connection closed.
async fn opening(stream: &TcpStream, limit: Duration) -> Option<Opening> {
    let mut first = [0u8; 24];
    match tokio::time::timeout(limit, stream.peek(&mut first)).await {
        Ok(Ok(n)) if n > 0 => Some(if first[..n] == H2_PREFACE[..n] {
            Opening::MaybeHttp2
        } else {
            Opening::Http1
        }),
        _ => None,
    }
}

/// One serving thread's connection builders: by the first bytes (the HTTP/2
/// preface or not), and by a TLS connection's ALPN result.
struct Builders {
    /// A plain connection that does not open with the HTTP/2 preface.
    http1_plain: hyper::server::conn::http1::Builder,
    sniffed: auto::Builder<TokioExecutor>,
    http1: auto::Builder<TokioExecutor>,
    http2: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn for_protocol(&self, protocol: Negotiated) -> &auto::Builder<TokioExecutor> {
        match protocol {
            Negotiated::Http2 => &self.http2,
            Negotiated::Http1 => &self.http1,
            Negotiated::Unknown => &self.sniffed,
        }
    }
}

impl Acceptor {
    /// Accepts on `listener` until `stop`, then lets its connections finish
    /// their requests (at most 30 s).
    async fn run(self, listener: TcpListener, mut stop: watch::Receiver<bool>) {
        let graceful = GracefulShutdown::new();
        let builders = Arc::new(self.builders());
        loop {
            let accepted = tokio::select! {
                accepted = accept(&listener, &self.slots) => accepted,
                _ = stop.wait_for(|stopped| *stopped) => break,
            };
            let Some((stream, peer, slot)) = accepted else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let proxy = Arc::clone(&self.proxy);
            let peer_addr = peer;
            let peer = proxy.peer(peer);
            let peer = Arc::new(if self.tls.is_some() {
                peer.over_tls()
            } else {
                peer
            });
            let state = Arc::new(ConnState::default());
            // Limits and logging as in force when the connection is accepted.
            let (limits, access_log) = {
                let tuning = proxy.tuning();
                (tuning.limits, tuning.access_log)
            };
            let io = TimedIo::new(stream, Arc::clone(&state), limits);
            let accepted_at = Instant::now();
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let proxy = Arc::clone(&proxy);
                let peer = Arc::clone(&peer);
                if req.version() == http::Version::HTTP_2 {
                    state.set_multiplexed();
                }
                let busy = state.begin();
                async move {
                    let response = if access_log {
                        Box::pin(logged(proxy, req, &peer)).await
                    } else {
                        proxy.handle(req, &peer).await
                    };
                    Ok::<_, Infallible>(response.map(|body| Tracked::new(body, busy)))
                }
            });
            // Taken now, so that a shutdown waits for a handshake under way.
            let watcher = graceful.watcher();
            let (builders, tls) = (Arc::clone(&builders), self.tls.clone());
            let stats = Arc::clone(&self.proxy.stats);
            tokio::spawn(async move {
                let _slot = slot;
                stats.connections.open();
                match tls {
                    None => match opening(io.get_ref(), limits.header_read).await {
                        // hyper's own HTTP/1.1 connection: no sniffing buffer on the hit path.
                        Some(Opening::Http1) => {
                            let io = io.head_since(accepted_at);
                            let conn = builders
                                .http1_plain
                                .serve_connection(TokioIo::new(io), service);
                            let _ = watcher.watch(conn).await;
                        }
                        Some(Opening::MaybeHttp2) => {
                            let io = io.head_since(accepted_at);
                            let conn = builders.sniffed.serve_connection(TokioIo::new(io), service);
                            let _ = watcher.watch(conn).await;
                        }
                        None => {}
                    },
                    Some(tls) => match tls.accept(io).await {
                        Ok(stream) => {
                            let builder = builders.for_protocol(Negotiated::of(stream.get_ref().1));
                            let conn = builder.serve_connection(TokioIo::new(stream), service);
                            let _ = watcher.watch(conn).await;
                        }
                        Err(e) => {
                            stats.tls_handshake_failures.inc();
                            tracing::debug!(%peer_addr, "TLS handshake failed: {e}");
                        }
                    },
                }
                stats.connections.close();
            });
        }
        drop(listener);
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(Duration::from_secs(30)) => {
                tracing::warn!("shutdown: requests still running after 30 s");
            }
        }
    }
}

impl Acceptor {
    /// HTTP/1.1 keep-alive with the head limit on the socket; HTTP/2 with limits
    /// of the same size (the module docs).
    fn builders(&self) -> Builders {
        // HTTP/2's ping timing as at start (a reload changes the socket limits).
        let limits = self.proxy.tuning().limits;
        let mut sniffed = auto::Builder::new(TokioExecutor::new());
        sniffed
            .http1()
            .keep_alive(true)
            .max_buf_size(self.max_header_bytes)
            .timer(TokioTimer::new())
            // The head timeout is enforced on the socket (`TimedIo`), which also
            // covers the first request of a connection.
            .header_read_timeout(None);
        sniffed
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(self.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(self.h2_max_concurrent_streams)
            .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
            // A peer that stops answering pings while a request is in flight is
            // gone; between requests the idle limit on the socket closes it.
            .keep_alive_interval(limits.idle)
            .keep_alive_timeout(limits.write);
        let mut http1_plain = hyper::server::conn::http1::Builder::new();
        http1_plain
            .keep_alive(true)
            .max_buf_size(self.max_header_bytes)
            .timer(TokioTimer::new())
            .header_read_timeout(None);
        Builders {
            http1_plain,
            http1: sniffed.clone().http1_only(),
            http2: sniffed.clone().http2_only(),
            sniffed,
        }
    }
}

/// [`Proxy::handle`], logged (`--access-log`).
async fn logged(
    proxy: Arc<Proxy>,
    req: http::Request<hyper::body::Incoming>,
    peer: &crate::request::Peer,
) -> http::Response<crate::body::Body> {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let response = proxy.handle(req, peer).await;
    access::log(&method, &path, &response, started.elapsed());
    response
}

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
