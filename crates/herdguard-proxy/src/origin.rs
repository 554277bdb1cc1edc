//! The origin client: pooled keep-alive connections, a timeout for the answer's
//! head, bodies streamed both ways, and an error for each way the origin can fail.
//!
//! `https://` origins are reached with rustls (SNI from the origin URL's host),
//! trusting the bundled web PKI roots, or only the private CA given as
//! `--origin-ca`; HTTP/2 is used when the origin offers it by ALPN, HTTP/1.1
//! otherwise. A certificate the roots do not vouch for is [`OriginError::Tls`].
//!
//! Framing is never copied from the client: `Content-Length` and
//! `Transfer-Encoding` are removed and hyper frames the request from the body it
//! is given, so the origin always receives exactly the bytes its framing says.
//!
//! # Admission
//!
//! At most `max_origin_requests` requests are at the origin at once, whatever
//! sends them: a miss's or revalidation's load (one for all the callers it
//! coalesces), a pass-through, another method. A request holds its slot from
//! before it is sent until its answer's body has ended or been dropped. Past
//! the cap, a request waits for a slot (first come, first served) at most
//! `origin_queue_timeout_ms`, then fails with [`OriginError::Busy`]: the client
//! gets `503` with `Retry-After` (or a stale answer its `stale-if-error`
//! allows), `herdguard_proxy_origin_requests_refused_total` counts it, and a
//! warning says so at most every [`WARN_EVERY`].

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::body::Body;
use crate::stats::Stats;

/// The log target of origin events (docs/observability.md: "Logs and lock metrics").
const LOG_TARGET: &str = "herdguard::origin";

/// Why the origin gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// No answer (head, or the part of the body the cache reads) within the origin timeout.
    #[error("origin did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed or was reset, or the answer was not valid HTTP.
    #[error("origin unreachable or sent an invalid response: {0}")]
    Failed(String),
    /// The TLS handshake with an `https://` origin failed (most often: a
    /// certificate the trusted roots do not vouch for, or for another name).
    #[error("origin TLS handshake failed: {0}")]
    Tls(String),
    /// The origin answered with a server error (500, 502, 503, 504). Only the
    /// caller whose load it was gets the origin's answer itself; a stale response
    /// may stand in (RFC 5861 stale-if-error).
    #[error("origin answered {0}")]
    ServerError(StatusCode),
    /// The client's request body stalled on its way to the origin.
    #[error("request body stalled for {0:?}")]
    RequestBodyStalled(Duration),
    /// The client's request body went over the request body limit on its way.
    #[error("request body too large")]
    RequestBodyTooLarge,
    /// No origin slot came free within the queue timeout (`max_origin_requests`
    /// were in flight): not sent.
    #[error("{0} origin requests in flight: no slot within {1:?}")]
    Busy(usize, Duration),
}

impl OriginError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            OriginError::Timeout(_) => "timeout",
            OriginError::Failed(_) => "failed",
            OriginError::Tls(_) => "tls",
            OriginError::ServerError(_) => "server_error",
            OriginError::RequestBodyStalled(_) | OriginError::RequestBodyTooLarge => "client_body",
            OriginError::Busy(..) => "busy",
        }
    }
}

/// Where the origin's interim (1xx) answers to one request go: the client
/// connection of the request that caused it (`listen::interim`).
#[derive(Clone)]
pub(crate) struct InterimHook(pub(crate) Arc<dyn InterimSink>);

/// What takes one interim answer's status and fields: a closure, or a type
/// of its own (so that one allocation can be both the hook and its state).
pub(crate) trait InterimSink: Send + Sync {
    fn interim(&self, status: StatusCode, fields: &HeaderMap);
}

impl<F: Fn(StatusCode, &HeaderMap) + Send + Sync> InterimSink for F {
    fn interim(&self, status: StatusCode, fields: &HeaderMap) {
        self(status, fields)
    }
}

/// An origin answer: the head, and the body still to be read.
#[derive(Debug)]
pub struct OriginResponse {
    /// Status code.
    pub status: StatusCode,
    /// End-to-end header fields (hop-by-hop ones removed).
    pub headers: HeaderMap,
    /// The body, as it arrives.
    pub body: OriginBody,
    /// When the request was sent.
    pub request_time: SystemTime,
    /// When the head arrived.
    pub response_time: SystemTime,
}

/// A body read up to a limit.
pub(crate) enum Buffered {
    /// The whole body.
    Whole(Bytes),
    /// More than the limit: what was read, and the rest still to come.
    TooLarge(Bytes, OriginBody),
    /// The body broke off (reset, cut short of its framing, or too slow):
    /// what arrived before, and why.
    Broken(Bytes, OriginError),
}

/// Which roots an `https://` origin's certificate must chain to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum OriginTrust {
    /// The web PKI roots bundled in the binary (Mozilla's, via `webpki-roots`).
    #[default]
    WebPki,
    /// Only these CA certificates (a private CA, `--origin-ca`), PEM text.
    Pem(Vec<u8>),
}

impl OriginTrust {
    /// The root store; an error names what is wrong with the PEM.
    pub(crate) fn roots(&self) -> Result<rustls::RootCertStore, String> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::CertificateDer;
        let mut roots = rustls::RootCertStore::empty();
        match self {
            OriginTrust::WebPki => {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
            OriginTrust::Pem(pem) => {
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|e| format!("not a PEM certificate: {e}"))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("not a usable CA certificate: {e}"))?;
                }
                if roots.is_empty() {
                    return Err("no CERTIFICATE block in the PEM".into());
                }
            }
        }
        Ok(roots)
    }
}

/// Client of one origin.
#[derive(Clone)]
pub struct Origin {
    client: Client<HttpsConnector<HttpConnector>, Body>,
    scheme: Scheme,
    authority: Authority,
    base_path: String,
    timeout: Duration,
    /// The cap on requests in flight (`None`: none).
    admission: Option<Arc<Admission>>,
}

/// How often, at most, a refusal for want of an origin slot is logged.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(10);

/// The origin slots (the module docs).
pub(crate) struct Admission {
    slots: Arc<Semaphore>,
    max: usize,
    queue_timeout: Duration,
    stats: Arc<Stats>,
    /// When a refusal was last logged, milliseconds since `started`.
    warned_at: AtomicU64,
    started: Instant,
}

impl Admission {
    /// `max` requests in flight at once; past it, a wait of at most
    /// `queue_timeout`; counted in `stats`.
    pub(crate) fn new(max: usize, queue_timeout: Duration, stats: Arc<Stats>) -> Self {
        Admission {
            slots: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            max,
            queue_timeout,
            stats,
            warned_at: AtomicU64::new(u64::MAX),
            started: Instant::now(),
        }
    }

    /// A slot, at once or within the queue timeout.
    async fn admit(&self) -> Result<Slot, OriginError> {
        let permit = match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let waited = tokio::time::timeout(
                    self.queue_timeout,
                    Arc::clone(&self.slots).acquire_owned(),
                );
                match waited.await {
                    Ok(Ok(permit)) => permit,
                    _ => return Err(self.refuse()),
                }
            }
        };
        self.stats.origin_in_flight.open();
        Ok(Slot {
            _permit: permit,
            stats: Arc::clone(&self.stats),
        })
    }

    fn refuse(&self) -> OriginError {
        self.stats.origin_refused.inc();
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.warned_at.load(Ordering::Relaxed);
        let due = last == u64::MAX || now.saturating_sub(last) >= WARN_EVERY.as_millis() as u64;
        if due
            && self
                .warned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                target: LOG_TARGET,
                max_origin_requests = self.max,
                waited = ?self.queue_timeout,
                refused_total = self.stats.origin_refused.get(),
                "origin requests refused: every origin slot busy (503 with Retry-After)"
            );
        }
        OriginError::Busy(self.max, self.queue_timeout)
    }
}

/// One origin request's slot, given back when dropped.
struct Slot {
    _permit: OwnedSemaphorePermit,
    stats: Arc<Stats>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.stats.origin_in_flight.close();
    }
}

/// An origin answer's body, as it arrives; it holds the request's origin slot
/// until it ends or is dropped.
pub struct OriginBody {
    body: Incoming,
    slot: Option<Slot>,
}

impl std::fmt::Debug for OriginBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginBody").finish_non_exhaustive()
    }
}

impl hyper::body::Body for OriginBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if matches!(frame, Poll::Ready(None | Some(Err(_)))) {
            this.slot = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Origin {
    /// A client of `base` (an `http://` or `https://host[:port][/prefix]` URL);
    /// `trust` decides the roots of an `https://` origin's certificate. With
    /// `http1_only` it never offers h2 (requests that carry their own `Host`,
    /// which HTTP/2 would have to send as `:authority`, the connection's name).
    pub fn new(
        base: &Uri,
        trust: &OriginTrust,
        (connect_timeout, timeout): (Duration, Duration),
        http1_only: bool,
    ) -> Result<Self, String> {
        let scheme = base
            .scheme()
            .cloned()
            .ok_or("the URL needs a scheme (http:// or https://)")?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err("only http:// and https:// origins are supported".into());
        }
        let authority = base.authority().cloned().ok_or("the URL needs a host")?;
        HeaderValue::from_str(authority.as_str())
            .map_err(|_| "the host is not a valid Host value")?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        // The TLS stream is made by hyper-rustls, so the TCP connector must accept https URLs.
        connector.enforce_http(false);
        // ring, named explicitly: no process-wide default provider is needed.
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(trust.roots()?)
        .with_no_client_auth();
        // ALPN offers h2 and http/1.1; hyper's client speaks whichever the origin picks.
        let builder = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1();
        let connector = if http1_only {
            builder.wrap_connector(connector)
        } else {
            builder.enable_http2().wrap_connector(connector)
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(connector);
        Ok(Origin {
            client,
            scheme,
            authority,
            base_path: base.path().trim_end_matches('/').to_string(),
            timeout,
            admission: None,
        })
    }

    /// This client with its requests in flight capped by `admission`.
    pub(crate) fn admitting(mut self, admission: Admission) -> Self {
        self.admission = Some(Arc::new(admission));
        self
    }

    /// The origin timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `method target` (a normalised origin-form target, appended to the
    /// base path) with `headers` (end-to-end fields, as forwarded) and `body`, and
    /// waits for the answer's head within the origin timeout — once it has an
    /// origin slot (the module docs). Interim answers go to `interim` as they
    /// arrive (from an HTTP/1.1 origin: hyper's client reports none of an HTTP/2 one).
    pub(crate) async fn send(
        &self,
        method: Method,
        target: &str,
        mut headers: HeaderMap,
        body: Body,
        interim: Option<&InterimHook>,
    ) -> Result<OriginResponse, OriginError> {
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(format!("{}{}", self.base_path, target))
            .build()
            .map_err(|e| OriginError::Failed(format!("bad target URI: {e}")))?;
        let slot = match &self.admission {
            Some(admission) => Some(admission.admit().await?),
            None => None,
        };
        // The body decides the framing; the client's framing fields never pass.
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::TRANSFER_ENCODING);
        // The client names the origin from the URI: `Host` over HTTP/1.1 (with a
        // non-default port), `:authority` alone over HTTP/2 — a `Host` beside it
        // is a duplicate that servers such as nginx refuse (400). A `Host` here
        // is the client's, kept (`keep_client_host`, which speaks HTTP/1.1 to
        // the origin for that reason).
        // The timeout runs from the end of the request body: a long upload is
        // limited by its own inactivity limit, not by the origin's.
        let (sent, body_sent) = tokio::sync::oneshot::channel::<()>();
        let body = match body {
            Body::Full(bytes) => {
                drop(sent);
                Body::Full(bytes)
            }
            stream => Body::stream(Signalled {
                body: stream,
                sent: Some(sent),
            }),
        };
        // An idempotent request with its body in hand can be sent again should
        // an HTTP/2 origin refuse it unprocessed (see `unprocessed`).
        let replay = match &body {
            Body::Full(bytes) if method.is_idempotent() => {
                Some((method.clone(), uri.clone(), headers.clone(), bytes.clone()))
            }
            _ => None,
        };
        let build = |method, uri, headers, body| {
            let mut request = Request::new(body);
            *request.method_mut() = method;
            *request.uri_mut() = uri;
            *request.headers_mut() = headers;
            if let Some(InterimHook(hook)) = interim {
                let hook = Arc::clone(hook);
                hyper::ext::on_informational(&mut request, move |r| {
                    hook.interim(r.status(), r.headers())
                });
            }
            request
        };
        let request = build(method, uri, headers, body);
        let request_time = SystemTime::now();
        let timeout = self.timeout;
        let deadline = async move {
            let _ = body_sent.await;
            tokio::time::sleep(timeout).await;
        };
        let exchange = async {
            match self.client.request(request).await {
                Err(e) if unprocessed(&e) => match replay {
                    Some((method, uri, headers, bytes)) => {
                        let again = build(method, uri, headers, Body::Full(bytes));
                        self.client.request(again).await
                    }
                    None => Err(e),
                },
                answer => answer,
            }
        };
        let response = tokio::select! {
            r = exchange => r.map_err(request_error)?,
            () = deadline => return Err(OriginError::Timeout(timeout)),
        };
        let (mut parts, body) = response.into_parts();
        herdguard_http::hop::remove_hop_by_hop(&mut parts.headers);
        Ok(OriginResponse {
            status: parts.status,
            headers: parts.headers,
            body: OriginBody { body, slot },
            request_time,
            response_time: SystemTime::now(),
        })
    }
}

/// Reads `body` until it ends or holds more than `max` bytes, by `deadline`
/// (`limit` is the timeout that deadline stands for, for the error).
pub(crate) async fn read_up_to(
    mut body: OriginBody,
    max: usize,
    deadline: Instant,
    limit: Duration,
) -> Buffered {
    let mut buf = BytesMut::new();
    loop {
        let frame = match tokio::time::timeout_at(deadline.into(), body.frame()).await {
            Err(_) => return Buffered::Broken(buf.freeze(), OriginError::Timeout(limit)),
            Ok(None) => return Buffered::Whole(buf.freeze()),
            Ok(Some(Err(e))) => {
                let error = OriginError::Failed(format!("reading the body: {e}"));
                return Buffered::Broken(buf.freeze(), error);
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
            if buf.len() > max {
                return Buffered::TooLarge(buf.freeze(), body);
            }
        }
    }
}

/// Whether an HTTP/2 origin ended the request's stream without processing it:
/// it refused the stream (`REFUSED_STREAM`, RFC 9113 §8.7), or its `GOAWAY`
/// closed the connection past the stream (§6.8) — routine when an origin
/// rotates connections (nginx after `keepalive_requests`). An idempotent
/// request may be sent again (RFC 9110 §9.2.2), on another connection.
fn unprocessed(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away() && h2.is_remote());
        }
        source = s.source();
    }
    false
}

/// A client error, told apart by its cause: the request body's own failures are
/// the client's, not the origin's.
fn request_error(e: hyper_util::client::legacy::Error) -> OriginError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(stalled) = s.downcast_ref::<crate::body::BodyStalled>() {
            return OriginError::RequestBodyStalled(stalled.limit);
        }
        if s.is::<http_body_util::LengthLimitError>() {
            return OriginError::RequestBodyTooLarge;
        }
        if let Some(tls) = rustls_error(s) {
            tracing::warn!(
                target: LOG_TARGET,
                error = %error_chain(&e),
                "origin TLS handshake failed"
            );
            return OriginError::Tls(tls.to_string());
        }
        source = s.source();
    }
    OriginError::Failed(error_chain(&e))
}

/// The rustls error `e` is or wraps: tokio-rustls and hyper-rustls hand it
/// inside (nested) io::Errors, whose `source()` skips the wrapped error itself.
fn rustls_error<'a>(mut e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    for _ in 0..4 {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        e = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    }
    None
}

/// A request body that says when it has been sent (its end, an error, or dropped).
struct Signalled {
    body: Body,
    sent: Option<tokio::sync::oneshot::Sender<()>>,
}

impl hyper::body::Body for Signalled {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let frame = std::pin::Pin::new(&mut this.body).poll_frame(cx);
        if matches!(frame, std::task::Poll::Ready(None | Some(Err(_)))) {
            this.sent = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        hyper::body::Body::is_end_stream(&self.body)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::Body::size_hint(&self.body)
    }
}

/// The error and its causes on one line (hyper's top-level message alone is vague).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
