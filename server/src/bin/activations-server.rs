//! `activations-server`: see `activations-server --help`.

use activations_server::{
    Ready, ServeConfig, config::Config, datasets::Datasets, metrics::Metrics, security::Reloader,
    service::ActivationsService, telemetry,
};
use clap::Parser;
use tokio::net::TcpListener;

/// mimalloc instead of glibc's malloc: it halves the cost of the many small allocations a gRPC
/// call makes, and memory freed on one thread is reused by the others (glibc keeps it in the
/// freeing thread's arena). Built without transparent huge pages (`no_thp`): with them, each
/// partly used 2 MiB region stays resident, which kept the server ~250 MiB above its cache
/// budget. See BENCHMARKS.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let config = Config::parse();
    telemetry::init_logging(&config.log, config.log_format);
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    // Parses and local file reads run on the store's reader threads (one per core); what
    // still blocks (object_store listing local directories or checking that a file exists)
    // uses Tokio's blocking pool. Its default allows 512 threads, and a burst grows it to dozens,
    // each keeping allocator pages of its own (memory above the cache budget) for no more
    // throughput than a few per core give.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(4 * cores)
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let security = config.security()?;
    let reloader = Reloader::new(
        config.credential_files(),
        security.tls.clone(),
        security.auth.clone(),
    );
    if let Some(reloader) = reloader {
        tokio::spawn(reloader.watch());
    }
    let metrics = config.metrics_listen.map(|_| Metrics::new());
    let options = config.open_options();
    let datasets = Datasets::open_observed(
        &config.datasets,
        &options,
        config.reopen(),
        metrics.as_ref(),
    )
    .await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let mut metrics_address = None;
    if let (Some(address), Some(metrics)) = (config.metrics_listen, &metrics) {
        let metrics_listener = TcpListener::bind(address)
            .await
            .map_err(|e| format!("cannot listen for metrics on {address}: {e}"))?;
        let address = metrics_listener.local_addr()?;
        metrics_address = Some(address);
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
    let ready = Ready {
        address: listener.local_addr()?,
        metrics_address,
    };
    println!("{}", ready.line());
    let config = ServeConfig {
        service,
        settings: config.server_settings(),
        security,
    };
    activations_server::serve(listener, config, shutdown_signal()).await?;
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
