//! What the server tells its operators about each call: a span, a log line when it ends, and
//! its metrics.
//!
//! [`ObserveLayer`] wraps every route of the gRPC server (the activation service, health,
//! reflection), so no handler needs code of its own to be counted. For each call it
//!
//! - opens an `rpc` span carrying the method (`rpc`), entered while the handler runs *and*
//!   while the response body is produced, so that the log lines of a stream's reads carry it
//!   too; the handlers add what only they know with [`record_dataset`], [`record_neuron`] and
//!   [`record_selection`]. The span is at DEBUG on the target `activations_server::requests`,
//!   like the line below: the default `info` log spends nothing on it;
//! - finds the call's gRPC status: in the response headers for a trailers-only response (an
//!   error returned by the handler), else in the trailers at the end of the body (a unary
//!   answer, a stream's end, an error in mid-stream). A response dropped before its end (the
//!   client cancelled or went away) is `CANCELLED`;
//! - when the call ends, logs one line at DEBUG on the target `activations_server::requests`
//!   (code, reason, duration, bytes), and records its code, duration and bytes into [`Metrics`]
//!   if the server has them. A failure that concerns the operator (storage, data, the server:
//!   [`ErrorReason::concerns_the_operator`]) is also logged at WARN with its message, which names
//!   the dataset and neuron: this layer sees every failed call, refused ones included, so no
//!   handler or error conversion logs one.
//!
//! Completed calls log at DEBUG so that the default `info` log stays quiet under load (a bulk
//! job makes thousands of calls a minute).
//! `--log info,activations_server::requests=debug` turns on the per-call spans and lines alone.

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use activations_proto::{ErrorReason, code_name, wire};
use bytes::Buf;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::Code;
use tonic_types::StatusExt as _;
use tower_layer::Layer;
use tower_service::Service;
use tracing::{Span, field};

use activations_format::neuron::NeuronKey;

use crate::{
    metrics::{Metrics, RpcLabels},
    routes::Route,
};

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines: time, level, spans with their fields, message.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (the message and
    /// the event's fields), `span` (the innermost span's fields) and `spans` (all of them).
    Json,
}

/// Installs the process's log subscriber: `filter` in `tracing`'s EnvFilter syntax (an
/// invalid one falls back to `info`), lines in `format`, to stderr.
pub fn init_logging(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

/// Adds the dataset a call reads to its span.
pub fn record_dataset(dataset: &str) {
    if crate::dataset::is_dataset_name(dataset) {
        Span::current().record("dataset", dataset);
    } else {
        // A name no dataset can have: bounded, like every quote of a request.
        Span::current().record("dataset", crate::error::excerpt(dataset));
    }
}

/// Adds the neuron a call reads to its span, as `layer/neuron`.
pub fn record_neuron(key: NeuronKey) {
    Span::current().record(
        "neuron",
        field::display(format_args!("{}/{}", key.layer, key.neuron)),
    );
}

/// Adds the selection of a bulk call to its span: how many neurons a list names, or the
/// ranges of a range.
pub fn record_selection(selection: impl fmt::Display) {
    Span::current().record("selection", field::display(selection));
}

/// A bulk selection as a span shows it: `12 neurons` for a list, `layers 0..2 neurons 5..`
/// for a range.
#[derive(Debug, Clone, Copy)]
pub struct SelectionSummary<'a>(pub &'a wire::NeuronSelection);

impl fmt::Display for SelectionSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use wire::neuron_selection::Selection;
        match &self.0.selection {
            None => f.write_str("none"),
            Some(Selection::Neurons(list)) => write!(f, "{} neurons", list.neuron_ids.len()),
            Some(Selection::Range(range)) => {
                write!(
                    f,
                    "layers {}..{} neurons {}..",
                    range.layer_start, range.layer_end, range.neuron_start
                )?;
                match range.neuron_end {
                    Some(end) => write!(f, "{end}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// The span of one call; the handler fills in the empty fields it knows.
///
/// DEBUG, on the target of the per-call lines, so that `activations_server::requests=debug`
/// turns on both and the default `info` log creates no span at all: an enabled span costs every
/// call a registry entry, its fields formatted as they are recorded, and an enter and exit per
/// poll: about 9,000 instructions per warm call, some 7% of what client and server spend on it
/// together (`bench/examples/warm_instructions.rs` under callgrind). The warnings of a call name
/// what it reads in their messages either way.
fn call_span(rpc: &str) -> Span {
    tracing::debug_span!(
        target: "activations_server::requests",
        "rpc",
        rpc,
        dataset = field::Empty,
        neuron = field::Empty,
        selection = field::Empty,
    )
}

/// What a failed call's status says beyond its code: the `ErrorInfo.reason` the service gave
/// (none from tonic's own errors) and the message.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub reason: Option<ErrorReason>,
    pub message: String,
}

impl Failure {
    /// The failure in `headers` (response headers or trailers), if they carry an error status.
    pub fn from_headers(headers: &HeaderMap) -> Option<Failure> {
        let status = tonic::Status::from_header_map(headers)?;
        if status.code() == Code::Ok {
            return None;
        }
        let reason = status
            .get_error_details()
            .error_info()
            .and_then(|info| info.reason.parse().ok());
        Some(Failure {
            reason,
            message: status.message().to_string(),
        })
    }
}

/// Logs a failure where an operator sees it: at WARN when it concerns them, else at DEBUG.
pub fn log_failure(code: Code, failure: &Failure) {
    let reason = failure.reason.map(ErrorReason::as_str);
    if failure
        .reason
        .is_some_and(ErrorReason::concerns_the_operator)
    {
        tracing::warn!(code = code_name(code), reason, "{}", failure.message);
    } else {
        tracing::debug!(code = code_name(code), reason, "{}", failure.message);
    }
}

/// The gRPC status code in `headers` (`grpc-status`), if they carry one. A value that is not a
/// code is `UNKNOWN`, as gRPC clients read it.
pub fn grpc_status(headers: &HeaderMap) -> Option<Code> {
    let value = headers.get(&crate::grpc_headers::GRPC_STATUS)?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok())
            .map_or(Code::Unknown, Code::from_i32),
    )
}

/// The service and method of a gRPC path, `/package.Service/Method`, from the server's fixed
/// set (see [`Route::labels`]).
fn rpc_of(path: &str) -> RpcLabels {
    let (service, rpc) = Route::labels(path);
    RpcLabels { service, rpc }
}

/// Observes every call of the service it wraps; see the [module](self).
#[derive(Debug, Clone, Default)]
pub struct ObserveLayer {
    metrics: Option<Metrics>,
}

impl ObserveLayer {
    /// Spans and logs every call, and records into `metrics` if given.
    pub fn new(metrics: Option<Metrics>) -> Self {
        ObserveLayer { metrics }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`ObserveLayer`] makes.
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    metrics: Option<Metrics>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Observe<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Body,
{
    type Response = http::Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future = ObservedCall<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let call = Call::start(request.uri().path(), self.metrics.clone());
        let inner = call.span.in_scope(|| self.inner.call(request));
        ObservedCall {
            inner,
            call: Some(call),
        }
    }
}

pin_project! {
    /// The response future of an observed call.
    #[derive(Debug)]
    pub struct ObservedCall<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, B, E> Future for ObservedCall<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: Body,
{
    type Output = Result<http::Response<ObservedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inner = this.inner;
        let result = std::task::ready!(match this.call.as_ref() {
            Some(call) => call.span.in_scope(|| inner.poll(cx)),
            None => inner.poll(cx),
        });
        let Some(mut call) = this.call.take() else {
            // Polled again after completing: a caller's bug; pass the result through.
            return Poll::Ready(result.map(|r| r.map(ObservedBody::unobserved)));
        };
        Poll::Ready(match result {
            Ok(response) => {
                call.header_code = grpc_status(response.headers());
                if call.header_code.is_some_and(|code| code != Code::Ok) {
                    call.failure = Failure::from_headers(response.headers());
                }
                Ok(response.map(|inner| ObservedBody {
                    inner,
                    call: Some(call),
                }))
            }
            Err(error) => {
                call.finish(Code::Unknown);
                Err(error)
            }
        })
    }
}

pin_project! {
    /// A response body that keeps its call's span entered while it is produced, and ends the
    /// call when its trailers pass, when it ends, or when it is dropped.
    #[derive(Debug)]
    pub struct ObservedBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }
}

impl<B> ObservedBody<B> {
    fn unobserved(inner: B) -> Self {
        ObservedBody { inner, call: None }
    }
}

impl<B: Body> Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let inner = this.inner;
        let polled = match this.call.as_ref() {
            Some(call) => call.span.in_scope(|| inner.poll_frame(cx)),
            None => inner.poll_frame(cx),
        };
        if let (Poll::Ready(frame), Some(call)) = (&polled, this.call.as_mut()) {
            match frame {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        call.bytes += data.remaining() as u64;
                    } else if let Some(trailers) = frame.trailers_ref() {
                        let code = grpc_status(trailers)
                            .or(call.header_code)
                            .unwrap_or(Code::Unknown);
                        if code != Code::Ok {
                            call.failure = call.failure.take().or(Failure::from_headers(trailers));
                        }
                        call.finish(code);
                    }
                }
                Some(Err(_)) => call.finish(Code::Unknown),
                None => call.finish(call.header_code.unwrap_or(Code::Unknown)),
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One call in progress. Ending it records it once; dropping it unended ends it with the
/// code of its headers if it has one (a trailers-only response needs no polling), else as
/// `CANCELLED`.
#[derive(Debug)]
struct Call {
    span: Span,
    labels: RpcLabels,
    metrics: Option<Metrics>,
    started: Instant,
    header_code: Option<Code>,
    /// The reason and message of a failed call's status.
    failure: Option<Failure>,
    bytes: u64,
    finished: bool,
}

impl Call {
    fn start(path: &str, metrics: Option<Metrics>) -> Call {
        let labels = rpc_of(path);
        let span = call_span(labels.rpc);
        if let Some(metrics) = &metrics {
            metrics.call_started();
        }
        Call {
            span,
            labels,
            metrics,
            started: Instant::now(),
            header_code: None,
            failure: None,
            bytes: 0,
            finished: false,
        }
    }

    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let elapsed = self.started.elapsed();
        let failure = self.failure.take();
        let reason = failure
            .as_ref()
            .and_then(|f| f.reason)
            .map(ErrorReason::as_str);
        if let Some(failure) = &failure {
            self.span.in_scope(|| log_failure(code, failure));
        }
        let code = code_name(code);
        if let Some(metrics) = &self.metrics {
            // The labels are from a fixed set: a path no route serves is one `unknown`
            // series, whoever calls it, so that arbitrary paths cannot grow the metrics.
            metrics.call_finished(&self.labels, code, elapsed, self.bytes);
        }
        self.span.in_scope(|| {
            tracing::debug!(
                target: "activations_server::requests",
                code,
                reason,
                duration_ms = elapsed.as_secs_f64() * 1e3,
                bytes = self.bytes,
                "call ended"
            );
        });
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(self.header_code.unwrap_or(Code::Cancelled));
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use futures::{FutureExt, future::BoxFuture};
    use http::HeaderValue;
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    type TestBody =
        StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

    /// A service that answers every call with the response its function makes.
    #[derive(Clone)]
    struct Answer(fn() -> BoxFuture<'static, http::Response<TestBody>>);

    impl Service<http::Request<()>> for Answer {
        type Response = http::Response<TestBody>;
        type Error = Infallible;
        type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            (self.0)().map(Ok).boxed()
        }
    }

    fn body(frames: Vec<Frame<Bytes>>) -> TestBody {
        StreamBody::new(futures::stream::iter(
            frames.into_iter().map(Ok).collect::<Vec<_>>(),
        ))
    }

    fn trailers(code: &str) -> Frame<Bytes> {
        Frame::trailers(headers(code))
    }

    fn observed(answer: Answer) -> (Metrics, Observe<Answer>) {
        let metrics = Metrics::new();
        let service = ObserveLayer::new(Some(metrics.clone())).layer(answer);
        (metrics, service)
    }

    fn request() -> http::Request<()> {
        http::Request::builder()
            .uri("/neuron_explainer.activations.v1.ActivationService/ListLayers")
            .body(())
            .unwrap()
    }

    fn count_line(code: &str) -> String {
        format!(
            r#"activations_rpc_requests_total{{service="neuron_explainer.activations.v1.ActivationService",rpc="ListLayers",code="{code}"}} 1"#
        )
    }

    #[tokio::test]
    async fn the_code_of_a_stream_comes_from_its_trailers() {
        let (metrics, mut service) = observed(Answer(|| {
            async {
                http::Response::new(body(vec![
                    Frame::data(Bytes::from_static(b"12345")),
                    trailers("5"),
                ]))
            }
            .boxed()
        }));
        let response = service.call(request()).await.unwrap();
        let in_flight = metrics.encode();
        assert!(
            in_flight.contains("activations_rpc_in_flight 1"),
            "{in_flight}"
        );
        response.into_body().collect().await.unwrap();
        let text = metrics.encode();
        assert!(text.contains(&count_line("NOT_FOUND")), "{text}");
        assert!(text.contains("activations_rpc_in_flight 0"), "{text}");
        assert!(
            text.contains(
                r#"activations_rpc_response_bytes_total{service="neuron_explainer.activations.v1.ActivationService",rpc="ListLayers"} 5"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"activations_rpc_duration_seconds_count{service="neuron_explainer.activations.v1.ActivationService",rpc="ListLayers"} 1"#
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_trailers_only_response_counts_without_its_body_being_read() {
        let (metrics, mut service) = observed(Answer(|| {
            async {
                let mut response = http::Response::new(body(Vec::new()));
                response
                    .headers_mut()
                    .insert("grpc-status", HeaderValue::from_static("3"));
                response
            }
            .boxed()
        }));
        drop(service.call(request()).await.unwrap());
        let text = metrics.encode();
        assert!(text.contains(&count_line("INVALID_ARGUMENT")), "{text}");
    }

    #[tokio::test]
    async fn a_stream_dropped_before_its_trailers_is_cancelled() {
        let (metrics, mut service) = observed(Answer(|| {
            async {
                http::Response::new(body(vec![
                    Frame::data(Bytes::from_static(b"1")),
                    Frame::data(Bytes::from_static(b"2")),
                    trailers("0"),
                ]))
            }
            .boxed()
        }));
        let mut body = service.call(request()).await.unwrap().into_body();
        body.frame().await.unwrap().unwrap();
        drop(body);
        let text = metrics.encode();
        assert!(text.contains(&count_line("CANCELLED")), "{text}");
        assert!(!text.contains(r#"code="OK""#), "{text}");
    }

    #[tokio::test]
    async fn a_call_dropped_before_it_answers_is_cancelled() {
        let (metrics, mut service) = observed(Answer(|| futures::future::pending().boxed()));
        let mut call = service.call(request());
        assert!((&mut call).now_or_never().is_none());
        drop(call);
        let text = metrics.encode();
        assert!(text.contains(&count_line("CANCELLED")), "{text}");
    }

    fn headers(status: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_str(status).unwrap());
        headers
    }

    #[test]
    fn a_failed_status_gives_its_reason_and_message_and_success_gives_none() {
        let error = crate::error::ServiceError::store(
            "xl",
            crate::error::Subject::Neuron(NeuronKey::new(1, 2)),
            crate::store::StoreError::NotFound {
                path: "1/2.json".to_string(),
            },
        );
        let message = error.to_string();
        let response = tonic::Status::from(error).into_http::<tonic::body::Body>();
        assert_eq!(
            Failure::from_headers(response.headers()),
            Some(Failure {
                reason: Some(ErrorReason::NeuronNotFound),
                message,
            })
        );
        let plain = tonic::Status::unimplemented("no such method").into_http::<tonic::body::Body>();
        assert_eq!(
            Failure::from_headers(plain.headers()),
            Some(Failure {
                reason: None,
                message: "no such method".to_string(),
            })
        );
        let mut ok = HeaderMap::new();
        ok.insert("grpc-status", HeaderValue::from_static("0"));
        assert_eq!(Failure::from_headers(&ok), None);
        assert_eq!(Failure::from_headers(&HeaderMap::new()), None);
    }

    #[test]
    fn status_is_read_from_grpc_status_and_garbage_is_unknown() {
        assert_eq!(grpc_status(&headers("0")), Some(Code::Ok));
        assert_eq!(grpc_status(&headers("5")), Some(Code::NotFound));
        assert_eq!(grpc_status(&headers("14")), Some(Code::Unavailable));
        assert_eq!(grpc_status(&headers("99")), Some(Code::Unknown));
        assert_eq!(grpc_status(&headers("five")), Some(Code::Unknown));
        assert_eq!(grpc_status(&HeaderMap::new()), None);
    }

    #[test]
    fn codes_are_named_as_grpc_names_them() {
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::NotFound), "NOT_FOUND");
        assert_eq!(code_name(Code::Cancelled), "CANCELLED");
        assert_eq!(code_name(Code::FailedPrecondition), "FAILED_PRECONDITION");
    }

    #[test]
    fn selections_are_summarised_by_size() {
        use wire::neuron_selection::Selection;
        let list = wire::NeuronSelection {
            selection: Some(Selection::Neurons(wire::NeuronIdList {
                neuron_ids: vec![wire::NeuronId::default(); 3],
            })),
        };
        assert_eq!(SelectionSummary(&list).to_string(), "3 neurons");
        let range = |neuron_end| wire::NeuronSelection {
            selection: Some(Selection::Range(wire::NeuronRange {
                layer_start: 0,
                layer_end: 2,
                neuron_start: 5,
                neuron_end,
            })),
        };
        assert_eq!(
            SelectionSummary(&range(None)).to_string(),
            "layers 0..2 neurons 5.."
        );
        assert_eq!(
            SelectionSummary(&range(Some(9))).to_string(),
            "layers 0..2 neurons 5..9"
        );
    }

    #[test]
    fn the_call_span_is_on_only_with_the_per_call_lines() {
        let span_under = |filter: &str| {
            let subscriber = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_writer(std::io::sink)
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                let span = call_span("GetNeuronSummary");
                (!span.is_disabled()).then(|| span.metadata().map(|m| (m.name(), m.target())))
            })
        };
        assert_eq!(span_under("info"), None);
        assert_eq!(span_under("activations_server=info"), None);
        let on = Some(Some(("rpc", "activations_server::requests")));
        assert_eq!(span_under("info,activations_server::requests=debug"), on);
        assert_eq!(span_under("debug"), on);
    }

    #[test]
    fn paths_split_into_service_and_method() {
        let labels = rpc_of("/neuron_explainer.activations.v1.ActivationService/ListLayers");
        assert_eq!(
            labels.service,
            "neuron_explainer.activations.v1.ActivationService"
        );
        assert_eq!(labels.rpc, "ListLayers");
        assert_eq!(rpc_of("/odd").rpc, "unknown");
        assert_eq!(rpc_of("/made.up.Service/AnyMethod123").rpc, "unknown");
    }
}
