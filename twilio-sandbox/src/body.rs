//! The response body type: a whole buffer, or one that breaks on purpose
//! part-way through (the `reset` fault).

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

/// How long a `reset` answer pauses after its partial body, so hyper has
/// flushed the bytes before the connection is torn down.
const RESET_PAUSE: Duration = Duration::from_millis(50);

#[derive(Debug)]
pub(crate) enum SandboxBody {
    Full(Option<Bytes>),
    Reset {
        partial: Option<Bytes>,
        pause: Pin<Box<tokio::time::Sleep>>,
    },
}

impl SandboxBody {
    pub(crate) fn full(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        SandboxBody::Full((!data.is_empty()).then_some(data))
    }

    pub(crate) fn empty() -> Self {
        SandboxBody::Full(None)
    }

    /// Sends `partial`, waits briefly, then fails so the connection is closed.
    pub(crate) fn reset(partial: impl Into<Bytes>) -> Self {
        SandboxBody::Reset {
            partial: Some(partial.into()),
            pause: Box::pin(tokio::time::sleep(RESET_PAUSE)),
        }
    }
}

impl Body for SandboxBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            SandboxBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            SandboxBody::Reset { partial, pause } => {
                if let Some(data) = partial.take() {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                match pause.as_mut().poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(()) => Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "sandbox fault: reset mid-answer",
                    )))),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, SandboxBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            SandboxBody::Full(Some(data)) => SizeHint::with_exact(data.len() as u64),
            SandboxBody::Full(None) => SizeHint::with_exact(0),
            SandboxBody::Reset { .. } => SizeHint::default(),
        }
    }
}
