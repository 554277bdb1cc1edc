//! Interim (1xx) answers to HTTP/1.1 clients: an origin's `103 Early Hints`
//! or `102 Processing` reaches the client whose request caused it, as it
//! arrives, ahead of the final answer (RFC 9110 §15.2: a proxy forwards them).
//!
//! hyper's server has no way to send a 1xx, so they are written to the
//! connection beside it: while hyper awaits the service for a request it
//! writes nothing of that request's answer, and the connection's IO
//! ([`InterimIo`]) puts the queued heads on the wire only where no message of
//! hyper's is half written — when hyper flushes (which it does only with its
//! own buffer empty) or before its next write after such a flush. The service
//! hands the final answer to hyper only once every head queued for the request
//! is written ([`Opened::run`]), and heads that arrive after that are dropped:
//! none can land inside an answer, or be taken for the next request's.
//!
//! Never stored, never shared: the hook goes with the request to the origin
//! client, and only the client whose load reached the origin has one there;
//! waiters on a coalesced load get the final answer only. HTTP/1.0 clients get
//! none (RFC 9110 §15.2). HTTP/2 clients get theirs on their stream (`h2`,
//! with [`forwarded`], the rule of which statuses go on, from here).

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, BytesMut};
use http::{HeaderMap, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::origin::InterimHook;

/// The most bytes of interim heads waiting for the client: past it, more are
/// dropped (they are hints; the final answer is unaffected).
const MAX_QUEUED: usize = 64 * 1024;

/// One connection's interim heads waiting to be written.
#[derive(Default)]
pub(crate) struct InterimQueue {
    state: Mutex<State>,
    /// Bytes are queued (read without the lock on every write and flush).
    pending: AtomicBool,
}

#[derive(Default)]
struct State {
    bytes: BytesMut,
    /// The request whose heads are taken (0: none).
    open: u64,
    last: u64,
    /// The connection task (polling the open request's service).
    waker: Option<Waker>,
}

impl InterimQueue {
    /// Takes the heads of the connection's next request, until its answer is handed on.
    pub(crate) fn open(self: &Arc<Self>) -> Opened {
        let id = self.with(|s| {
            s.last += 1;
            s.open = s.last;
            s.open
        });
        Opened {
            queue: Arc::clone(self),
            id,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut state)
    }

    /// Queues the head of an interim answer to request `id`, if it is still
    /// open, is one to forward, and the queue has room.
    fn push(&self, id: u64, status: StatusCode, headers: &HeaderMap) {
        if !forwarded(status) {
            return;
        }
        let mut fields = headers.clone();
        herdguard_http::hop::remove_hop_by_hop(&mut fields);
        let waker = self.with(|s| {
            if s.open != id || s.bytes.len() > MAX_QUEUED {
                return None;
            }
            encode(status, &fields, &mut s.bytes);
            self.pending.store(true, Ordering::Release);
            s.waker.clone()
        });
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Interim statuses forwarded: all but `100 Continue` (this hop's: the proxy
/// sends its own to a client that expects one, and never asks the origin for
/// one) and `101 Switching Protocols` (no upgrade is forwarded).
pub(crate) fn forwarded(status: StatusCode) -> bool {
    status.is_informational()
        && status != StatusCode::CONTINUE
        && status != StatusCode::SWITCHING_PROTOCOLS
}

/// An HTTP/1.1 interim head: status line, fields, blank line.
fn encode(status: StatusCode, fields: &HeaderMap, out: &mut BytesMut) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in fields {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// One request's hold on its connection's interim heads.
pub(crate) struct Opened {
    queue: Arc<InterimQueue>,
    id: u64,
}

impl Opened {
    /// The hook the origin client calls with each interim answer.
    pub(crate) fn hook(&self) -> InterimHook {
        let (queue, id) = (Arc::clone(&self.queue), self.id);
        InterimHook(Arc::new(move |status: StatusCode, headers: &HeaderMap| {
            queue.push(id, status, headers)
        }))
    }

    /// Runs the request's service `answer`, then closes the request and waits
    /// until the heads queued for it are written (or the connection fails),
    /// so the final answer goes after them.
    pub(crate) async fn run<F: Future>(self, answer: F) -> F::Output {
        let mut answer = pin!(answer);
        let output = std::future::poll_fn(|cx| {
            self.queue.with(|s| match &s.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => s.waker = Some(cx.waker().clone()),
            });
            answer.as_mut().poll(cx)
        })
        .await;
        std::future::poll_fn(|cx| {
            self.queue.with(|s| {
                s.open = 0;
                if s.bytes.is_empty() {
                    Poll::Ready(())
                } else {
                    s.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
        })
        .await;
        output
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        self.queue.with(|s| {
            if s.open == self.id {
                s.open = 0;
            }
        });
    }
}

/// A connection's IO, writing its queued interim heads between hyper's messages.
pub(crate) struct InterimIo<T> {
    inner: T,
    queue: Arc<InterimQueue>,
    /// Every byte hyper wrote is part of a whole message: it flushed since.
    clean: bool,
}

impl<T> InterimIo<T> {
    pub(crate) fn new(inner: T, queue: Arc<InterimQueue>) -> Self {
        InterimIo {
            inner,
            queue,
            clean: true,
        }
    }
}

impl<T: AsyncWrite + Unpin> InterimIo<T> {
    /// Writes the queued heads, if any and if hyper is between messages.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.clean || !self.queue.pending.load(Ordering::Acquire) {
            return Poll::Ready(Ok(()));
        }
        let mut state = self.queue.state.lock().unwrap_or_else(|e| e.into_inner());
        while !state.bytes.is_empty() {
            match Pin::new(&mut self.inner).poll_write(cx, &state.bytes) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => state.bytes.advance(n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.queue.pending.store(false, Ordering::Release);
        // The request's service may be waiting for this, to hand its answer on.
        if let Some(waker) = state.waker.take() {
            drop(state);
            waker.wake();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for InterimIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for InterimIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_drain(cx))?;
        let n = std::task::ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.clean &= n == 0;
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_drain(cx))?;
        let n = std::task::ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        this.clean &= n == 0;
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // hyper flushes its IO only once its own buffer is written out: every
        // message it began is whole on the wire.
        this.clean = true;
        std::task::ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_encoded_without_hop_by_hop_fields_and_only_for_the_open_request() {
        let queue = Arc::new(InterimQueue::default());
        let first = queue.open();
        let hook = first.hook();
        let mut fields = HeaderMap::new();
        fields.insert("link", "</a.css>; rel=preload".parse().unwrap());
        fields.insert("connection", "x-hop".parse().unwrap());
        fields.insert("x-hop", "1".parse().unwrap());
        hook.0.interim(StatusCode::from_u16(103).unwrap(), &fields);
        hook.0.interim(StatusCode::CONTINUE, &fields);
        hook.0.interim(StatusCode::SWITCHING_PROTOCOLS, &fields);
        hook.0.interim(StatusCode::PROCESSING, &HeaderMap::new());
        let queued = queue.with(|s| s.bytes.clone());
        assert_eq!(
            &queued[..],
            b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n"
        );
        queue.with(|s| s.bytes.clear());
        drop(first);
        // Closed: a late head of the first request is dropped, also once the
        // next request is open.
        hook.0.interim(StatusCode::PROCESSING, &HeaderMap::new());
        let _second = queue.open();
        hook.0.interim(StatusCode::PROCESSING, &HeaderMap::new());
        assert!(queue.with(|s| s.bytes.is_empty()));
    }

    /// An origin that floods interim answers to a client that reads none of
    /// them fills the connection's queue up to its bound, not further.
    #[test]
    fn an_origins_endless_interim_heads_stay_within_the_queue_bound() {
        let queue = Arc::new(InterimQueue::default());
        let open = queue.open();
        let hook = open.hook();
        let mut fields = HeaderMap::new();
        fields.insert("link", "</a.css>; rel=preload; as=style".parse().unwrap());
        for _ in 0..10_000 {
            hook.0.interim(StatusCode::from_u16(103).unwrap(), &fields);
        }
        let head =
            "HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload; as=style\r\n\r\n".len();
        let queued = queue.with(|s| s.bytes.len());
        assert!(
            queued > MAX_QUEUED && queued <= MAX_QUEUED + head,
            "{queued} bytes queued for a bound of {MAX_QUEUED}"
        );
    }
}
