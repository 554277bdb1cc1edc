//! The body of one open dashboard: `text/event-stream`, one `data:` event per
//! update, for as long as the page stays open.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};

use crate::body::BoxError;

/// Updates queued for a page that reads slowly; past that, it skips updates
/// (the next one holds the totals anyway).
const QUEUED: usize = 4;

/// A stream of update events, fed by a task that follows the sampler; it
/// holds its stream slot (`admin_max_event_streams`) while open.
pub(crate) struct EventStream {
    rx: mpsc::Receiver<Bytes>,
    _slot: OwnedSemaphorePermit,
}

impl EventStream {
    /// Follows `updates`, the latest first, until the page goes away (the body
    /// is dropped, so the feeding task's next send fails and it ends).
    pub(crate) fn follow(
        mut updates: watch::Receiver<Bytes>,
        slot: OwnedSemaphorePermit,
    ) -> EventStream {
        let (tx, rx) = mpsc::channel(QUEUED);
        tokio::spawn(async move {
            loop {
                let event = {
                    let update = updates.borrow_and_update();
                    let mut event = Vec::with_capacity(update.len() + 8);
                    event.extend_from_slice(b"data: ");
                    event.extend_from_slice(&update);
                    event.extend_from_slice(b"\n\n");
                    Bytes::from(event)
                };
                match tx.try_send(event) {
                    Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
                tokio::select! {
                    changed = updates.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        EventStream { rx, _slot: slot }
    }
}

impl HttpBody for EventStream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.get_mut()
            .rx
            .poll_recv(cx)
            .map(|event| event.map(|e| Ok(Frame::data(e))))
    }
}
