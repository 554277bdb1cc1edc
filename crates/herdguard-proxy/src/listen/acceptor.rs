//! The proxy listener: connections accepted within the connection cap, each
//! served on the thread that accepted it (HTTP/1.1 by hyper, HTTP/2 by `h2`),
//! with the socket limits of `limits` and, with `--tls-cert`/`--tls-key`, TLS
//! (`tls`).
//!
//! # HTTP versions
//!
//! The plain listener speaks HTTP/1.1 and, to a client that opens with the
//! HTTP/2 preface (prior knowledge, "h2c"), HTTP/2: the first bytes pick (a
//! peek, and `h2::sniff` when it cannot tell yet). With `--tls-cert`/`--tls-key` the
//! listener speaks TLS instead (`tls`) and the ALPN result picks (`h2`,
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
//! finds a vanished peer while requests are in flight. A live peer that takes
//! none of its answers (no flow-control window) is closed by the progress rule
//! (`drive`). `max_connections` counts connections, whatever they multiplex.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::drive::{drive, Drain};
use super::h2::{sniff, H2Conn, PREFACE};
use super::interim::{InterimIo, InterimQueue, Opened};
use super::limits::{Busy, ConnState, ConnectionLimits, TimedIo, Tracked};
use super::tls::{Negotiated, TlsConfig};
use crate::body::BoxError;
use crate::handle::access;
use crate::handle::proxy::Proxy;
use crate::handle::request::Peer;
use crate::handle::{Begun, Pending};
use crate::origin::InterimHook;

/// What a reload may change of how connections are served: read when a
/// connection is accepted, for its whole life.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnectionTuning {
    /// Head, idle and write limits.
    pub limits: ConnectionLimits,
    /// One `herdguard::access` event per request.
    pub access_log: bool,
}

/// The connection tuning in force, shared by the listeners and the reloader.
pub(crate) type LiveConnections = Arc<ArcSwap<ConnectionTuning>>;

/// A listening socket on `addr`; with `reuse_port`, others may listen on the
/// same address (one per serving thread).
pub(crate) fn socket(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
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

/// What every serving thread needs to accept and serve connections.
#[derive(Clone)]
pub(crate) struct Acceptor {
    proxy: Arc<Proxy>,
    live: LiveConnections,
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
    /// The preface so far: `h2::sniff` reads on and decides.
    MaybeHttp2,
}

/// Peeks at the first bytes (within the header-read limit, which goes on from
/// the connection's start); `None`: nothing came, or the connection closed.
async fn opening(stream: &TcpStream, limit: Duration) -> Option<Opening> {
    let mut first = [0u8; 24];
    match tokio::time::timeout(limit, stream.peek(&mut first)).await {
        Ok(Ok(n)) if n > 0 => Some(if first[..n] == PREFACE[..n] {
            Opening::MaybeHttp2
        } else {
            Opening::Http1
        }),
        _ => None,
    }
}

/// One serving thread's connection settings, by HTTP version.
struct Builders {
    http1: hyper::server::conn::http1::Builder,
    http2: h2::server::Builder,
}

impl Acceptor {
    /// The acceptor of `proxy`'s connections: at most `max_connections` open at
    /// once (over every thread), heads of at most `max_header_bytes`, TLS with `tls`.
    pub(crate) fn new(
        proxy: Arc<Proxy>,
        live: LiveConnections,
        (max_header_bytes, max_connections, h2_max_concurrent_streams): (usize, usize, u32),
        tls: Option<&TlsConfig>,
    ) -> Acceptor {
        Acceptor {
            proxy,
            live,
            max_header_bytes,
            slots: Arc::new(Semaphore::new(max_connections)),
            tls: tls.map(TlsConfig::acceptor),
            h2_max_concurrent_streams,
        }
    }

    /// Starts serving threads 2 to `threads`, each on a socket of its own on
    /// `addr` with a single-threaded runtime, until `stop`; the caller's thread
    /// is the first ([`Acceptor::run`]).
    pub(crate) fn spawn_others(
        &self,
        addr: SocketAddr,
        threads: usize,
        stop: &watch::Receiver<bool>,
    ) -> std::io::Result<Vec<std::thread::JoinHandle<std::io::Result<()>>>> {
        let mut spawned = Vec::new();
        for i in 1..threads {
            let listener = socket(addr, true)?;
            let (acceptor, stop) = (self.clone(), stop.clone());
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
                })?;
            spawned.push(thread);
        }
        Ok(spawned)
    }

    /// Accepts on `listener` until `stop`, then lets its connections finish
    /// their requests (at most 30 s).
    pub(crate) async fn run(self, listener: TcpListener, mut stop: watch::Receiver<bool>) {
        let drain = Drain::new();
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
            let (peer_addr, peer) = (peer, proxy.peer(peer));
            let peer = Arc::new(if self.tls.is_some() {
                peer.over_tls()
            } else {
                peer
            });
            let state = Arc::new(ConnState::default());
            // Limits and logging as in force when the connection is accepted.
            let ConnectionTuning { limits, access_log } = **self.live.load();
            let io = TimedIo::new(stream, Arc::clone(&state), limits);
            let accepted_at = Instant::now();
            let requests = Requests {
                proxy,
                peer,
                state: Arc::clone(&state),
                access_log,
            };
            let interim = Arc::new(InterimQueue::default());
            let (queue, http1) = (Arc::clone(&interim), requests.clone());
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                // Interim answers: to HTTP/1.1 clients (not 1.0), see `interim`.
                let interim = match req.version() {
                    http::Version::HTTP_11 => Interim::Queued(&queue),
                    _ => Interim::None,
                };
                http1.answer(req, interim)
            });
            // Taken now, so that a shutdown waits for a handshake under way.
            let watcher = drain.watcher();
            let (builders, tls) = (Arc::clone(&builders), self.tls.clone());
            let stats = Arc::clone(&self.proxy.stats);
            tokio::spawn(async move {
                let _slot = slot;
                stats.connections.open();
                // Each HTTP version's connection type, driven the same way.
                macro_rules! http1 {
                    ($io:expr) => {{
                        let io = TokioIo::new(InterimIo::new($io, interim));
                        let conn = builders.http1.serve_connection(io, service);
                        drive(
                            conn,
                            |c| c.graceful_shutdown(),
                            &state,
                            limits.write,
                            watcher,
                        )
                        .await
                    }};
                }
                macro_rules! http2 {
                    ($io:expr) => {{
                        let pings = (limits.idle, limits.write);
                        let conn = H2Conn::new($io, &builders.http2, requests, pings);
                        drive(
                            conn,
                            |c| c.get_mut().graceful_shutdown(),
                            &state,
                            limits.write,
                            watcher,
                        )
                        .await
                    }};
                }
                macro_rules! sniffed {
                    ($io:expr) => {
                        match sniff($io).await {
                            Ok((true, io)) => http2!(io),
                            Ok((false, io)) => http1!(io),
                            Err(_) => {}
                        }
                    };
                }
                match tls {
                    None => match opening(io.get_ref(), limits.header_read).await {
                        // hyper's HTTP/1.1 connection on the socket itself: no
                        // read-ahead on the hit path.
                        Some(Opening::Http1) => http1!(io.head_since(accepted_at)),
                        Some(Opening::MaybeHttp2) => sniffed!(io.head_since(accepted_at)),
                        None => {}
                    },
                    Some(tls) => match tls.accept(io).await {
                        Ok(stream) => match Negotiated::of(stream.get_ref().1) {
                            Negotiated::Http2 => http2!(stream),
                            Negotiated::Http1 => http1!(stream),
                            Negotiated::Unknown => sniffed!(stream),
                        },
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
        finish(drain).await;
    }
}

/// Waits for the connections under way to finish their requests, 30 s at most.
async fn finish(drain: Drain) {
    tokio::select! {
        () = drain.stop() => {}
        () = tokio::time::sleep(Duration::from_secs(30)) => {
            tracing::warn!("shutdown: requests still running after 30 s");
        }
    }
}

impl Acceptor {
    /// HTTP/1.1 keep-alive with the head limit on the socket; HTTP/2 with limits
    /// of the same size (the module docs).
    fn builders(&self) -> Builders {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .keep_alive(true)
            .max_buf_size(self.max_header_bytes)
            .timer(TokioTimer::new())
            // The head timeout is enforced on the socket (`TimedIo`), which also
            // covers the first request of a connection.
            .header_read_timeout(None);
        let http2 = super::h2::settings(
            u32::try_from(self.max_header_bytes).unwrap_or(u32::MAX),
            self.h2_max_concurrent_streams,
            MAX_PENDING_ACCEPT_RESETS,
        );
        Builders { http1, http2 }
    }
}

/// What answers the requests of one connection, whatever its HTTP version.
#[derive(Clone)]
pub(crate) struct Requests {
    proxy: Arc<Proxy>,
    peer: Arc<Peer>,
    state: Arc<ConnState>,
    access_log: bool,
}

impl Requests {
    /// The connection speaks HTTP/2 (see `limits`).
    pub(crate) fn multiplexed(&self) {
        self.state.set_multiplexed();
    }

    /// The answer to `req`, its interim answers going where `interim` says:
    /// [`Requests::begin`], then [`Later::finish`] when that did not answer.
    pub(crate) fn answer<B>(
        &self,
        req: http::Request<B>,
        interim: Interim<'_>,
    ) -> Answer<impl Future<Output = Result<http::Response<Tracked>, Infallible>> + Send + 'static>
    where
        B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        match self.begin(req) {
            Begin::Answered(response) => Answer::Now(std::future::ready(Ok(response))),
            Begin::Later(later) => Answer::Later(later.finish(interim)),
        }
    }

    /// Answers `req` as far as it can without waiting; the connection counts
    /// it in flight from now until its last frame is taken. A plain hit is
    /// answered at once, before the connection reads on (see `Proxy::begin`):
    /// nothing for interim answers is made for it, and nothing is spawned.
    pub(crate) fn begin<B>(&self, req: http::Request<B>) -> Begin<B>
    where
        B: hyper::body::Body,
    {
        let busy = self.state.begin();
        let log = self.access_log.then(|| access::Logged::of(&req));
        match self.proxy.begin(req, &self.peer) {
            Begun::Answered(response) => {
                if let Some(log) = log {
                    log.done(&response);
                }
                Begin::Answered(response.map(|body| Tracked::new(body, busy)))
            }
            Begun::Pending(pending) => Begin::Later(Later {
                proxy: Arc::clone(&self.proxy),
                pending,
                busy,
                log,
            }),
        }
    }
}

/// What [`Requests::begin`] made of a request.
pub(crate) enum Begin<B> {
    /// The answer, at once: a hit, or a refusal.
    Answered(http::Response<Tracked>),
    /// One to wait for: [`Later::finish`].
    Later(Later<B>),
}

/// A request [`Requests::begin`] could not answer at once.
pub(crate) struct Later<B> {
    proxy: Arc<Proxy>,
    pending: Box<Pending<B>>,
    busy: Busy,
    log: Option<access::Logged>,
}

impl<B> Later<B>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    /// The answer, its interim answers going where `interim` says.
    pub(crate) fn finish(
        self,
        interim: Interim<'_>,
    ) -> Pin<Box<impl Future<Output = Result<http::Response<Tracked>, Infallible>> + Send + 'static>>
    {
        let Later {
            proxy,
            pending,
            busy,
            log,
        } = self;
        let (opened, hook) = match interim {
            Interim::None => (None, None),
            Interim::Queued(queue) => (Some(queue.open()), None),
            Interim::Hook(hook) => (None, Some(hook)),
        };
        // Boxed: the connection moves the service's future whole a few times
        // per request; a box is cheaper than those copies.
        Box::pin(async move {
            let hook = hook.or_else(|| opened.as_ref().map(Opened::hook));
            let answer = proxy.finish(pending, hook);
            let response = match opened {
                Some(opened) => opened.run(answer).await,
                None => answer.await,
            };
            if let Some(log) = log {
                log.done(&response);
            }
            Ok(response.map(|body| Tracked::new(body, busy)))
        })
    }
}

/// Where a request's interim (1xx) answers go.
pub(crate) enum Interim<'a> {
    /// Nowhere (HTTP/1.0).
    None,
    /// Written beside hyper on the HTTP/1.1 connection (`interim`).
    Queued(&'a Arc<InterimQueue>),
    /// The HTTP/2 stream's own sender.
    Hook(InterimHook),
}

/// The service's future: a hit's answer at once, anything else boxed.
pub(crate) enum Answer<L> {
    Now(std::future::Ready<Result<http::Response<Tracked>, Infallible>>),
    Later(std::pin::Pin<Box<L>>),
}

impl<L> std::future::Future for Answer<L>
where
    L: std::future::Future<Output = Result<http::Response<Tracked>, Infallible>>,
{
    type Output = L::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<L::Output> {
        match self.get_mut() {
            Answer::Now(ready) => std::pin::Pin::new(ready).poll(cx),
            Answer::Later(later) => later.as_mut().poll(cx),
        }
    }
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

/// Waits for the threads of [`Acceptor::spawn_others`] to end.
pub(crate) async fn join(threads: Vec<std::thread::JoinHandle<std::io::Result<()>>>) {
    for thread in threads {
        // Joined off this runtime: it still runs the tasks the other threads'
        // last requests may need (the Redis connections).
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        if let Ok(Ok(Err(e))) = joined {
            tracing::warn!("a serving thread failed: {e}");
        }
    }
}
