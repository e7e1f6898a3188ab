//! Serving: the activation service plus health, reflection and compression on one listener,
//! behind TLS and bearer-token authentication when they are configured.

use std::{future::Future, time::Duration};

use activations_proto::wire::activation_service_server::ActivationServiceServer;
use tokio::net::TcpListener;
use tonic::{codec::CompressionEncoding, transport::server::TcpIncoming};

use crate::{
    dataset::Datasets,
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

/// Serves `datasets` on `listener` until `shutdown` completes, then lets in-flight calls finish.
///
/// Besides `ActivationService` it serves `grpc.health.v1.Health` (SERVING for the whole server
/// and for the service by name) and server reflection v1 and v1alpha, so every grpcurl version
/// can list, describe and call without `.proto` files. Responses are gzip- or zstd-compressed
/// when the client accepts it, and compressed requests are accepted.
///
/// `main` and the tests share this entry point; they differ only in the listener and the
/// shutdown signal they pass.
pub async fn run(
    listener: TcpListener,
    datasets: Datasets,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    run_service(listener, ActivationsService::new(datasets), shutdown).await
}

/// [`run`] with a service whose settings are already chosen.
pub async fn run_service(
    listener: TcpListener,
    service: ActivationsService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve(
        listener,
        service,
        ServerSettings::DEFAULT,
        Security::default(),
        shutdown,
    )
    .await
}

/// [`run_service`] with chosen limits and shutdown grace period.
pub async fn run_service_with(
    listener: TcpListener,
    service: ActivationsService,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve(listener, service, settings, Security::default(), shutdown).await
}

/// [`run_service`] with TLS and token authentication as `security` sets them.
pub async fn run_secured(
    listener: TcpListener,
    service: ActivationsService,
    security: Security,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve(
        listener,
        service,
        ServerSettings::DEFAULT,
        security,
        shutdown,
    )
    .await
}

/// Serves `service` with every setting: limits and shutdown grace, TLS and tokens.
///
/// Every call passes, outermost first: its span, log line and metrics; the drain, which refuses
/// new calls once shutdown starts; the token check; the limits (load shedding, deadlines,
/// request size). Health checks are exempt from all but the first.
///
/// With TLS, each accepted connection's handshake runs in its own task, bounded by
/// [`TLS_HANDSHAKE_TIMEOUT`](crate::security::tls::TLS_HANDSHAKE_TIMEOUT), so a slow or
/// plain-text peer never holds up the accept loop; a failed handshake closes that connection
/// only. With tokens, every call but health checks (and reflection, unless closed too) needs
/// `authorization: Bearer <token>`, else it is answered `UNAUTHENTICATED`.
///
/// When `shutdown` completes the server drains (see [`crate::shutdown`]): health turns
/// `NOT_SERVING`, new calls are refused with `UNAVAILABLE`, running calls get
/// `settings.shutdown_grace` to finish and are then ended with `UNAVAILABLE`; then the
/// listener and the connections close and this returns.
pub async fn serve(
    listener: TcpListener,
    service: ActivationsService,
    settings: ServerSettings,
    security: Security,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let limits = settings.limits;
    let service = service.with_max_page_size(limits.max_page_size);
    let drain = Drain::new(settings.shutdown_grace);
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ActivationServiceServer<ActivationsService>>()
        .await;

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
    let observe = ObserveLayer::new(service.metrics().cloned());
    let activations = ActivationServiceServer::new(service)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limits.max_request_bytes)
        .max_encoding_message_size(limits.max_response_bytes);

    // Without TCP_NODELAY a small response can sit out the peer's delayed ACK (~40 ms).
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let (close, closed) = tokio::sync::oneshot::channel::<()>();
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = &security.tls {
        server = server.tls_config(tls.server_config())?;
    }
    let serve = server
        // Outermost, so calls refused by the layers below are logged and counted too.
        .layer(observe)
        // Draining refuses a call before it takes one of the limited slots.
        .layer(drain.layer())
        .layer(AuthLayer::new(security.auth))
        .layer(LimitsLayer::new(limits))
        .add_service(activations)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, async {
            let _ = closed.await;
        });
    let sequence = async {
        shutdown.await;
        health
            .set_not_serving::<ActivationServiceServer<ActivationsService>>()
            .await;
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
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
