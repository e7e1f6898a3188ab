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
//! - **Message sizes.** tonic answers a request above [`Limits::max_request_bytes`] with
//!   `OUT_OF_RANGE`; this layer turns that into `RESOURCE_EXHAUSTED` (the code the gRPC spec
//!   gives an oversized message) naming the limit.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body::Body as HttpBody;
use tokio::{sync::Semaphore, time::Instant};
use tonic::{Status, body::Body};

use crate::{call_body::CallBody, error::ServiceError, routes::Route, upstream};

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
}

impl LimitsLayer {
    pub fn new(limits: Limits) -> Self {
        LimitsLayer {
            slots: Arc::new(Semaphore::new(
                limits
                    .max_concurrent_requests
                    .clamp(1, Semaphore::MAX_PERMITS),
            )),
            limits,
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

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        // The clone that was polled ready serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limits = self.layer.limits;
        let timeout = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let slot = if Route::of(request.uri().path()).is_infrastructure() {
            None
        } else {
            match self.layer.slots.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
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
            let response = oversized_request(response.map(Body::new), &limits);
            Ok(response.map(|body| {
                let body = CallBody::new(body, slot);
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

/// tonic's answer to a request message above the limit is `OUT_OF_RANGE` with a terse message;
/// it becomes `RESOURCE_EXHAUSTED` naming the limit and what to do.
fn oversized_request<B>(response: http::Response<B>, limits: &Limits) -> http::Response<B>
where
    B: Default,
{
    let oversized = Status::from_header_map(response.headers())
        .is_some_and(|status| upstream::is_oversized_request(&status));
    if !oversized {
        return response;
    }
    Status::from(ServiceError::RequestTooLarge {
        limit: limits.max_request_bytes,
    })
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
