//! [`CallBody`]: a response body that holds something for as long as the response is being sent
//! (a concurrency permit, a place in the count of running calls) and that can be ended early
//! with an error status (a deadline passed, the server is shutting down).
//!
//! A gRPC response body is a series of DATA frames, each holding whole messages, then a
//! trailers frame with `grpc-status`. Ending early replaces the rest with a trailers frame
//! carrying the status, so the client sees every message up to that point and then the error,
//! never a cut message; the inner body (and with it the stream producing messages, and the
//! storage reads it was running) is dropped at once.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::{Status, body::Body};

/// Something that ends a body early with the status it yields.
pub(crate) type Stop = Pin<Box<dyn Future<Output = Status> + Send>>;

/// A response body with a guard kept until the body ends or is dropped, and stops that end it
/// early with an error status.
pub(crate) struct CallBody {
    inner: Body,
    stops: Vec<Stop>,
    /// Dropped with the body: a permit, a count of running calls.
    _guard: Box<dyn Send>,
    ended: bool,
}

impl std::fmt::Debug for CallBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallBody")
            .field("stops", &self.stops.len())
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl CallBody {
    /// Wraps `inner`; `guard` is dropped when the body is.
    pub(crate) fn new<B>(inner: B, guard: impl Send + 'static) -> CallBody
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<tonic::codegen::StdError>,
    {
        CallBody {
            inner: Body::new(inner),
            stops: Vec::new(),
            _guard: Box::new(guard),
            ended: false,
        }
    }

    /// Ends the body with the status `stop` yields, if it completes before the body ends.
    pub(crate) fn stop_on(mut self, stop: impl Future<Output = Status> + Send + 'static) -> Self {
        self.stops.push(Box::pin(stop));
        self
    }

    /// The body as tonic's response body type.
    pub(crate) fn boxed(self) -> Body {
        Body::new(self)
    }
}

impl HttpBody for CallBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        for stop in &mut this.stops {
            if let Poll::Ready(status) = stop.as_mut().poll(cx) {
                this.ended = true;
                // Stop producing: the stream behind the body and its reads are dropped here.
                this.inner = Body::empty();
                this.stops.clear();
                let mut trailers = HeaderMap::new();
                return Poll::Ready(Some(match status.add_header(&mut trailers) {
                    Ok(()) => Ok(Frame::trailers(trailers)),
                    Err(status) => Err(status),
                }));
            }
        }
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => this.ended = true,
            // The inner body's own trailers end the response: nothing may follow them.
            Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => this.ended = true,
            Poll::Ready(Some(Err(_))) => this.ended = true,
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // Ending early sends less than the inner body would.
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    fn frames(count: usize) -> impl HttpBody<Data = Bytes, Error = Status> + Send + 'static {
        let data = (0..count).map(|i| Ok(Frame::data(Bytes::from(vec![i as u8; 4]))));
        let stream = futures::stream::iter(data).chain(futures::stream::pending());
        StreamBody::new(stream)
    }

    use futures::StreamExt;

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_body_with_its_status_after_whole_frames() {
        let body = CallBody::new(frames(3), ()).stop_on(async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Status::deadline_exceeded("too late")
        });
        let mut body = std::pin::pin!(body);
        for _ in 0..3 {
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap().len(), 4);
        }
        let trailers = body
            .frame()
            .await
            .unwrap()
            .unwrap()
            .into_trailers()
            .unwrap();
        let status = Status::from_header_map(&trailers).unwrap();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(status.message(), "too late");
        assert!(body.frame().await.is_none());
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn the_guard_lives_as_long_as_the_body() {
        let guard = std::sync::Arc::new(());
        let body = CallBody::new(frames(1), guard.clone());
        assert_eq!(std::sync::Arc::strong_count(&guard), 2);
        drop(body);
        assert_eq!(std::sync::Arc::strong_count(&guard), 1);
    }

    #[tokio::test]
    async fn a_finished_body_is_not_stopped_after_its_trailers() {
        let mut trailers = HeaderMap::new();
        Status::ok("").add_header(&mut trailers).unwrap();
        let inner = StreamBody::new(futures::stream::iter([
            Ok::<_, Status>(Frame::data(Bytes::from_static(b"x"))),
            Ok(Frame::trailers(trailers)),
        ]));
        let body =
            CallBody::new(inner, ()).stop_on(futures::future::ready(Status::unavailable("stop")));
        // The stop is ready at once, so the body ends before its first frame.
        let collected = body.collect().await.unwrap();
        let status = Status::from_header_map(collected.trailers().unwrap()).unwrap();
        assert_eq!(status.code(), tonic::Code::Unavailable);

        let mut trailers = HeaderMap::new();
        Status::ok("").add_header(&mut trailers).unwrap();
        let inner = StreamBody::new(futures::stream::iter([Ok::<_, Status>(Frame::trailers(
            trailers,
        ))]));
        let body = CallBody::new(inner, ()).stop_on(async {
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
            Status::unavailable("stop")
        });
        let collected = body.collect().await.unwrap();
        let status = Status::from_header_map(collected.trailers().unwrap()).unwrap();
        assert_eq!(status.code(), tonic::Code::Ok);
    }
}
