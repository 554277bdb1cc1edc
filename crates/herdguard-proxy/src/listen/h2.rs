//! HTTP/2 connections, served with the `h2` crate itself rather than through
//! hyper: hyper's HTTP/2 server keeps each stream's sender to itself, so it
//! cannot forward an origin's interim answers (`103 Early Hints`, `102
//! Processing`), and `h2`'s sender can (RFC 9110 §15.2: a proxy forwards them).
//!
//! What is here is what hyper's own HTTP/2 server does, minus what the sidecar
//! does not use (CONNECT tunnels, adaptive windows): the same `h2` settings and
//! limits as the module docs of `acceptor` promise, the answer's body sent as
//! the client's flow-control window allows (the next frame is asked of the body
//! only once the last could be sent, which is what `limits::Tracked` and the
//! progress rule of `drive` count on), keep-alive pings, and a graceful stop.
//! Unlike hyper, a stream gets a task only when it must wait: a plain hit
//! (`Requests::begin`) is answered on the connection's task as it is accepted,
//! head and — window allowing — body.
//!
//! Interim answers take the rules of `interim` ([`forwarded`], hop-by-hop
//! fields removed): only the stream whose request reached the origin has the
//! hook; they go out on that stream, ahead of its final answer (the stream's
//! frames are sent in order), and those that arrive after it are dropped.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use h2::server::{Connection, Handshake, SendResponse};
use h2::{Ping, PingPong, Reason, RecvStream, SendStream};
use http::header::{CONTENT_LENGTH, DATE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;

use super::acceptor::{Begin, Interim, Later, Requests};
use super::interim::forwarded;
use super::limits::Tracked;
use crate::origin::{InterimHook, InterimSink};

/// The stream and connection windows, frame size and send buffer hyper's
/// server uses (a server's clients are many: the protocol's 64 KiB windows
/// slow every upload).
const WINDOW: u32 = 1024 * 1024;
const MAX_FRAME_SIZE: u32 = 16 * 1024;
const MAX_SEND_BUFFER: usize = 400 * 1024;
/// Streams the server may reset for the client's errors before GOAWAY.
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// The most bytes of interim heads one request's stream forwards (as HPACK
/// counts fields, and 32 a head); later ones are dropped (they are hints: the
/// final answer is unaffected). Headers are not flow-controlled, so this bounds
/// what a hostile origin can make a connection buffer for a client that does
/// not read (a stream's worth times its streams, until the write limit).
const MAX_INTERIM_BYTES: usize = 16 * 1024;

/// What a head costs of [`MAX_INTERIM_BYTES`] besides its fields.
const HEAD_COST: usize = 32;

/// The `h2` server settings of every HTTP/2 connection of a listener: header
/// lists of at most `max_header_list` bytes, `max_streams` requests in flight,
/// `max_pending_resets` resets of streams not yet taken up (rapid reset).
pub(crate) fn settings(
    max_header_list: u32,
    max_streams: u32,
    max_pending_resets: usize,
) -> h2::server::Builder {
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .max_header_list_size(max_header_list)
        .max_concurrent_streams(max_streams)
        .max_pending_accept_reset_streams(max_pending_resets);
    builder
}

/// One HTTP/2 connection, served until it ends: a future for `drive`.
pub(crate) struct H2Conn<T: AsyncRead + AsyncWrite + Unpin> {
    state: State<T>,
    requests: Requests,
    keep_alive: KeepAlive,
    /// A graceful stop asked for during the handshake.
    close_pending: bool,
}

enum State<T> {
    Handshaking(Handshake<T, Bytes>),
    Serving(Connection<T, Bytes>),
}

impl<T: AsyncRead + AsyncWrite + Unpin> H2Conn<T> {
    /// Serves `io` with `settings`, each request answered by `requests`; a ping
    /// every `ping_every`, answered within `pong_within` or the connection is closed.
    pub(crate) fn new(
        io: T,
        settings: &h2::server::Builder,
        requests: Requests,
        (ping_every, pong_within): (Duration, Duration),
    ) -> Self {
        requests.multiplexed();
        H2Conn {
            state: State::Handshaking(settings.handshake(io)),
            requests,
            keep_alive: KeepAlive {
                every: ping_every,
                within: pong_within,
                pings: None,
                timer: Box::pin(tokio::time::sleep(ping_every)),
                awaiting: false,
            },
            close_pending: false,
        }
    }

    /// GOAWAY: no new streams; the connection ends once those open are answered.
    pub(crate) fn graceful_shutdown(&mut self) {
        match &mut self.state {
            State::Handshaking(_) => self.close_pending = true,
            State::Serving(conn) => conn.graceful_shutdown(),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Future for H2Conn<T> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Handshaking(handshake) => {
                    match std::task::ready!(Pin::new(handshake).poll(cx)) {
                        Ok(mut conn) => {
                            if this.close_pending {
                                conn.graceful_shutdown();
                            }
                            this.keep_alive.pings = conn.ping_pong();
                            this.state = State::Serving(conn);
                        }
                        Err(e) => {
                            tracing::debug!(target: "herdguard::serve", "HTTP/2 handshake failed: {e}");
                            return Poll::Ready(());
                        }
                    }
                }
                State::Serving(conn) => {
                    if this.keep_alive.poll_timed_out(cx).is_ready() {
                        tracing::debug!(target: "herdguard::serve", "HTTP/2 ping not answered: connection closed");
                        conn.abrupt_shutdown(Reason::NO_ERROR);
                    }
                    match std::task::ready!(conn.poll_accept(cx)) {
                        Some(Ok((request, reply))) => stream(request, reply, &this.requests, cx),
                        Some(Err(e)) => {
                            tracing::debug!(target: "herdguard::serve", "HTTP/2 connection error: {e}");
                            return Poll::Ready(());
                        }
                        None => return Poll::Ready(()),
                    }
                }
            }
        }
    }
}

/// Keep-alive pings: one every `every`, its pong due within `within`.
struct KeepAlive {
    every: Duration,
    within: Duration,
    pings: Option<PingPong>,
    timer: Pin<Box<Sleep>>,
    awaiting: bool,
}

impl KeepAlive {
    /// Ready when a ping went unanswered for `within`.
    fn poll_timed_out(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(pings) = &mut self.pings else {
            return Poll::Pending;
        };
        loop {
            if self.awaiting {
                match pings.poll_pong(cx) {
                    Poll::Ready(Ok(_)) => {
                        self.awaiting = false;
                        let next = tokio::time::Instant::now() + self.every;
                        self.timer.as_mut().reset(next);
                    }
                    // The connection failed: `poll_accept` says so.
                    Poll::Ready(Err(_)) => return Poll::Pending,
                    Poll::Pending => {}
                }
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if self.awaiting {
                return Poll::Ready(());
            }
            if pings.send_ping(Ping::opaque()).is_err() {
                return Poll::Pending;
            }
            self.awaiting = true;
            let due = tokio::time::Instant::now() + self.within;
            self.timer.as_mut().reset(due);
        }
    }
}

/// One stream's sender, shared with the origin's interim answers (it is their
/// hook) until the final answer takes it.
struct SharedReply(Mutex<Reply>);

struct Reply {
    sender: Option<SendResponse<Bytes>>,
    /// Interim head bytes this stream may still forward.
    interim_budget: usize,
}

impl SharedReply {
    fn lock(&self) -> std::sync::MutexGuard<'_, Reply> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl InterimSink for SharedReply {
    /// Sends an origin's interim answer on the stream, if it is one to
    /// forward, the final answer has not gone, and the budget allows.
    fn interim(&self, status: StatusCode, fields: &HeaderMap) {
        if !forwarded(status) {
            return;
        }
        let mut head = Response::new(());
        *head.status_mut() = status;
        *head.headers_mut() = fields.clone();
        herdguard_http::hop::remove_hop_by_hop(head.headers_mut());
        let size = HEAD_COST
            + head
                .headers()
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len() + 32)
                .sum::<usize>();
        let mut reply = self.lock();
        if size > reply.interim_budget {
            return;
        }
        reply.interim_budget -= size;
        if let Some(sender) = reply.sender.as_mut() {
            // An error is the stream's end: the final answer finds it too.
            let _ = sender.send_informational(head);
        }
    }
}

/// One stream, on the connection's task: a plain hit is answered here and
/// now (head and, window allowing, body), and only what must wait — a body
/// the window holds back, a request that is not a plain hit — gets a task.
fn stream(
    request: Request<RecvStream>,
    sender: SendResponse<Bytes>,
    requests: &Requests,
    cx: &mut Context<'_>,
) {
    let (parts, body) = request.into_parts();
    let content_length = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let request = Request::from_parts(
        parts,
        RecvBody {
            stream: body,
            content_length,
            data_done: false,
        },
    );
    match requests.begin(request) {
        Begin::Answered(response) => {
            if let Some(mut sending) = respond(response, sender) {
                // Polled with the connection's waker first: a hit's one chunk
                // goes out now; a wake-up it leaves there is harmless.
                if Pin::new(&mut sending).poll(cx).is_pending() {
                    tokio::spawn(sending);
                }
            }
        }
        Begin::Later(later) => {
            tokio::spawn(answer_later(later, sender));
        }
    }
}

/// A request that is not a plain hit: answered on a task of its own
/// (abandoned if the client resets the stream), the stream's sender shared
/// with the origin's interim answers until the final answer takes it.
async fn answer_later(later: Later<RecvBody>, sender: SendResponse<Bytes>) {
    let reply = Arc::new(SharedReply(Mutex::new(Reply {
        sender: Some(sender),
        interim_budget: MAX_INTERIM_BYTES,
    })));
    let hook = InterimHook(Arc::clone(&reply) as Arc<dyn InterimSink>);
    let mut answer = later.finish(Interim::Hook(hook));
    let response = poll_fn(|cx| {
        if let Poll::Ready(answered) = answer.as_mut().poll(cx) {
            let Ok(response) = answered;
            return Poll::Ready(Some(response));
        }
        match reply.lock().sender.as_mut().map(|s| s.poll_reset(cx)) {
            Some(Poll::Pending) => Poll::Pending,
            _ => Poll::Ready(None),
        }
    })
    .await;
    // Taken: interim answers still to come are dropped.
    let sender = reply.lock().sender.take();
    if let (Some(response), Some(sender)) = (response, sender) {
        if let Some(sending) = respond(response, sender) {
            sending.await;
        }
    }
}

/// Sends the final answer's head; its body, if any, is what the returned
/// [`Sending`] sends.
fn respond(response: Response<Tracked>, mut sender: SendResponse<Bytes>) -> Option<Sending> {
    let (mut head, body) = response.into_parts();
    // One scan of the names (cheaper than a lookup each): HTTP/2 forbids
    // connection-specific fields (h2 refuses to send them), and `Date` and the
    // length are added where missing (a stored answer has both).
    let (mut hop_by_hop, mut date, mut length) = (false, false, false);
    for name in head.headers.keys() {
        if name == DATE {
            date = true;
        } else if name == CONTENT_LENGTH {
            length = true;
        } else {
            hop_by_hop |= herdguard_http::hop::is_hop_by_hop(name.as_str());
        }
    }
    if hop_by_hop {
        // `Connection` may have named either.
        herdguard_http::hop::remove_hop_by_hop(&mut head.headers);
        date = head.headers.contains_key(DATE);
        length = head.headers.contains_key(CONTENT_LENGTH);
    }
    if !date {
        if let Some(now) = http_date() {
            head.headers.insert(DATE, now);
        }
    }
    let end = body.is_end_stream();
    if !end && !length {
        if let Some(len) = body.size_hint().exact() {
            head.headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
        }
    }
    match sender.send_response(Response::from_parts(head, ()), end) {
        Ok(tx) if !end => Some(Sending {
            body,
            tx,
            chunk: None,
        }),
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(target: "herdguard::serve", "HTTP/2 answer not sent: {e}");
            sender.send_reset(Reason::INTERNAL_ERROR);
            None
        }
    }
}

/// An answer's body being sent on its stream: a frame is asked of the body
/// only once the last one had window to go (so a client that grants none
/// holds one frame, and the progress rule sees it); ends early if the client
/// resets the stream.
struct Sending {
    body: Tracked,
    tx: SendStream<Bytes>,
    /// A chunk taken from the body, waiting for window, and whether it is the last.
    chunk: Option<(Bytes, bool)>,
}

impl Future for Sending {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Sending { body, tx, chunk } = self.get_mut();
        loop {
            let Some((data, end)) = chunk else {
                let frame = match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(frame) => frame,
                    Poll::Pending => {
                        if tx.poll_reset(cx).is_ready() {
                            return Poll::Ready(());
                        }
                        return Poll::Pending;
                    }
                };
                let frame = match frame {
                    None => {
                        let _ = tx.send_data(Bytes::new(), true);
                        return Poll::Ready(());
                    }
                    Some(Err(e)) => {
                        tracing::debug!(target: "herdguard::serve", "HTTP/2 answer body failed: {e}");
                        tx.send_reset(Reason::INTERNAL_ERROR);
                        return Poll::Ready(());
                    }
                    Some(Ok(frame)) => frame,
                };
                match frame.into_data() {
                    Ok(data) => {
                        if !data.is_empty() {
                            // A claim of one byte, not the chunk: h2 raises it to what is
                            // buffered, and a large claim held while waiting starves other streams.
                            tx.reserve_capacity(1);
                        }
                        *chunk = Some((data, body.is_end_stream()));
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            tx.reserve_capacity(0);
                            let _ = tx.send_trailers(trailers);
                            return Poll::Ready(());
                        }
                    }
                }
                continue;
            };
            if !data.is_empty() && tx.capacity() == 0 {
                if tx.poll_reset(cx).is_ready() {
                    return Poll::Ready(());
                }
                match std::task::ready!(tx.poll_capacity(cx)) {
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return Poll::Ready(()),
                }
            }
            let end = *end;
            let data = std::mem::take(data);
            *chunk = None;
            if tx.send_data(data, end).is_err() || end {
                return Poll::Ready(());
            }
        }
    }
}

/// The `Date` field for now (RFC 9110 §6.6.1), formatted once a second per thread.
fn http_date() -> Option<HeaderValue> {
    thread_local! {
        static DATE: std::cell::RefCell<Option<(u64, HeaderValue)>> = const { std::cell::RefCell::new(None) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
    DATE.with(|cached| {
        let mut cached = cached.borrow_mut();
        match &*cached {
            Some((at, value)) if *at == second => Some(value.clone()),
            _ => {
                let value = HeaderValue::try_from(httpdate::fmt_http_date(now)).ok()?;
                *cached = Some((second, value.clone()));
                Some(value)
            }
        }
    })
}

/// A request's body from its stream, the window given back as it is read.
pub(crate) struct RecvBody {
    stream: RecvStream,
    content_length: Option<u64>,
    data_done: bool,
}

impl HttpBody for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = self.get_mut();
        if !this.data_done {
            match std::task::ready!(this.stream.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.data_done = true,
            }
        }
        this.stream
            .poll_trailers(cx)
            .map(|trailers| trailers.transpose().map(|t| t.map(Frame::trailers)))
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.content_length
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

/// What a connection that speaks HTTP/2 by prior knowledge opens with.
pub(crate) const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads a connection's first bytes until they are the HTTP/2 preface (true)
/// or cannot be (false): the connection with those bytes put back.
pub(crate) async fn sniff<T: AsyncRead + Unpin>(mut io: T) -> std::io::Result<(bool, Prefixed<T>)> {
    use tokio::io::AsyncReadExt;
    let mut first = [0u8; PREFACE.len()];
    let mut len = 0;
    while len < first.len() && first[..len] == PREFACE[..len] {
        match io.read(&mut first[len..]).await? {
            0 => break,
            n => len += n,
        }
    }
    let http2 = first[..len] == PREFACE[..];
    Ok((
        http2,
        Prefixed {
            first,
            at: 0,
            len,
            io,
        },
    ))
}

/// A connection whose first bytes were read ahead: they are read again first.
pub(crate) struct Prefixed<T> {
    first: [u8; PREFACE.len()],
    at: usize,
    len: usize,
    io: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.len {
            let n = buf.remaining().min(this.len - this.at);
            buf.put_slice(&this.first[this.at..this.at + n]);
            this.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
