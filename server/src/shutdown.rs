//! Draining shutdown: on SIGTERM the server stops taking new calls but lets the running ones
//! finish, within a grace period.
//!
//! The sequence ([`crate::server::run_service_with`] drives it):
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
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body::Body as HttpBody;
use tokio::sync::watch;
use tonic::{Status, body::Body};

use crate::{call_body::CallBody, error::ServiceError, limits::is_exempt};

/// The default of `--shutdown-grace`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// The shutdown state shared by the layer and the sequence. Cloning shares it.
#[derive(Debug, Clone)]
pub struct Drain {
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    grace: Duration,
    draining: AtomicBool,
    /// Calls running (exempt ones not counted).
    running: watch::Sender<usize>,
    /// Set when the grace period is over: every call still running ends.
    grace_over: watch::Sender<bool>,
}

impl Drain {
    /// Running calls get `grace` to finish once draining starts.
    pub fn new(grace: Duration) -> Drain {
        Drain {
            state: Arc::new(State {
                grace,
                draining: AtomicBool::new(false),
                running: watch::Sender::new(0),
                grace_over: watch::Sender::new(false),
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
        *self.state.running.borrow()
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
        let mut count = self.state.running.subscribe();
        let finished =
            tokio::time::timeout(self.state.grace, count.wait_for(|&running| running == 0)).await;
        if finished.is_err() {
            tracing::warn!(
                running = self.running(),
                "grace period over: ending the calls still running with UNAVAILABLE"
            );
            self.state.grace_over.send_replace(true);
        }
    }
}

/// Counts a running call until dropped (with its response body).
#[derive(Debug)]
struct Running(Arc<State>);

impl Running {
    fn start(state: &Arc<State>) -> Running {
        state.running.send_modify(|running| *running += 1);
        Running(state.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.send_modify(|running| *running -= 1);
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
        let running = (!is_exempt(request.uri().path())).then(|| Running::start(&self.state));
        if running.is_some() && self.state.draining.load(Ordering::SeqCst) {
            let status = Status::from(ServiceError::ShuttingDown);
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let grace = self.state.grace;
        let mut grace_over = self.state.grace_over.subscribe();
        let mut grace_over_body = grace_over.clone();
        Box::pin(async move {
            let response = tokio::select! {
                response = inner.call(request) => response?,
                () = grace_over_wait(&mut grace_over) => {
                    return Ok(Status::from(ServiceError::ShutdownGraceOver { grace }).into_http());
                }
            };
            Ok(response.map(|body| {
                CallBody::new(body, running)
                    .stop_on(async move {
                        grace_over_wait(&mut grace_over_body).await;
                        Status::from(ServiceError::ShutdownGraceOver { grace })
                    })
                    .boxed()
            }))
        })
    }
}

/// Completes when the grace period is over (never, if the server is gone).
async fn grace_over_wait(grace_over: &mut watch::Receiver<bool>) {
    if grace_over.wait_for(|&over| over).await.is_err() {
        std::future::pending::<()>().await;
    }
}
