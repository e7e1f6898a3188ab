//! `activations-soak`: the release server under storage faults and hundreds of checked callers
//! for a bounded time; see `--help` and `BENCHMARKS.md`.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use activations_bench::{
    report,
    soak::{Plan, run, samples::LeakLimits},
};
use clap::Parser;

/// Serves a generated dataset through a web store that answers after a time to first byte and
/// fails a share of its requests (503, delays, resets, bodies cut short, bodies corrupted) to a
/// release `activations-server`, runs concurrent callers (summaries, split streams, resuming
/// bulk streams, streams dropped midway) for DURATION seconds, stops the server with SIGTERM
/// and starts it again on the same address halfway through, checks every answer against the
/// files, and watches the server's memory, descriptors and threads. Prints a summary; exits 1 on any wrong, lost or duplicated answer,
/// any error other than UNAVAILABLE, RESOURCE_EXHAUSTED or DEADLINE_EXCEEDED, or a leak.
#[derive(Debug, Parser)]
#[command(name = "activations-soak", version)]
struct Args {
    /// Seconds the callers run.
    #[arg(default_value_t = 180)]
    duration: u64,
    /// The `activations-server` binary; default: the one next to this executable.
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// The dataset's files (flat layout); generated there if it holds no `manifest.json`.
    #[arg(long, default_value = "target/soak-data")]
    dataset_dir: PathBuf,
    /// Layers of the dataset (and of the server's declared shape).
    #[arg(long, default_value_t = 2)]
    layers: u32,
    /// Neurons per layer.
    #[arg(long, default_value_t = 512)]
    neurons: u32,
    /// Seed of the generated data, the faults and the callers' draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The server's `--cache-bytes`: smaller than the dataset, so reads keep happening.
    #[arg(long, default_value = "32MiB")]
    cache_bytes: String,
    /// Concurrent callers.
    #[arg(long, default_value_t = 300)]
    callers: usize,
    /// SDK clients (one connection each) the callers share.
    #[arg(long, default_value_t = 6)]
    connections: usize,
    /// Fraction of the store's requests that fail.
    #[arg(long, default_value_t = 0.05)]
    fault_rate: f64,
    /// Longest injected delay, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    max_delay_ms: u64,
    /// The SDK's per-call deadline, in seconds.
    #[arg(long, default_value_t = 60)]
    call_timeout: u64,
    /// Attempts of the SDK's retry policy: 8 waits up to about 7 s in all, enough to ride out
    /// the server's restart (it drains, then starts again, in about 2 s).
    #[arg(long, default_value_t = 8)]
    attempts: u32,
    /// Seconds between two samples of the server's process.
    #[arg(long, default_value_t = 5)]
    sample_every: u64,
    /// RSS may end at most this many percent above its level after the warm-up (first third).
    #[arg(long, default_value_t = 25.0)]
    max_rss_growth_percent: f64,
    /// Open descriptors may end at most this many above their warm-up maximum.
    #[arg(long, default_value_t = 64)]
    max_fd_growth: u64,
    /// Threads may end at most this many above their warm-up maximum.
    #[arg(long, default_value_t = 16)]
    max_thread_growth: u64,
    /// The store's time to first byte, in milliseconds, on every request.
    #[arg(long, default_value_t = 20)]
    store_latency_ms: u64,
    /// Do not stop (SIGTERM) and restart the server halfway through.
    #[arg(long)]
    no_restart: bool,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let server_bin = match args.server_bin.clone() {
        Some(path) => path,
        None => match std::env::current_exe() {
            Ok(exe) => exe.with_file_name("activations-server"),
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::from(2);
            }
        },
    };
    let plan = Plan {
        duration: Duration::from_secs(args.duration),
        server_bin,
        dataset_dir: args.dataset_dir,
        layers: args.layers,
        neurons: args.neurons,
        seed: args.seed,
        cache_bytes: args.cache_bytes,
        callers: args.callers,
        connections: args.connections,
        fault_rate: args.fault_rate,
        max_delay: Duration::from_millis(args.max_delay_ms),
        call_timeout: Duration::from_secs(args.call_timeout),
        attempts: args.attempts,
        sample_every: Duration::from_secs(args.sample_every.max(1)),
        store_latency: Duration::from_millis(args.store_latency_ms),
        restart: !args.no_restart,
        leak_limits: LeakLimits {
            rss_growth: args.max_rss_growth_percent / 100.0,
            fd_growth: args.max_fd_growth,
            thread_growth: args.max_thread_growth,
        },
    };
    let report = match run(&plan).await {
        Ok(report) => report,
        Err(error) => {
            eprintln!("error: the soak could not run: {error}");
            return ExitCode::from(2);
        }
    };
    print!("{}", report.table(&report::machine()));
    if let Some(path) = args.json {
        let written = serde_json::to_string_pretty(&report)
            .map_err(|e| e.to_string())
            .and_then(|json| std::fs::write(&path, json).map_err(|e| e.to_string()));
        if let Err(error) = written {
            eprintln!("error: writing {}: {error}", path.display());
        }
    }
    if report.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
