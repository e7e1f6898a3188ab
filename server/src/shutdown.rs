//! Draining shutdown: on SIGTERM the server stops taking new calls but lets the running ones
//! finish, within a grace period.
//!
//! The sequence ([`crate::server::serve`] drives it):
//!
//! 1. health turns `NOT_SERVING`, so load balancers stop sending calls here;
//! 2. [`Drain::drain`]: new calls are refused with `UNAVAILABLE` (reason `SHUTTING_DOWN`,
//!    "retry on another server"); health checks and reflection are still answered;
//! 3. running calls (streams included) go on until they end, or until the grace period is
//!    over: then each is ended with `UNAVAILABLE` after its last complete message, so an SDK
//!    client resumes a `StreamNeuronSplits` stream from its last cursor on another server;
//! 4. the listener closes and connections are closed; the process exits 0.
//!
//! [`DrainLayer`] is the tower layer that refuses, counts and ends calls.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body::Body as HttpBody;
use tokio::sync::{Notify, futures::OwnedNotified};
use tonic::{Status, body::Body};

use crate::{call_body::CallBody, error::ServiceError, routes::Route};

/// The default of `--shutdown-grace`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// The shutdown state shared by the layer and the sequence. Cloning shares it.
///
/// A call costs it two atomic additions and one registration with the grace-over signal (a
/// lock when the call is first polled and one when it ends, none on the polls in between):
/// what is waited on is waited on only during a shutdown.
#[derive(Debug, Clone)]
pub struct Drain {
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    grace: Duration,
    draining: AtomicBool,
    /// Calls running (exempt ones not counted).
    running: AtomicUsize,
    /// Notified when `running` falls to 0 while draining.
    idle: Notify,
    /// Set when the grace period is over: every call still running ends.
    grace_over: AtomicBool,
    /// Notifies every call waiting when `grace_over` is set.
    grace_over_signal: Arc<Notify>,
}

impl Drain {
    /// Running calls get `grace` to finish once draining starts.
    pub fn new(grace: Duration) -> Drain {
        Drain {
            state: Arc::new(State {
                grace,
                draining: AtomicBool::new(false),
                running: AtomicUsize::new(0),
                idle: Notify::new(),
                grace_over: AtomicBool::new(false),
                grace_over_signal: Arc::new(Notify::new()),
            }),
        }
    }

    /// The layer that refuses new calls while draining and ends the running ones after the
    /// grace period.
    pub fn layer(&self) -> DrainLayer {
        DrainLayer {
            drain: self.clone(),
        }
    }

    /// Calls running now (health checks and reflection not counted).
    pub fn running(&self) -> usize {
        self.state.running.load(Ordering::SeqCst)
    }

    /// Refuses new calls from now on, waits for the running ones to end, at most the grace
    /// period, then ends those still running with `UNAVAILABLE`.
    pub async fn drain(&self) {
        self.state.draining.store(true, Ordering::SeqCst);
        let running = self.running();
        tracing::info!(
            running,
            grace = ?self.state.grace,
            "draining: refusing new calls, letting running calls finish"
        );
        let finished = tokio::time::timeout(self.state.grace, self.idle()).await;
        if finished.is_err() {
            tracing::warn!(
                running = self.running(),
                "grace period over: ending the calls still running with UNAVAILABLE"
            );
            self.state.grace_over.store(true, Ordering::SeqCst);
            self.state.grace_over_signal.notify_waiters();
        }
    }

    /// Completes when no call is running.
    async fn idle(&self) {
        loop {
            let mut notified = std::pin::pin!(self.state.idle.notified());
            // Registered before the count is read: a call ending in between still wakes this.
            notified.as_mut().enable();
            if self.running() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Counts a running call until dropped (with its response body).
#[derive(Debug)]
struct Running(Arc<State>);

impl Running {
    fn start(state: &Arc<State>) -> Running {
        state.running.fetch_add(1, Ordering::SeqCst);
        Running(state.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let state = &self.0;
        // The flag is set before `drain` reads the count, so the last call to end sees it.
        if state.running.fetch_sub(1, Ordering::SeqCst) == 1
            && state.draining.load(Ordering::SeqCst)
        {
            state.idle.notify_waiters();
        }
    }
}

/// Completes once the grace period is over. Registers with the signal when first polled and
/// again only when polled with another waker, so the polls of a stream cost an atomic read.
struct GraceOver {
    state: Arc<State>,
    notified: Pin<Box<OwnedNotified>>,
    waker: Option<Waker>,
}

impl GraceOver {
    fn new(state: &Arc<State>) -> GraceOver {
        GraceOver {
            state: Arc::clone(state),
            notified: Box::pin(Arc::clone(&state.grace_over_signal).notified_owned()),
            waker: None,
        }
    }
}

impl Future for GraceOver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let registered = this
            .waker
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()));
        if !registered {
            if this.notified.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            this.waker = Some(cx.waker().clone());
        }
        // Read after registering: a grace period ending in between is seen here or notifies.
        if this.state.grace_over.load(Ordering::SeqCst) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// See [`Drain::layer`].
#[derive(Debug, Clone)]
pub struct DrainLayer {
    drain: Drain,
}

impl<S> tower::Layer<S> for DrainLayer {
    type Service = DrainService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DrainService {
            inner,
            state: self.drain.state.clone(),
        }
    }
}

/// [`DrainLayer`]'s service.
#[derive(Debug, Clone)]
pub struct DrainService<S> {
    inner: S,
    state: Arc<State>,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for DrainService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<tonic::codegen::StdError>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        // Counted before the flag is read: a drain that starts meanwhile either sees this call
        // running or this call sees the drain.
        let infrastructure = Route::of(request.uri().path()).is_infrastructure();
        let running = (!infrastructure).then(|| Running::start(&self.state));
        if running.is_some() && self.state.draining.load(Ordering::SeqCst) {
            let status = Status::from(ServiceError::ShuttingDown);
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let grace = self.state.grace;
        let state = Arc::clone(&self.state);
        Box::pin(async move {
            let mut grace_over = GraceOver::new(&state);
            let response = tokio::select! {
                response = inner.call(request) => response?,
                () = &mut grace_over => {
                    return Ok(Status::from(ServiceError::ShutdownGraceOver { grace }).into_http());
                }
            };
            Ok(response.map(|body| {
                CallBody::new(body, running)
                    .stop_on(async move {
                        grace_over.await;
                        Status::from(ServiceError::ShutdownGraceOver { grace })
                    })
                    .boxed()
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    #[tokio::test]
    async fn a_drain_waits_for_the_running_calls_and_no_longer() {
        let drain = Drain::new(Duration::from_secs(30));
        drain.drain().await;
        assert!(
            !drain.state.grace_over.load(Ordering::SeqCst),
            "nothing ran"
        );

        let drain = Drain::new(Duration::from_secs(30));
        let calls: Vec<_> = (0..3).map(|_| Running::start(&drain.state)).collect();
        assert_eq!(drain.running(), 3);
        let mut draining = Box::pin(drain.drain());
        assert!((&mut draining).now_or_never().is_none());
        let mut calls = calls.into_iter();
        for left in [2, 1] {
            drop(calls.next());
            assert_eq!(drain.running(), left);
            assert!(
                (&mut draining).now_or_never().is_none(),
                "{left} still running"
            );
        }
        drop(calls.next());
        // Woken by the last call's end, long before the 30 s of grace.
        tokio::time::timeout(Duration::from_secs(10), draining)
            .await
            .expect("the last call's end wakes the drain");
        assert!(!drain.state.grace_over.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn calls_still_running_after_the_grace_period_are_told_to_end() {
        let grace = Duration::from_millis(200);
        let drain = Drain::new(grace);
        let _running = Running::start(&drain.state);
        // One waiting before the drain starts (polled, registered), one never polled before.
        let mut polled = Box::pin(GraceOver::new(&drain.state));
        assert!((&mut polled).now_or_never().is_none());
        assert!(
            (&mut polled).now_or_never().is_none(),
            "polled again, still waiting"
        );
        let unpolled = GraceOver::new(&drain.state);

        let started = tokio::time::Instant::now();
        let waiter = tokio::spawn(polled);
        drain.drain().await;
        assert!(started.elapsed() >= grace);
        assert!(drain.state.grace_over.load(Ordering::SeqCst));
        let ends = |future| tokio::time::timeout(Duration::from_secs(10), future);
        ends(tokio::spawn(unpolled))
            .await
            .expect("notified")
            .unwrap();
        ends(waiter).await.expect("woken").unwrap();
        // A call whose first poll comes after the signal sees the flag.
        let late = tokio::spawn(GraceOver::new(&drain.state));
        ends(late).await.expect("sees the flag").unwrap();
    }
}
