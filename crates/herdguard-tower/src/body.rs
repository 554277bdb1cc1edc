//! The layer's response body — a stored response's bytes, or the inner
//! service's body streamed through — and the bounded read that decides
//! between them.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;

use crate::BoxError;

/// The body of every response the layer returns.
pub struct HerdBody {
    kind: Kind,
}

enum Kind {
    /// Whole bytes (a stored response, or an answer made by the layer).
    Full(Option<Bytes>),
    /// The inner service's body, streamed.
    Stream(UnsyncBoxBody<Bytes, BoxError>),
}

impl HerdBody {
    /// A body of `bytes`.
    pub fn full(bytes: Bytes) -> Self {
        HerdBody {
            kind: Kind::Full((!bytes.is_empty()).then_some(bytes)),
        }
    }

    /// No body.
    pub fn empty() -> Self {
        HerdBody {
            kind: Kind::Full(None),
        }
    }

    /// `body`, streamed as it comes.
    pub fn stream<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        HerdBody {
            kind: Kind::Stream(body.map_err(Into::into).boxed_unsync()),
        }
    }

    /// The whole bytes (a stored response), or `None` for a stream.
    pub(crate) fn whole(&self) -> Option<Bytes> {
        match &self.kind {
            Kind::Full(bytes) => Some(bytes.clone().unwrap_or_default()),
            Kind::Stream(_) => None,
        }
    }
}

impl std::fmt::Debug for HerdBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Full(b) => f
                .debug_struct("HerdBody::Full")
                .field("len", &b.as_ref().map_or(0, Bytes::len))
                .finish(),
            Kind::Stream(_) => f.write_str("HerdBody::Stream"),
        }
    }
}

impl Body for HerdBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Stream(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Stream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Stream(body) => body.size_hint(),
        }
    }
}

/// What a bounded read of a body found.
pub(crate) enum Buffered<B> {
    /// The whole body, within the bound.
    Whole(Bytes),
    /// More than the bound: the frames read so far, and the rest unread.
    TooLarge(Prefixed<B>),
}

/// Reads `body` whole when it is at most `limit` bytes; past that, stops and
/// hands back what it read and the rest, to stream on (never more than `limit`
/// and one frame in memory).
pub(crate) async fn read_up_to<B>(mut body: B, limit: usize) -> Result<Buffered<B>, BoxError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let mut read: VecDeque<Bytes> = VecDeque::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Into::into)?;
        // Trailers are not kept: a stored response has none.
        if let Ok(data) = frame.into_data() {
            total = total.saturating_add(data.len());
            read.push_back(data);
            if total > limit {
                return Ok(Buffered::TooLarge(Prefixed { read, rest: body }));
            }
        }
    }
    let mut whole = BytesMut::with_capacity(total);
    for chunk in read {
        whole.extend_from_slice(&chunk);
    }
    Ok(Buffered::Whole(whole.freeze()))
}

/// A body of which some frames were read already: those first, then the rest.
pub(crate) struct Prefixed<B> {
    read: VecDeque<Bytes>,
    rest: B,
}

impl<B> Body for Prefixed<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if let Some(chunk) = this.read.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        Pin::new(&mut this.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_empty() && self.rest.is_end_stream()
    }
}
