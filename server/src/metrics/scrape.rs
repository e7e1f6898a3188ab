//! The scrape endpoint: `GET /metrics` over HTTP/1.1 on a listener of its own, apart from the
//! gRPC port, so that the metrics are reachable whatever the gRPC port requires of its callers.

use std::{convert::Infallible, time::Duration};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::Metrics;

/// The content type of the OpenMetrics text format, which Prometheus negotiates and reads.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `metrics` on `listener` until the task is dropped: `GET` (or `HEAD`) `/metrics`
/// answers the exposition, any other path 404 and any other method on `/metrics` 405.
pub async fn serve(listener: TcpListener, metrics: Metrics) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors, most likely: wait rather than spin.
                tracing::warn!(%error, "accepting a metrics connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = respond(&metrics, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%error, "metrics connection ended with an error");
            }
        });
    }
}

fn respond(metrics: &Metrics, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let plain = |status: StatusCode, text: &'static str| {
        let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    };
    let path = request.uri().path();
    if !matches!(path, "/metrics" | "/readyz" | "/livez") {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: metrics are at /metrics, readiness at /readyz, liveness at /livez\n",
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    // The gRPC health in plain HTTP, for probes that cannot speak gRPC over TLS (a Kubernetes
    // gRPC probe has no TLS): `/readyz` is the whole server's health (`""`), `/livez` the
    // `liveness` entry, SERVING for as long as the process answers.
    match path {
        "/readyz" if metrics.is_ready() => return plain(StatusCode::OK, "SERVING\n"),
        "/readyz" => return plain(StatusCode::SERVICE_UNAVAILABLE, "NOT_SERVING\n"),
        "/livez" => return plain(StatusCode::OK, "SERVING\n"),
        _ => {}
    }
    let mut response = Response::new(Full::new(Bytes::from(metrics.encode())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(CONTENT_TYPE),
    );
    response
}
