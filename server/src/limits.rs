//! Limits of a call: how many run at once, how long each may take, how large its messages and
//! pages may be.
//!
//! [`LimitsLayer`] is a tower layer in front of every service of the server:
//!
//! - **Load shedding.** At most [`Limits::max_concurrent_requests`] calls run at once. One more
//!   is answered at once (not queued) with `RESOURCE_EXHAUSTED` carrying `RetryInfo`. A call
//!   holds its slot until its response body ends or is dropped, so a long stream counts for as
//!   long as it runs. Health checks and reflection are exempt: a busy server still answers its
//!   load balancer.
//! - **Deadlines.** A call's `grpc-timeout` bounds the whole call, stream included: past it,
//!   the handler or the stream is dropped (with the storage reads it was running) and the call
//!   ends with `DEADLINE_EXCEEDED`. tonic itself only bounds the handler's future, not the
//!   stream that follows it, and reports its timeout as `CANCELLED`.
//! - **Idle responses.** A response its client reads nothing of for
//!   [`Limits::stream_idle_timeout`] is ended with `ABORTED` (reason `STREAM_IDLE`), and its
//!   slot, stream and storage reads are freed: HTTP/2 flow control would otherwise let a client
//!   that stops reading hold them for as long as its connection lives.
//! - **Message sizes.** tonic answers a request above [`Limits::max_request_bytes`] with
//!   `OUT_OF_RANGE`; this layer turns that into `RESOURCE_EXHAUSTED` (the code the gRPC spec
//!   gives an oversized message) naming the limit.
//! - **Response compression.** Only as the request was compressed
//!   ([`crate::compression::respond_as_requested`]), whatever else the client accepts.

use std::{
    sync::{Arc, atomic::AtomicI64},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body::Body as HttpBody;
use prometheus_client::metrics::gauge::Gauge;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};
use tonic::{Status, body::Body};

use crate::{
    call_body::CallBody,
    error::{self, ServiceError},
    idle::IdleBound,
    metrics::{Metrics, SlotMetrics},
    routes::Route,
};

/// The limits of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Calls running at once (streams until their last message); more are refused.
    pub max_concurrent_requests: usize,
    /// The largest request message decoded, in bytes.
    pub max_request_bytes: usize,
    /// The largest response message sent, in bytes.
    pub max_response_bytes: usize,
    /// The largest `ListNeurons` page; larger requested sizes are lowered to it.
    pub max_page_size: usize,
    /// Streams (calls) one connection may have open at once, advertised to the client in
    /// HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS: below `max_concurrent_requests`, so that one
    /// connection cannot take every slot of the server.
    pub max_streams_per_connection: u32,
    /// How long a response may wait for its client to read anything before it is ended and
    /// what it holds is freed (see the `idle` module); `None`: no bound.
    pub stream_idle_timeout: Option<Duration>,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        // Calls mostly wait on storage or on their clients, so many more than the cores.
        max_concurrent_requests: 512,
        // The largest request is a StreamNeuronSplits list of --bulk-max-listed neurons
        // (~7 bytes each): 100,000 take ~700 KB.
        max_request_bytes: 4 << 20,
        // A neuron record is ~200 KB as protobuf; leave room for unusually large ones.
        max_response_bytes: 64 << 20,
        max_page_size: crate::page_token::MAX_PAGE_SIZE,
        // A quarter of the server's slots: an SDK client multiplexes a whole job over one
        // connection, and 128 calls in flight keep a connection busy.
        max_streams_per_connection: 128,
        // Long enough for a job that works between reads (an explainer's model call per
        // neuron), short enough that a client that stopped reading does not hold its slots
        // for long.
        stream_idle_timeout: Some(Duration::from_secs(120)),
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// How long a shed client should wait before trying again.
pub const OVERLOAD_RETRY_DELAY: Duration = Duration::from_millis(500);

/// A `grpc-timeout` header value: up to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if !value.is_ascii() {
        return None;
    }
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The tower layer applying [`Limits`] to every call; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct LimitsLayer {
    slots: Arc<Semaphore>,
    limits: Limits,
    idle: Option<IdleBound>,
    metrics: Option<SlotMetrics>,
}

impl LimitsLayer {
    /// The layer for `limits`, recording its slots in use and the responses it ends as idle
    /// into `metrics`, if given.
    pub fn new(limits: Limits, metrics: Option<&Metrics>) -> Self {
        let capacity = limits
            .max_concurrent_requests
            .clamp(1, Semaphore::MAX_PERMITS);
        let metrics = metrics.map(|metrics| metrics.slots(capacity));
        let idle = limits.stream_idle_timeout.map(|timeout| {
            let ended = metrics.as_ref().map(|m| m.idle_ended.clone());
            IdleBound::new(timeout, move || {
                if let Some(ended) = &ended {
                    ended.inc();
                }
            })
        });
        LimitsLayer {
            slots: Arc::new(Semaphore::new(capacity)),
            limits,
            idle,
            metrics,
        }
    }
}

/// A call's slot: given back, and counted out of the slots in use, when dropped.
struct Slot {
    _permit: OwnedSemaphorePermit,
    in_use: Option<Gauge<i64, AtomicI64>>,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, metrics: Option<&SlotMetrics>) -> Slot {
        let in_use = metrics.map(|metrics| metrics.in_use.clone());
        if let Some(in_use) = &in_use {
            in_use.inc();
        }
        Slot {
            _permit: permit,
            in_use,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(in_use) = &self.in_use {
            in_use.dec();
        }
    }
}

impl<S> tower::Layer<S> for LimitsLayer {
    type Service = LimitsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LimitsService {
            inner,
            layer: self.clone(),
        }
    }
}

/// [`LimitsLayer`]'s service.
#[derive(Debug, Clone)]
pub struct LimitsService<S> {
    inner: S,
    layer: LimitsLayer,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for LimitsService<S>
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

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        crate::compression::respond_as_requested(request.headers_mut());
        // The clone that was polled ready serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limits = self.layer.limits;
        let timeout = request
            .headers()
            .get(&crate::grpc_headers::GRPC_TIMEOUT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let slot = if Route::of(request.uri().path()).is_infrastructure() {
            None
        } else {
            match self.layer.slots.clone().try_acquire_owned() {
                Ok(permit) => Some(Slot::new(permit, self.layer.metrics.as_ref())),
                Err(_) => {
                    let status = Status::from(ServiceError::Overloaded {
                        limit: limits.max_concurrent_requests,
                        retry_after: OVERLOAD_RETRY_DELAY,
                    });
                    return Box::pin(async move { Ok(status.into_http()) });
                }
            }
        };
        // A millisecond early: tonic races the handler against the same deadline and would
        // answer CANCELLED; the gRPC spec, and clients, expect DEADLINE_EXCEEDED.
        let deadline = timeout.and_then(|timeout| {
            Some((
                Instant::now().checked_add(timeout)? - Duration::from_millis(1).min(timeout),
                timeout,
            ))
        });
        let idle = self.layer.idle.clone();
        // Read only if the call fails in tonic itself; cloning the URI shares its bytes.
        let uri = request.uri().clone();
        Box::pin(async move {
            let response = inner.call(request);
            let response = match deadline {
                None => response.await,
                Some((deadline, timeout)) => {
                    match tokio::time::timeout_at(deadline, response).await {
                        Ok(response) => response,
                        Err(_) => return Ok(deadline_status(timeout).into_http()),
                    }
                }
            };
            let response = response?;
            let response = explained(response.map(Body::new), uri.path(), &limits);
            Ok(response.map(|body| {
                let mut body = CallBody::new(body, slot)
                    .explain_errors(limits.max_request_bytes, limits.max_response_bytes);
                if let Some(idle) = &idle {
                    body = body.idle_bound(idle);
                }
                match deadline {
                    Some((deadline, timeout)) => body
                        .stop_on(async move {
                            tokio::time::sleep_until(deadline).await;
                            deadline_status(timeout)
                        })
                        .boxed(),
                    None => body.boxed(),
                }
            }))
        })
    }
}

fn deadline_status(timeout: Duration) -> Status {
    Status::from(ServiceError::DeadlineExceeded { timeout })
}

/// A response tonic made itself (a status alone, in the headers) carries no `ErrorInfo`; it
/// becomes the service's error for it (see [`error::explain`]).
fn explained<B>(response: http::Response<B>, path: &str, limits: &Limits) -> http::Response<B>
where
    B: Default,
{
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    if status.code() == tonic::Code::Ok || !status.details().is_empty() {
        return response;
    }
    error::explain(
        status,
        path,
        limits.max_request_bytes,
        limits.max_response_bytes,
    )
    .into_http()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        for (text, duration) in [
            ("1H", Duration::from_secs(3600)),
            ("2M", Duration::from_secs(120)),
            ("3S", Duration::from_secs(3)),
            ("450m", Duration::from_millis(450)),
            ("99999999u", Duration::from_micros(99_999_999)),
            ("7n", Duration::from_nanos(7)),
        ] {
            assert_eq!(parse_grpc_timeout(text), Some(duration), "{text}");
        }
        for bad in [
            "",
            "S",
            "1",
            "123456789S",
            "1x",
            "-1S",
            "1.5S",
            "１S",
            "S１",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }
}
