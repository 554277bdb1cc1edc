//! Bodies: the proxy's answer body (a whole stored body, or a stream passed
//! through), and the wrappers that keep streams bounded in time.
//!
//! Nothing here buffers: a streamed body moves one frame at a time, and hyper
//! polls for the next frame only once the previous one is written, so memory per
//! connection stays at a few buffers whatever the body size.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Sleep;

/// Any error a body may end with.
pub type BoxError = herdguard::BoxError;

/// The body of every answer the proxy sends (and of requests it forwards).
pub enum Body {
    /// A whole body in memory (a stored response, or a short text of the proxy's own).
    Full(Option<Bytes>),
    /// A body passed through as it arrives.
    Stream(UnsyncBoxBody<Bytes, BoxError>),
}

impl Body {
    /// A whole body.
    pub fn full(bytes: Bytes) -> Body {
        Body::Full((!bytes.is_empty()).then_some(bytes))
    }

    /// No body.
    pub fn empty() -> Body {
        Body::Full(None)
    }

    /// A body streamed from `body`.
    pub fn stream<B>(body: B) -> Body
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Body::Stream(body.map_err(Into::into).boxed_unsync())
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(s) => Pin::new(s).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(bytes) => bytes.is_none(),
            Body::Stream(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Stream(s) => s.size_hint(),
        }
    }
}

/// A body that first yields bytes already read, then the rest of the stream
/// (an answer found too large to store after part of it was read).
pub(crate) struct Prefixed<B> {
    prefix: Option<Bytes>,
    rest: B,
}

impl<B> Prefixed<B> {
    pub(crate) fn new(prefix: Bytes, rest: B) -> Self {
        Prefixed {
            prefix: (!prefix.is_empty()).then_some(prefix),
            rest,
        }
    }
}

impl<B> HttpBody for Prefixed<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if let Some(prefix) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        Pin::new(&mut this.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let extra = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(extra));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(extra));
        }
        hint
    }
}

/// The peer sent nothing for too long in the middle of a body.
#[derive(Debug, thiserror::Error)]
#[error("{what}: no data for {limit:?}")]
pub struct BodyStalled {
    /// Whose body (the client's request, the origin's answer).
    pub what: &'static str,
    /// The inactivity limit.
    pub limit: Duration,
}

/// Ends a body with [`BodyStalled`] when no frame arrives for `limit` (time
/// between two reads, as nginx's `client_body_timeout`: a slow but moving
/// upload is fine, a stalled one is not).
pub(crate) struct Inactivity<B> {
    inner: B,
    limit: Duration,
    what: &'static str,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<B> Inactivity<B> {
    pub(crate) fn new(inner: B, limit: Duration, what: &'static str) -> Self {
        Inactivity {
            inner,
            limit,
            what,
            sleep: None,
        }
    }
}

impl<B> HttpBody for Inactivity<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.sleep = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let limit = this.limit;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyStalled {
                        what: this.what,
                        limit,
                    })))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

use std::future::Future as _;
