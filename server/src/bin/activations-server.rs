//! `activations-server`: see `activations-server --help`.

use activations_server::{
    config::Config, dataset::Datasets, metrics::Metrics, server, service::ActivationsService,
    telemetry,
};
use clap::Parser;
use tokio::net::TcpListener;

/// mimalloc instead of glibc's malloc. With glibc, memory freed by one thread stays in that
/// thread's arena, so a server whose cache turns over while parses run on several threads
/// grows far beyond its cache budget; mimalloc gives freed pages back and keeps RSS near the
/// budget. It also halves the cost of the many small allocations a gRPC call makes (see
/// BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    telemetry::init_logging(&config.log, config.log_format);
    match serve(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let security = config.security()?;
    let metrics = config.metrics_listen.map(|_| Metrics::new());
    let options = config.open_options();
    let datasets = match &metrics {
        Some(metrics) => Datasets::open_observed(&config.datasets, &options, metrics).await?,
        None => Datasets::open(&config.datasets, &options).await?,
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    if let (Some(address), Some(metrics)) = (config.metrics_listen, &metrics) {
        let metrics_listener = TcpListener::bind(address)
            .await
            .map_err(|e| format!("cannot listen for metrics on {address}: {e}"))?;
        let address = metrics_listener.local_addr()?;
        tracing::info!(%address, "serving metrics at http://{address}/metrics");
        tokio::spawn(activations_server::metrics::serve(
            metrics_listener,
            metrics.clone(),
        ));
    }
    tracing::info!(
        address = %listener.local_addr()?,
        datasets = %datasets,
        tls = security.tls_mode(),
        auth_tokens = security.auth.as_ref().map_or(0, |auth| auth.token_count()),
        reflection_requires_auth = security.auth.as_ref().is_some_and(|auth| auth.reflection_requires_auth()),
        "listening"
    );
    let mut service = ActivationsService::new(datasets).with_bulk_settings(config.bulk_settings());
    if let Some(metrics) = metrics {
        service = service.with_metrics(metrics);
    }
    server::serve(
        listener,
        service,
        config.server_settings(),
        security,
        shutdown_signal(),
    )
    .await?;
    tracing::info!("stopped");
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down: draining in-flight calls");
}
