//! Per-connection time limits, enforced on the socket itself: how long a client
//! may take to send a request head, how long a keep-alive connection may sit
//! idle, and how long a write to a client that stopped reading may stay stuck.
//! (The request-body limit is on the body: [`crate::body::Inactivity`].)
//!
//! hyper's own header timeout also runs while a keep-alive connection waits for
//! its next request, so it cannot tell "idle" from "slow head"; [`TimedIo`] can,
//! because the service tells it when a request starts and when its answer is done.
//!
//! An HTTP/2 connection carries many requests at once: it is busy while any of
//! them is answered, and idle only when none is. Its bytes between requests are
//! frames (pings, window updates, settings), not the start of a request head, so
//! they never stop the idle limit: an HTTP/2 connection without a request for
//! the idle limit is closed whatever control frames it sends. Under TLS the
//! socket below the TLS layer is timed, so the handshake counts as part of the
//! first request head.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::body::{Body, BoxError};

/// The time limits of one listener's connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// From a connection's start, or the first byte of a request head, to the whole head.
    pub header_read: Duration,
    /// Between an answer and the first byte of the next request on a keep-alive connection.
    pub idle: Duration,
    /// A write to the client that makes no progress.
    pub write: Duration,
}

/// What the service tells the socket: how many requests are being handled, how
/// many answers are done and when the last one was, and whether the connection
/// multiplexes (HTTP/2); and what it tells the connection's progress rule
/// (`drive`): how many answers wait for the client to take what they hold, and
/// a count that moves whenever one is taken.
pub(crate) struct ConnState {
    in_flight: AtomicUsize,
    answered: AtomicU64,
    multiplexed: AtomicBool,
    /// Answers whose latest frame (or whose head, before the first) hyper has
    /// not come back for: it is waiting to send it, for the client's window or
    /// socket.
    owed: AtomicUsize,
    /// Moves each time an owed answer is taken up again (or ends).
    progress: AtomicU64,
    /// When the latest answer was done, in nanoseconds since `born`: the idle
    /// limit runs from there. Nobody is woken when an answer is done: the
    /// read timer, armed while the answer was made, wakes the connection by
    /// then ([`TimedIo`]).
    done_at: AtomicU64,
    born: Instant,
}

impl Default for ConnState {
    fn default() -> Self {
        ConnState {
            in_flight: AtomicUsize::new(0),
            answered: AtomicU64::new(0),
            multiplexed: AtomicBool::new(false),
            owed: AtomicUsize::new(0),
            progress: AtomicU64::new(0),
            done_at: AtomicU64::new(0),
            born: Instant::now(),
        }
    }
}

impl ConnState {
    /// A request arrived; the returned guard marks its answer done when dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(Some(Arc::clone(self)))
    }

    /// The connection speaks HTTP/2: its bytes between requests are frames,
    /// not request heads (see the module docs).
    pub(crate) fn set_multiplexed(&self) {
        self.multiplexed.store(true, Ordering::Relaxed);
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// When the latest answer was done (the connection's start before any).
    fn done_at(&self) -> Instant {
        self.born + Duration::from_nanos(self.done_at.load(Ordering::Acquire))
    }

    /// Answers waiting on the client now, and the progress count.
    pub(crate) fn owed(&self) -> (usize, u64) {
        (
            self.owed.load(Ordering::Acquire),
            self.progress.load(Ordering::Acquire),
        )
    }

    fn owe(&self) {
        self.owed.fetch_add(1, Ordering::AcqRel);
    }

    fn paid(&self) {
        self.progress.fetch_add(1, Ordering::AcqRel);
        self.owed.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request in progress on a connection; dropping it marks the answer done.
pub(crate) struct Busy(Option<Arc<ConnState>>);

impl Busy {
    fn finish(&mut self) {
        if let Some(state) = self.0.take() {
            // Before the answer counts as done, so that whoever sees it done
            // sees when (the latest of concurrent streams' ends).
            let since_born = u64::try_from(state.born.elapsed().as_nanos()).unwrap_or(u64::MAX);
            state.done_at.fetch_max(since_born, Ordering::AcqRel);
            state.answered.fetch_add(1, Ordering::AcqRel);
            state.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The answer body with its connection's [`Busy`] guard: the connection counts
/// as idle again once the last frame has been handed to hyper. It is owed
/// ([`ConnState::owed`]) from its head until hyper first asks for a frame, and
/// from each frame it hands over until hyper asks for the next: hyper asks
/// again once it could send the last, so an answer owed for the write limit
/// is one the client does not take.
pub(crate) struct Tracked {
    body: Body,
    busy: Busy,
    owed: bool,
}

impl Tracked {
    pub(crate) fn new(body: Body, busy: Busy) -> Self {
        if let Some(state) = &busy.0 {
            state.owe();
        }
        Tracked {
            body,
            busy,
            owed: true,
        }
    }

    fn settle(&mut self) {
        if std::mem::take(&mut self.owed) {
            if let Some(state) = &self.busy.0 {
                state.paid();
            }
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.settle();
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        this.settle();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        match &frame {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.busy.finish(),
            Poll::Ready(Some(Ok(_))) => {
                if let Some(state) = &this.busy.0 {
                    state.owe();
                    this.owed = true;
                }
            }
            Poll::Pending => {}
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request head: the header limit runs.
    Head,
    /// Keep-alive, nothing of the next request yet: the idle limit runs.
    Idle,
}

/// A client socket with the [`ConnectionLimits`] applied; an expired limit
/// surfaces as an `io::ErrorKind::TimedOut` error, on which hyper closes it.
pub(crate) struct TimedIo<T> {
    inner: T,
    state: Arc<ConnState>,
    limits: ConnectionLimits,
    phase: Phase,
    answered: u64,
    /// When the current phase's limit runs out (`None` until the phase first
    /// waits, and while a request is handled).
    phase_deadline: Option<Instant>,
    /// One timer per connection, armed once: re-armed only when it fires before
    /// the current phase's deadline, so a busy keep-alive connection does not
    /// register a timer per request.
    read_timer: Option<Pin<Box<Sleep>>>,
    /// The waker the read timer holds, while it holds one: polled again only
    /// once it fired, was reset, or another waker asks.
    timer_waker: Option<Waker>,
    write_deadline: Option<Pin<Box<Sleep>>>,
}

impl<T> TimedIo<T> {
    pub(crate) fn new(inner: T, state: Arc<ConnState>, limits: ConnectionLimits) -> Self {
        TimedIo {
            inner,
            state,
            limits,
            // A new connection owes a request head within the header limit (slowloris).
            phase: Phase::Head,
            answered: 0,
            phase_deadline: None,
            read_timer: None,
            timer_waker: None,
            write_deadline: None,
        }
    }
}

impl<T> TimedIo<T> {
    /// The socket itself (e.g. to peek at the first bytes).
    pub(crate) fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The head limit counted from `start` (the connection's accept) rather than
    /// from the first wait on the socket.
    pub(crate) fn head_since(mut self, start: Instant) -> Self {
        self.phase_deadline = Some(start + self.limits.header_read);
        self
    }
}

fn expired(cx: &mut Context<'_>, deadline: &mut Option<Pin<Box<Sleep>>>, limit: Duration) -> bool {
    let sleep = deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
    sleep.as_mut().poll(cx).is_ready()
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_string())
}

impl<T> TimedIo<T> {
    /// The read timer set to go off by `deadline` at the latest (armed on
    /// first use).
    fn timer_by(&mut self, deadline: Instant) {
        let timer = self
            .read_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
        if timer.deadline() > deadline.into() {
            timer.as_mut().reset(deadline.into());
            self.timer_waker = None;
        }
    }

    /// Whether the read timer went off; if not, it wakes this task when it
    /// does. Not polled again while it holds this task's waker and has not
    /// gone off (each poll registers the waker anew).
    fn timer_fired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(timer) = self.read_timer.as_mut() else {
            return false;
        };
        let armed = self
            .timer_waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()));
        if armed && !timer.is_elapsed() {
            return false;
        }
        // Polled outside the task's budget: a timer polled with the budget
        // spent answers Pending without keeping the waker, and the skip above
        // would then leave nothing to wake the connection.
        if std::pin::pin!(tokio::task::unconstrained(timer.as_mut()))
            .poll(cx)
            .is_ready()
        {
            self.timer_waker = None;
            return true;
        }
        if !armed {
            self.timer_waker = Some(cx.waker().clone());
        }
        false
    }

    /// Re-arms the fired read timer for `deadline` and polls it.
    fn rearm(&mut self, cx: &mut Context<'_>, deadline: Instant) -> bool {
        if let Some(timer) = self.read_timer.as_mut() {
            timer.as_mut().reset(deadline.into());
        }
        self.timer_waker = None;
        self.timer_fired(cx)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let answered = this.state.answered.load(Ordering::Acquire);
        if answered != this.answered {
            this.answered = answered;
            this.phase = Phase::Idle;
            this.phase_deadline = None;
        }
        // While a request is handled, reads are its body's (limited by the body
        // wrapper) or hyper watching for a close: no limit here. But the answer
        // may be done while this read waits, with nothing more to come and
        // nobody to wake this task: the timer goes off within the idle limit
        // from now (no sooner than it could be due), and the idle limit is
        // then worked out from when the answer was done.
        if this.state.busy() {
            this.phase_deadline = None;
            let read = Pin::new(&mut this.inner).poll_read(cx, buf);
            if read.is_pending() {
                // Within the idle limit of the last answer is within that of now
                // (no reading of the clock on the common path).
                this.timer_by(this.state.done_at() + this.limits.idle);
                if this.timer_fired(cx) {
                    let next = Instant::now() + this.limits.idle;
                    this.rearm(cx, next);
                }
            }
            return read;
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before
                    && this.phase == Phase::Idle
                    && !this.state.multiplexed.load(Ordering::Relaxed)
                {
                    // The next request began: from now on its head has the header limit.
                    this.phase = Phase::Head;
                    this.phase_deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let (what, deadline) = match this.phase {
                    Phase::Head => (
                        "request head not received in time",
                        *this
                            .phase_deadline
                            .get_or_insert_with(|| Instant::now() + this.limits.header_read),
                    ),
                    // From the end of the last answer.
                    Phase::Idle => (
                        "keep-alive connection idle",
                        *this
                            .phase_deadline
                            .get_or_insert_with(|| this.state.done_at() + this.limits.idle),
                    ),
                };
                this.timer_by(deadline);
                // A timer set for an earlier phase may fire first: re-arm it for this one.
                while this.timer_fired(cx) {
                    if Instant::now() >= deadline {
                        return Poll::Ready(Err(timed_out(what)));
                    }
                    if !this.rearm(cx, deadline) {
                        break;
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.write_deadline = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                if expired(cx, &mut this.write_deadline, this.limits.write) {
                    return Poll::Ready(Err(timed_out("client stopped reading")));
                }
                Poll::Pending
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                this.write_deadline = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                if expired(cx, &mut this.write_deadline, this.limits.write) {
                    return Poll::Ready(Err(timed_out("client stopped reading")));
                }
                Poll::Pending
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

use std::future::Future as _;

#[cfg(test)]
mod tests {
    use super::*;

    /// The adversary of the read timer: a connection whose task spent its
    /// budget (a burst of frames read) when the timer is first polled, then a
    /// silent client. The head limit must still close it.
    #[tokio::test]
    async fn the_read_limit_holds_when_the_task_spent_its_budget() {
        let (_client, server) = tokio::io::duplex(64);
        let limits = ConnectionLimits {
            header_read: Duration::from_millis(50),
            idle: Duration::from_millis(50),
            write: Duration::from_secs(5),
        };
        let mut io = TimedIo::new(server, Arc::new(ConnState::default()), limits);
        let read = std::future::poll_fn(|cx| {
            let mut bytes = [0u8; 8];
            let mut buf = ReadBuf::new(&mut bytes);
            Pin::new(&mut io).poll_read(cx, &mut buf)
        });
        let read = async {
            // Spend the budget right before the first poll of the read.
            while tokio::task::coop::has_budget_remaining() {
                tokio::task::consume_budget().await;
            }
            read.await
        };
        let got = tokio::time::timeout(Duration::from_secs(2), read).await;
        let err = got
            .expect("the read limit never fired")
            .expect_err("nothing was sent");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
