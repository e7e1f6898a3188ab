//! `activations-load`: runs the benchmark scenarios; see `--help` and `BENCHMARKS.md`.

use std::{path::PathBuf, process::ExitCode};

use activations_bench::{
    chart,
    datagen::{DatasetSpec, write_dataset},
    launcher::Launcher,
    remote::{self, PythonLoader, RemotePlan, run_remote},
    replicas::{self, ReplicasPlan, run_replicas},
    report::{self, JsonReport, Targets},
    scenarios::{Plan, run_all, run_cold},
};
use activations_format::{
    layout::Layout,
    shape::{MANIFEST_FILE, Shape},
};
use clap::Parser;

/// Measures the activation service (cold reads, warm calls against an echo ceiling, bulk
/// streams, memory under a cache budget) and prints one markdown table.
///
/// By default each scenario starts its own release `activations-server` (found next to this
/// binary) on the dataset in `--dataset-dir`, generated there first if it holds no
/// `manifest.json`. With `--server URL` every scenario runs against that server instead.
#[derive(Debug, Parser)]
#[command(name = "activations-load", version)]
struct Args {
    /// A running server to measure instead of starting one per scenario.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// Process id of the `--server`, to read its memory from /proc.
    #[arg(long, requires = "server")]
    server_pid: Option<u32>,
    /// The `activations-server` binary to start; default: the one next to this executable.
    #[arg(long, conflicts_with = "server")]
    server_bin: Option<PathBuf>,
    /// The `activations-echo` binary (the warm ceiling); default: the one next to this
    /// executable.
    #[arg(long)]
    echo_bin: Option<PathBuf>,
    /// The dataset's files (the cold ceiling reads them too).
    #[arg(long, default_value = "target/bench-data")]
    dataset_dir: PathBuf,
    /// Dataset name in requests; empty for the server's default.
    #[arg(long, default_value = "")]
    dataset: String,
    /// Layers of a dataset generated because `--dataset-dir` has none.
    #[arg(long, default_value_t = 4)]
    layers: u32,
    /// Neurons per layer of a generated dataset.
    #[arg(long, default_value_t = 1024)]
    neurons: u32,
    /// Seed of a generated dataset.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// `n_examples_per_split` of every request.
    #[arg(short = 'n', long, default_value_t = 5)]
    n_examples: u32,
    /// Distinct neurons the cold scenario reads.
    #[arg(long, default_value_t = 4096)]
    cold_neurons: usize,
    /// Concurrent calls of the cold scenario.
    #[arg(long, default_value_t = 16)]
    cold_concurrency: usize,
    /// Cache of the cold scenario's server (0: every call reads storage).
    #[arg(long, default_value = "0", value_parser = activations_server::config::parse_bytes)]
    cold_cache_bytes: u64,
    /// Threads of the in-process read-and-parse ceiling.
    #[arg(long, default_value_t = 2)]
    ceiling_threads: usize,
    /// Neurons the warm calls cycle over (they must fit in --warm-cache-bytes).
    #[arg(long, default_value_t = 64)]
    hot_neurons: usize,
    /// Warm calls per concurrency level (for the service and the echo ceiling each).
    #[arg(long, default_value_t = 20000)]
    warm_requests: usize,
    /// Concurrency levels of the warm scenario.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    warm_concurrency: Vec<usize>,
    /// Cache of the warm scenario's server.
    #[arg(long, default_value = "1GiB", value_parser = activations_server::config::parse_bytes)]
    warm_cache_bytes: u64,
    /// Neurons of each bulk stream (and memory pass): the first ones of the dataset.
    #[arg(long, default_value_t = 4096)]
    bulk_neurons: usize,
    /// Cache of the bulk scenario's servers.
    #[arg(long, default_value = "1GiB", value_parser = activations_server::config::parse_bytes)]
    bulk_cache_bytes: u64,
    /// Cache budget of the memory scenario's server.
    #[arg(long, default_value = "256MiB", value_parser = activations_server::config::parse_bytes)]
    memory_cache_bytes: u64,
    /// Bulk passes of the memory scenario.
    #[arg(long, default_value_t = 3)]
    memory_passes: usize,
    /// Runs of each scenario and ceiling (memory aside), each on a fresh server; the table
    /// reports the median run by throughput (per concurrency level for warm calls).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Where to write table.md, latency.svg and results.json.
    #[arg(long, default_value = "target/bench-report")]
    report: PathBuf,
    /// Print the results as JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Run only the cold scenario and its ceiling, and print their figures as JSON (no
    /// report is written): what `scripts/bench-compare.sh` runs between the Python loader's
    /// runs.
    #[arg(long)]
    cold_only: bool,
    /// Times to first byte of the remote-storage scenario, in milliseconds.
    #[arg(long, value_delimiter = ',', default_value = "20,50,100")]
    remote_first_byte_ms: Vec<u64>,
    /// Bandwidth of one connection to the remote store, in bytes a second.
    #[arg(long, default_value = "50MiB", value_parser = activations_server::config::parse_bytes)]
    remote_connection_bandwidth: u64,
    /// Bandwidth of all connections to the remote store together, in bytes a second.
    #[arg(long, default_value = "500MiB", value_parser = activations_server::config::parse_bytes)]
    remote_total_bandwidth: u64,
    /// Neurons of the remote scenario's bulk stream.
    #[arg(long, default_value_t = 2048)]
    remote_neurons: usize,
    /// Neurons of the remote scenario's per-call cold runs.
    #[arg(long, default_value_t = 512)]
    remote_cold_neurons: usize,
    /// A Python with the reference loader (`automated-interpretability`), timed on the remote
    /// store; default: `.venv/bin/python` if there is one.
    #[arg(long)]
    python: Option<PathBuf>,
    /// Neurons the Python loader reads at each latency.
    #[arg(long, default_value_t = 40)]
    python_neurons: usize,
    /// Threads of the Python loader's pool run.
    #[arg(long, default_value_t = 8)]
    python_threads: usize,
    /// Run only the remote-storage scenario (and the CPU ceiling it is compared with).
    #[arg(long, conflicts_with = "no_remote")]
    remote_only: bool,
    /// Skip the remote-storage scenario.
    #[arg(long)]
    no_remote: bool,
    /// Servers of the replicas scenario (on 127.0.0.2, 127.0.0.3, ...).
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Cache of each server of the replicas scenario.
    #[arg(long, default_value = "32MiB", value_parser = activations_server::config::parse_bytes)]
    replicas_cache_bytes: u64,
    /// Working set of the replicas scenario, in caches (its parsed size over the cache).
    #[arg(long, default_value_t = 2.5)]
    replicas_working_set: f64,
    /// Time to first byte of the replicas scenario's store, in milliseconds.
    #[arg(long, default_value_t = 20)]
    replicas_first_byte_ms: u64,
    /// Calls in flight in the replicas scenario's passes.
    #[arg(long, default_value_t = 16)]
    replicas_concurrency: usize,
    /// Run only the replicas scenario.
    #[arg(long, conflicts_with_all = ["no_replicas", "remote_only"])]
    replicas_only: bool,
    /// Skip the replicas scenario.
    #[arg(long)]
    no_replicas: bool,
}

/// The same allocator as the server's (mimalloc), so the client side of a benchmark costs what
/// a well-built client costs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let (layers, neurons) = dataset(&args)?;
    let next_to_this = |name: &str| std::env::current_exe().map(|exe| exe.with_file_name(name));
    let echo_binary = match &args.echo_bin {
        Some(binary) => binary.clone(),
        None => next_to_this("activations-echo")?,
    };
    let launcher = match (&args.server, &args.server_bin) {
        (Some(url), _) => Launcher::External {
            url: url.clone(),
            pid: args.server_pid,
            echo_binary,
        },
        (None, Some(binary)) => Launcher::Process {
            binary: binary.clone(),
            echo_binary,
        },
        (None, None) => Launcher::Process {
            binary: next_to_this("activations-server")?,
            echo_binary,
        },
    };
    let plan = Plan {
        dataset_dir: args.dataset_dir.clone(),
        dataset: args.dataset.clone(),
        layers,
        neurons,
        n_examples: args.n_examples,
        cold_neurons: args.cold_neurons,
        cold_concurrency: args.cold_concurrency,
        cold_cache_bytes: args.cold_cache_bytes,
        ceiling_threads: args.ceiling_threads,
        hot_neurons: args.hot_neurons,
        warm_requests: args.warm_requests,
        warm_concurrency: args.warm_concurrency.clone(),
        warm_cache_bytes: args.warm_cache_bytes,
        bulk_neurons: args.bulk_neurons,
        bulk_cache_bytes: args.bulk_cache_bytes,
        memory_cache_bytes: args.memory_cache_bytes,
        memory_passes: args.memory_passes,
        repeat: args.repeat.max(1),
    };
    if args.cold_only {
        let results = run_cold(&plan, &launcher).await?;
        println!("{}", serde_json::to_string(&results)?);
        return Ok(());
    }
    let replicas_plan = ReplicasPlan {
        replicas: args.replicas.max(1),
        cache_bytes: args.replicas_cache_bytes,
        working_set: args.replicas_working_set,
        first_byte: std::time::Duration::from_millis(args.replicas_first_byte_ms),
        concurrency: args.replicas_concurrency.max(1),
    };
    if args.replicas_only {
        let results = run_replicas(&plan, &replicas_plan, &launcher).await?;
        print!("{}", replicas::markdown(&results));
        return Ok(());
    }
    let remote_plan = remote_plan(&args);
    if args.remote_only {
        let ceiling = run_cold(&plan, &launcher).await?.cold_ceiling;
        let remote = run_remote(&plan, &remote_plan, &launcher, ceiling.neurons_per_second).await?;
        print!("{}", remote::markdown(&remote));
        return Ok(());
    }
    let results = run_all(&plan, &launcher).await?;
    let remote = match args.no_remote || remote_plan.first_byte.is_empty() {
        true => None,
        false => Some(
            run_remote(
                &plan,
                &remote_plan,
                &launcher,
                results.cold_ceiling.neurons_per_second,
            )
            .await?,
        ),
    };
    let replicas = match args.no_replicas {
        true => None,
        false => Some(run_replicas(&plan, &replicas_plan, &launcher).await?),
    };

    let machine = report::machine();
    let mut table = report::markdown(&results, &machine);
    if let Some(remote) = &remote {
        table.push('\n');
        table.push_str(&remote::markdown(remote));
    }
    if let Some(replicas) = &replicas {
        table.push('\n');
        table.push_str(&replicas::markdown(replicas));
    }
    let json = serde_json::to_string_pretty(&JsonReport {
        machine: &machine,
        results: &results,
        targets: Targets::of(&results),
        remote: remote.as_ref(),
        replicas: replicas.as_ref(),
    })?;
    std::fs::create_dir_all(&args.report)?;
    std::fs::write(args.report.join("table.md"), &table)?;
    std::fs::write(args.report.join("results.json"), &json)?;
    std::fs::write(
        args.report.join("latency.svg"),
        chart::latency_svg(&results.warm, &results.warm_ceiling),
    )?;
    eprintln!("report written to {}", args.report.display());
    if args.json {
        println!("{json}");
    } else {
        print!("{table}");
    }
    Ok(())
}

/// The remote scenario's settings; the Python loader from `--python`, else the project's
/// `.venv/bin/python` if it exists.
fn remote_plan(args: &Args) -> RemotePlan {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = args
        .python
        .clone()
        .or_else(|| Some(root.join(".venv/bin/python")).filter(|p| p.exists()));
    RemotePlan {
        first_byte: args
            .remote_first_byte_ms
            .iter()
            .map(|&ms| std::time::Duration::from_millis(ms))
            .collect(),
        per_connection: args.remote_connection_bandwidth,
        total: args.remote_total_bandwidth,
        bulk_neurons: args.remote_neurons,
        cold_neurons: args.remote_cold_neurons,
        python: python.map(|python| PythonLoader {
            python,
            script: root.join("bench/python_reference.py"),
            neurons: args.python_neurons,
            threads: args.python_threads,
        }),
    }
}

/// The dataset's shape, from its manifest; generates the dataset first if there is none.
fn dataset(args: &Args) -> Result<(u32, u32), Box<dyn std::error::Error>> {
    let manifest = args.dataset_dir.join(MANIFEST_FILE);
    if !manifest.exists() {
        eprintln!(
            "generating {} x {} neurons into {}",
            args.layers,
            args.neurons,
            args.dataset_dir.display()
        );
        let spec = DatasetSpec {
            layers: args.layers,
            neurons: args.neurons,
            seed: args.seed,
            layout: Layout::Flat,
        };
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        write_dataset(&args.dataset_dir, &spec, threads)?;
    }
    let (shape, _) = Shape::from_manifest(&std::fs::read(&manifest)?)?;
    let layers = shape.layers();
    let neurons = layers
        .first()
        .and_then(|&layer| shape.neurons(layer))
        .map_or(0, |neurons| neurons.len());
    if layers != (0..layers.len() as u32).collect::<Vec<_>>()
        || layers
            .iter()
            .any(|&l| shape.neurons(l).map(|n| n.len()) != Some(neurons))
    {
        return Err(format!(
            "{}: the benchmarks need layers 0..L each with neurons 0..N",
            manifest.display()
        )
        .into());
    }
    Ok((layers.len() as u32, neurons as u32))
}
