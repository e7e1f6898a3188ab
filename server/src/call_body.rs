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
    sync::{Arc, Mutex, MutexGuard, PoisonError, atomic::AtomicU64},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::{Status, body::Body};

use crate::{
    error::{self, ServiceError},
    idle::{Idle, IdleBound, Watched},
};

/// Something that ends a body early with the status it yields.
pub(crate) type Stop = Pin<Box<dyn Future<Output = Status> + Send>>;

/// A response body with a guard kept until the body ends or is dropped, and stops that end it
/// early with an error status.
pub(crate) struct CallBody {
    call: Arc<Call>,
    stops: Vec<Stop>,
    /// The body's place under an idle bound, if it is watched.
    watched: Option<Watched>,
    /// The server's request and response limits, to explain a status of tonic's own in the
    /// trailers (see [`error::explain`]); `None`: trailers pass as they are.
    explain: Option<(usize, usize)>,
    ended: bool,
}

/// What a body holds, shared with the idle bound's sweeper, which can end it.
struct Call {
    held: Mutex<Held>,
    /// See [`Idle::waiting_since`].
    waiting_since: AtomicU64,
}

struct Held {
    inner: Body,
    /// Dropped with the body: a permit, a count of running calls.
    _guard: Option<Box<dyn Send>>,
    /// Set when the idle bound ended the body: the status it ends with.
    idle: Option<Status>,
}

impl Call {
    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Idle for Call {
    fn waiting_since(&self) -> &AtomicU64 {
        &self.waiting_since
    }

    fn end_idle(&self, idle: Duration) {
        let mut held = self.held();
        Watched::polled(&self.waiting_since);
        // Stop producing: the stream behind the body and its reads are dropped here, and the
        // slot is given back, though the client may never read the status.
        held.inner = Body::empty();
        held._guard = None;
        held.idle = Some(Status::from(ServiceError::StreamIdle { idle }));
    }
}

impl std::fmt::Debug for CallBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallBody")
            .field("stops", &self.stops.len())
            .field("watched", &self.watched.is_some())
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
            call: Arc::new(Call {
                held: Mutex::new(Held {
                    inner: Body::new(inner),
                    _guard: Some(Box::new(guard)),
                    idle: None,
                }),
                waiting_since: AtomicU64::new(0),
            }),
            stops: Vec::new(),
            watched: None,
            explain: None,
            ended: false,
        }
    }

    /// Ends the body with the status `stop` yields, if it completes before the body ends.
    pub(crate) fn stop_on(mut self, stop: impl Future<Output = Status> + Send + 'static) -> Self {
        self.stops.push(Box::pin(stop));
        self
    }

    /// Ends the body, and frees what it holds, once it has waited on its client for longer
    /// than `bound` allows.
    pub(crate) fn idle_bound(mut self, bound: &IdleBound) -> Self {
        let call: Arc<dyn Idle> = self.call.clone();
        self.watched = Some(bound.watch(Arc::downgrade(&call)));
        self
    }

    /// Gives a failure status of tonic's own in the trailers (a response message above the
    /// limit, found while encoding it) the service's `ErrorInfo`, as [`error::explain`] does.
    pub(crate) fn explain_errors(
        mut self,
        max_request_bytes: usize,
        max_response_bytes: usize,
    ) -> Self {
        self.explain = Some((max_request_bytes, max_response_bytes));
        self
    }

    /// The body as tonic's response body type.
    pub(crate) fn boxed(self) -> Body {
        Body::new(self)
    }
}

/// A trailers frame carrying `status`.
fn trailers(status: Status) -> Result<Frame<Bytes>, Status> {
    let mut trailers = HeaderMap::new();
    status.add_header(&mut trailers)?;
    Ok(Frame::trailers(trailers))
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
        Watched::polled(&this.call.waiting_since);
        let mut held = this.call.held();
        if let Some(status) = held.idle.take() {
            this.ended = true;
            return Poll::Ready(Some(trailers(status)));
        }
        for stop in &mut this.stops {
            if let Poll::Ready(status) = stop.as_mut().poll(cx) {
                this.ended = true;
                // Stop producing: the stream behind the body and its reads are dropped here.
                held.inner = Body::empty();
                this.stops.clear();
                return Poll::Ready(Some(trailers(status)));
            }
        }
        let frame = Pin::new(&mut held.inner).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => this.ended = true,
            // The inner body's own trailers end the response: nothing may follow them.
            Poll::Ready(Some(Ok(last))) if last.is_trailers() => {
                this.ended = true;
                // Most calls end with `grpc-status: 0`: only a failure is parsed.
                let failed = last
                    .trailers_ref()
                    .filter(|trailers| {
                        trailers
                            .get(&crate::grpc_headers::GRPC_STATUS)
                            .is_some_and(|code| code.as_bytes() != b"0")
                    })
                    .and_then(Status::from_header_map);
                if let (Some((request, response)), Some(status)) = (this.explain, failed)
                    && status.code() != tonic::Code::Ok
                    && status.details().is_empty()
                {
                    // A stream's trailers never carry an unknown method: that is answered
                    // before any response, without a path here.
                    let explained = error::explain(status, "", request, response);
                    return Poll::Ready(Some(trailers(explained)));
                }
            }
            Poll::Ready(Some(Err(_))) => this.ended = true,
            Poll::Ready(Some(Ok(_))) => {
                if let Some(watched) = &this.watched {
                    watched.handed_out(&this.call.waiting_since);
                }
            }
            Poll::Pending => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.ended || {
            let held = self.call.held();
            held.idle.is_none() && held.inner.is_end_stream()
        }
    }

    fn size_hint(&self) -> SizeHint {
        // Ending early sends less than the inner body would.
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    fn frames(count: usize) -> impl HttpBody<Data = Bytes, Error = Status> + Send + 'static {
        let data = (0..count).map(|i| Ok(Frame::data(Bytes::from(vec![i as u8; 4]))));
        let stream = futures::stream::iter(data).chain(futures::stream::pending());
        StreamBody::new(stream)
    }

    /// The status of the next frame, which must be the trailers.
    async fn trailing_status<B>(mut body: Pin<&mut B>) -> Status
    where
        B: HttpBody<Data = Bytes> + ?Sized,
        B::Error: std::fmt::Debug,
    {
        let trailers = body
            .frame()
            .await
            .unwrap()
            .unwrap()
            .into_trailers()
            .unwrap();
        Status::from_header_map(&trailers).unwrap()
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
        let status = trailing_status(body.as_mut()).await;
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

    #[tokio::test(start_paused = true)]
    async fn a_body_its_client_stops_reading_is_ended_and_frees_what_it_holds() {
        let ended = Arc::new(AtomicU64::new(0));
        let counted = ended.clone();
        let bound = IdleBound::new(Duration::from_secs(4), move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        let guard = Arc::new(());
        let body = CallBody::new(frames(3), guard.clone()).idle_bound(&bound);
        let mut body = std::pin::pin!(body);
        body.frame().await.unwrap().unwrap();
        // The client reads on, slowly: polled within the bound each time, never ended.
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_secs(3)).await;
            body.frame().await.unwrap().unwrap();
        }
        assert_eq!(Arc::strong_count(&guard), 2);
        // Then it stops reading.
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(Arc::strong_count(&guard), 1, "the slot was not given back");
        assert_eq!(ended.load(std::sync::atomic::Ordering::Relaxed), 1);
        let status = trailing_status(body.as_mut()).await;
        assert_eq!(status.code(), tonic::Code::Aborted);
        assert!(body.frame().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_waiting_on_its_own_stream_is_not_idle() {
        let bound = IdleBound::new(Duration::from_secs(4), || {});
        let guard = Arc::new(());
        // No frame at all for a minute: the stream behind the body is slow, not the client.
        let slow = StreamBody::new(futures::stream::once(async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, Status>(Frame::data(Bytes::from_static(b"late")))
        }));
        let body = CallBody::new(slow, guard.clone()).idle_bound(&bound);
        let mut body = std::pin::pin!(body);
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), Bytes::from_static(b"late"));
        assert_eq!(Arc::strong_count(&guard), 2);
    }
}
