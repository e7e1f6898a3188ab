//! Serving: the activation service plus health, reflection and compression on one listener,
//! behind TLS and bearer-token authentication when they are configured.

use std::{future::Future, net::SocketAddr, time::Duration};

use activations_proto::wire::activation_service_server::ActivationServiceServer;
use futures::StreamExt;
use tokio::net::TcpListener;
use tonic::{codec::CompressionEncoding, transport::server::TcpIncoming};

use crate::{
    datasets::{DatasetState, Datasets, HEALTH_PREFIX},
    handshake::{self, Opening, Transport},
    limits::{Limits, LimitsLayer},
    security::{AuthLayer, Security},
    service::ActivationsService,
    shutdown::Drain,
    telemetry::ObserveLayer,
};

/// Settings of the server around the service: limits of calls, and the shutdown grace period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerSettings {
    pub limits: Limits,
    /// How long running calls may go on once shutdown starts.
    pub shutdown_grace: Duration,
}

impl ServerSettings {
    pub const DEFAULT: ServerSettings = ServerSettings {
        limits: Limits::DEFAULT,
        shutdown_grace: crate::shutdown::DEFAULT_GRACE,
    };
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings::DEFAULT
    }
}

/// How long closing the connections may take once every call has ended: a client that stopped
/// reading a stream holds its connection open, and must not hold the process.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("building the reflection service failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// What a server serves and how: the service over its datasets, the limits and shutdown grace
/// around it, and its TLS and tokens.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub service: ActivationsService,
    pub settings: ServerSettings,
    pub security: Security,
}

impl ServeConfig {
    /// `service` with the default limits and shutdown grace, in plain text, without tokens.
    pub fn new(service: ActivationsService) -> Self {
        ServeConfig {
            service,
            settings: ServerSettings::DEFAULT,
            security: Security::default(),
        }
    }
}

impl From<ActivationsService> for ServeConfig {
    fn from(service: ActivationsService) -> Self {
        ServeConfig::new(service)
    }
}

impl From<Datasets> for ServeConfig {
    fn from(datasets: Datasets) -> Self {
        ServeConfig::new(ActivationsService::new(datasets))
    }
}

/// The line `activations-server` prints on its standard output once it accepts calls, for the
/// programs that start it (tests, benchmarks, scripts): one JSON object, such as
/// `{"event":"ready","address":"127.0.0.1:50051","metrics_address":null}`. Its log, on standard
/// error, is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ready {
    /// Where the gRPC service listens.
    pub address: SocketAddr,
    /// Where `GET /metrics` is answered, with `--metrics-listen`.
    pub metrics_address: Option<SocketAddr>,
}

impl Ready {
    /// The line to print (without its newline).
    pub fn line(&self) -> String {
        serde_json::to_string(&Line::Ready(*self)).expect("a ready line serializes")
    }

    /// Reads a ready line; `None` for any other line.
    pub fn parse(line: &str) -> Option<Ready> {
        match serde_json::from_str(line.trim()) {
            Ok(Line::Ready(ready)) => Some(ready),
            Err(_) => None,
        }
    }
}

/// The lines of standard output, told apart by their `event`.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
enum Line {
    Ready(Ready),
}

/// Serves `config.service` on `listener` until `shutdown` completes, then lets in-flight calls
/// finish.
///
/// Besides `ActivationService` it serves `grpc.health.v1.Health` (SERVING for the whole server
/// and for the service by name; each dataset as `dataset/NAME`, SERVING once it is open) and server reflection v1 and v1alpha, so every grpcurl version
/// can list, describe and call without `.proto` files. Responses are gzip- or zstd-compressed
/// when the client accepts it, and compressed requests are accepted.
///
/// The one way to run a server: `main`, the tests and the benchmarks call it, and differ only
/// in the listener, the configuration and the shutdown signal they pass.
pub async fn serve(
    listener: TcpListener,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let ServeConfig {
        service,
        settings,
        security,
    } = config;
    let limits = settings.limits;
    let service = service
        .with_max_page_size(limits.max_page_size)
        .with_max_response_bytes(limits.max_response_bytes);
    let drain = Drain::new(settings.shutdown_grace);
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(LIVENESS, tonic_health::ServingStatus::Serving)
        .await;
    let datasets = service.datasets().clone();
    // Not ready until `report_datasets` says so: tonic's reporter starts the whole server SERVING.
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    let metrics = service.metrics().cloned();
    let datasets_health = report_datasets(datasets.clone(), health.clone(), metrics.clone());

    // Both reflection versions describe every service, each other included, so a client that
    // speaks either sees the whole server.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(activations_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    // Every call gets a span, a log line when it ends, and its metrics if there are any.
    let observe = ObserveLayer::new(metrics.clone());
    let activations = ActivationServiceServer::new(service)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limits.max_request_bytes)
        .max_encoding_message_size(limits.max_response_bytes);

    // Without TCP_NODELAY a small response can sit out the peer's delayed ACK (~40 ms).
    let tcp = TcpIncoming::from(listener).with_nodelay(Some(true));
    let transports = match &security.tls {
        None => tcp.map(|accepted| accepted.map(Transport::Plain)).boxed(),
        Some(tls) => tls
            .handshakes(tcp)
            .map(|accepted| accepted.map(|stream| Transport::Tls(Box::new(stream))))
            .boxed(),
    };
    // A peer that never finishes opening its connection is cut off.
    let incoming = transports
        .map(|accepted| accepted.map(|stream| Opening::new(stream, handshake::OPENING_TIMEOUT)));
    let (close, closed) = tokio::sync::oneshot::channel::<()>();
    // Advertised to every client: one connection cannot hold every slot of the server.
    let server = tonic::transport::Server::builder()
        .max_concurrent_streams(limits.max_streams_per_connection);
    let serve = server
        // Outermost, so calls refused by the layers below are logged and counted too.
        .layer(observe)
        // Draining refuses a call before it takes one of the limited slots.
        .layer(drain.layer())
        .layer(AuthLayer::new(security.auth))
        .layer(LimitsLayer::new(limits, metrics.as_ref()))
        .add_service(activations)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, async {
            let _ = closed.await;
        });
    let sequence = async {
        let mut shutdown = std::pin::pin!(shutdown);
        tokio::select! {
            () = &mut shutdown => {}
            () = datasets_health => shutdown.await,
        }
        for dataset in datasets.states() {
            health
                .set_service_status(
                    health_name(dataset.name()),
                    tonic_health::ServingStatus::NotServing,
                )
                .await;
        }
        health
            .set_not_serving::<ActivationServiceServer<ActivationsService>>()
            .await;
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        if let Some(metrics) = &metrics {
            metrics.set_ready(false);
        }
        drain.drain().await;
        let _ = close.send(());
    };
    let mut serve = std::pin::pin!(serve);
    tokio::select! {
        served = &mut serve => return Ok(served?),
        () = sequence => {}
    }
    match tokio::time::timeout(CLOSE_TIMEOUT, serve).await {
        Ok(served) => served?,
        Err(_) => tracing::warn!(
            "connections still open {CLOSE_TIMEOUT:?} after every call ended: closing them"
        ),
    }
    Ok(())
}

/// The health entry that stays SERVING for as long as the process runs, draining included: what
/// a liveness probe checks (readiness checks the whole server, `""`).
pub const LIVENESS: &str = "liveness";

/// A dataset's name in the health service.
fn health_name(dataset: &str) -> String {
    format!("{HEALTH_PREFIX}{dataset}")
}

/// Keeps the health (and the metrics' readiness, `/readyz`) up to date: each dataset's (`dataset/NAME`) `SERVING` once it is open,
/// `NOT_SERVING` while its store cannot be read; the whole server's (`""` and the activation
/// service's) `SERVING` once every dataset has opened or failed an attempt (then known to be
/// down, and answered `UNAVAILABLE` with the cause), `NOT_SERVING` before.
async fn report_datasets(
    datasets: Datasets,
    health: tonic_health::server::HealthReporter,
    metrics: Option<crate::metrics::Metrics>,
) {
    let mut changes = datasets.changes();
    loop {
        changes.mark_unchanged();
        if let Some(metrics) = &metrics {
            metrics.set_ready(datasets.settled());
        }
        let ready = if datasets.settled() {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        health.set_service_status("", ready).await;
        health
            .set_service_status(
                <ActivationServiceServer<ActivationsService> as tonic::server::NamedService>::NAME,
                ready,
            )
            .await;
        for state in datasets.states() {
            let status = match state {
                DatasetState::Open(_) => tonic_health::ServingStatus::Serving,
                DatasetState::Unavailable { .. } => tonic_health::ServingStatus::NotServing,
            };
            health
                .set_service_status(health_name(state.name()), status)
                .await;
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_line_reads_back_and_nothing_else_does() {
        let ready = Ready {
            address: "127.0.0.1:50051".parse().unwrap(),
            metrics_address: Some("127.0.0.1:9090".parse().unwrap()),
        };
        assert_eq!(
            ready.line(),
            r#"{"event":"ready","address":"127.0.0.1:50051","metrics_address":"127.0.0.1:9090"}"#
        );
        assert_eq!(Ready::parse(&ready.line()), Some(ready));
        let without = Ready {
            metrics_address: None,
            ..ready
        };
        assert_eq!(
            Ready::parse(&format!("{}\n", without.line())),
            Some(without)
        );
        for other in [
            "2026-01-01T00:00:00Z  INFO listening address=127.0.0.1:50051",
            r#"{"event":"stopped","address":"127.0.0.1:50051","metrics_address":null}"#,
            r#"{"address":"127.0.0.1:50051","metrics_address":null}"#,
            "",
        ] {
            assert_eq!(Ready::parse(other), None, "{other}");
        }
    }
}
