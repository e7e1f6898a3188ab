//! Serving: the activation service plus health, reflection and compression on one listener,
//! behind TLS and bearer-token authentication when they are configured.

use std::future::Future;

use activations_proto::wire::activation_service_server::ActivationServiceServer;
use tokio::net::TcpListener;
use tonic::{codec::CompressionEncoding, transport::server::TcpIncoming};

use crate::{
    dataset::Datasets,
    security::{AuthLayer, Security},
    service::ActivationsService,
    telemetry::ObserveLayer,
};

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
    run_secured(listener, service, Security::default(), shutdown).await
}

/// [`run_service`] with TLS and token authentication as `security` sets them.
///
/// With TLS, each accepted connection's handshake runs in its own task, bounded by
/// [`TLS_HANDSHAKE_TIMEOUT`](crate::security::tls::TLS_HANDSHAKE_TIMEOUT), so a slow or
/// plain-text peer never holds up the accept loop; a failed handshake closes that connection
/// only. With tokens, every call but health checks (and reflection, unless closed too) needs
/// `authorization: Bearer <token>`, else it is answered `UNAUTHENTICATED` before reaching a
/// service.
pub async fn run_secured(
    listener: TcpListener,
    service: ActivationsService,
    security: Security,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
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
        // A neuron record is ~200 KB as protobuf; leave room for unusually large ones.
        .max_encoding_message_size(64 * 1024 * 1024);

    // Without TCP_NODELAY a small response can sit out the peer's delayed ACK (~40 ms).
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = &security.tls {
        server = server.tls_config(tls.server_config())?;
    }
    server
        // Outermost, so calls refused by the layers below are logged and counted too.
        .layer(observe)
        .layer(AuthLayer::new(security.auth))
        .add_service(activations)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}
