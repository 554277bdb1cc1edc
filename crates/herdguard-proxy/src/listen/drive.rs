//! A connection's life after its handshake: served until it ends, closed
//! gracefully when the listener stops, and closed when its answers make no
//! progress.
//!
//! # Progress, not just liveness
//!
//! An HTTP/2 client can hold its answers without ever stalling the socket: it
//! grants no flow-control window (`SETTINGS_INITIAL_WINDOW_SIZE = 0`, no
//! `WINDOW_UPDATE`), reads every frame and answers every ping. The socket's
//! write limit never fires (nothing waits on the socket), pings say it is
//! alive, and every stream it opened — with the origin connection of each one
//! passed through — would be held for ever. So the rule is on the answers, not
//! the socket: a connection with an answer the client has not taken up for the
//! write limit ([`ConnState::owed`]; no answer taken up meanwhile) gets GOAWAY
//! and, [`CLOSE_GRACE`] later, is closed whatever it still has in flight.
//! HTTP/1.1 has the same rule (its stalled socket write usually fires first).

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::limits::ConnState;

/// The log target of connection events.
const LOG_TARGET: &str = "herdguard::serve";

/// How long a connection closed for want of progress is given to send its
/// GOAWAY before it is dropped.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_millis(250);

/// The progress rule checks this many times per write limit, so a stalled
/// connection is closed within 1¼ of it.
const CHECKS_PER_LIMIT: u32 = 4;

/// Serves `conn` until it ends; closes it gracefully (`close`: hyper's
/// `graceful_shutdown`, GOAWAY on HTTP/2) when `stop` changes, and for want of
/// progress (the module docs) under `write`, the connection's write limit.
pub(crate) async fn drive<C: Future>(
    conn: C,
    close: fn(Pin<&mut C>),
    state: &ConnState,
    write: Duration,
    mut stop: watch::Receiver<()>,
) {
    tokio::pin!(conn);
    let mut progress = Progress::new(write);
    let mut stopping = false;
    let mut dropping: Option<Pin<Box<Sleep>>> = None;
    // The stop is polled once to register the task's waker, then only once a
    // stop was sent: polling it on every wake-up (every request) takes the
    // channel's lock. `probe` sees the same sends as `stop`.
    let probe = stop.clone();
    let stopped = stop.changed();
    tokio::pin!(stopped);
    let mut registered = false;
    let mut stop_sent = std::future::poll_fn(|cx| {
        if registered && !probe.has_changed().unwrap_or(true) {
            return Poll::Pending;
        }
        registered = true;
        stopped.as_mut().poll(cx)
    });
    loop {
        // In order: every branch is polled on each wake anyway (none is ready
        // but the connection's end), and a random start costs a draw per poll.
        tokio::select! {
            biased;
            _ = conn.as_mut() => return,
            _ = &mut stop_sent, if !stopping => {
                stopping = true;
                close(conn.as_mut());
            }
            () = poll_fn(|cx| progress.poll_stalled(state, cx)), if dropping.is_none() => {
                tracing::debug!(target: LOG_TARGET, limit = ?write, "connection closed: its answers made no progress");
                close(conn.as_mut());
                dropping = Some(Box::pin(tokio::time::sleep(CLOSE_GRACE)));
            }
            () = async { dropping.as_mut().expect("guarded").await }, if dropping.is_some() => return,
        }
    }
}

/// The progress rule's clock: since when the answers owed have not moved.
struct Progress {
    limit: Duration,
    /// The progress count last seen with answers owed, and since when.
    still: Option<(u64, Instant)>,
    /// Armed only while answers are owed.
    check: Option<Pin<Box<Sleep>>>,
}

impl Progress {
    fn new(limit: Duration) -> Self {
        Progress {
            limit,
            still: None,
            check: None,
        }
    }

    /// Ready once answers have been owed with no progress for the limit.
    fn poll_stalled(&mut self, state: &ConnState, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let (owed, progress) = state.owed();
            if owed == 0 {
                self.still = None;
                // A check still armed may wake the task once more: harmless.
                return Poll::Pending;
            }
            let now = Instant::now();
            let since = match self.still {
                Some((seen, since)) if seen == progress => since,
                _ => {
                    self.still = Some((progress, now));
                    now
                }
            };
            if now >= since + self.limit {
                return Poll::Ready(());
            }
            let next = (now + self.limit / CHECKS_PER_LIMIT).min(since + self.limit);
            let check = self
                .check
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(next)));
            if check.deadline() != next {
                check.as_mut().reset(next);
            }
            if check.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

/// The connections of one listener, for a graceful stop: each holds a
/// [`Drain::watcher`]; [`Drain::stop`] asks them all to finish and waits until
/// they have.
pub(crate) struct Drain(watch::Sender<()>);

impl Drain {
    pub(crate) fn new() -> Self {
        Drain(watch::channel(()).0)
    }

    /// What a connection watches (and holds until it ends).
    pub(crate) fn watcher(&self) -> watch::Receiver<()> {
        self.0.subscribe()
    }

    /// Asks every connection to finish; done when all have ended.
    pub(crate) async fn stop(self) {
        let _ = self.0.send(());
        self.0.closed().await;
    }
}
