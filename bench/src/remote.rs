//! The remote-storage scenario: the dataset served by the benchmark's own web store
//! ([`activations_webstore`]) as blob storage far away serves it, with a time to first byte and
//! bandwidth caps per connection and in total, and a server with no cache reading it.
//!
//! At each time to first byte it measures one bulk stream, the per-call cold scenario (one
//! single-neuron `StreamNeuronSplits` per neuron, `cold_concurrency` at once) and, when a Python
//! with the reference loader is given, `load_neuron` plus the four splits in Python over the same
//! store (the faster of one thread and a pool). Each is compared with the limit measured in the
//! same run: `min(CPU ceiling, total bandwidth / bytes per neuron)`, the CPU ceiling being the
//! in-process read-and-parse of the cold scenario.
//!
//! That limit leaves out two costs this machine pays in the same run: the store itself (the web
//! store runs in this process, on the same cores) and checking each body's `Content-MD5`, which
//! costs about as much as parsing it. So each latency also measures the server's read path alone
//! ([`read_path`]): the dataset opened in this process exactly as the server opens it, without a
//! cache, and the same neurons read (fetched, checked, parsed) [`READ_PATH_CONCURRENCY`] at once,
//! with no gRPC and no client. Bulk against it is what the service loses to serving a stream.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use activations_client::{NeuronId, Selection};
use activations_format::shape::MANIFEST_FILE;
use activations_webstore::{FaultyHttpServer, Network};
use bytes::Bytes;
use serde::Serialize;

use activations_format::NeuronKey;
use activations_server::{
    Dataset, DatasetSpec,
    dataset::OpenOptions,
    store::{CacheConfig, heap_bytes},
};

use crate::{
    datagen::neuron_path,
    error::BenchError,
    launcher::Launcher,
    load::{Delivered, closed_loop},
    scenarios::{ALL_SPLITS, Figures, Plan, connect_to, count_neurons},
};

/// What the remote scenario runs.
#[derive(Debug, Clone, Serialize)]
pub struct RemotePlan {
    /// Times to first byte, one set of runs each.
    pub first_byte: Vec<Duration>,
    /// Bytes a second of one connection.
    pub per_connection: u64,
    /// Bytes a second of all connections together.
    pub total: u64,
    /// Neurons of the bulk stream (the first of the dataset).
    pub bulk_neurons: usize,
    /// Neurons of the per-call cold scenario.
    pub cold_neurons: usize,
    /// A Python with the reference loader, and the script that times it.
    pub python: Option<PythonLoader>,
}

/// How to time the reference Python loader.
#[derive(Debug, Clone, Serialize)]
pub struct PythonLoader {
    pub python: PathBuf,
    /// `bench/python_reference.py`.
    pub script: PathBuf,
    pub neurons: usize,
    /// Threads of the pool run (the other run uses one).
    pub threads: usize,
}

/// Reads at once of the read-path ceiling: the window a bulk stream reaches at 100 ms (past
/// 256 the stream's rate no longer grows on this machine; 128 lost a sixth of it at 50 ms).
pub const READ_PATH_CONCURRENCY: usize = 256;

/// The figures at one time to first byte.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteRun {
    pub first_byte_ms: u64,
    /// The server's read path alone, in this process ([`read_path`]).
    pub read_path: Figures,
    pub bulk: Figures,
    pub cold: Figures,
    /// The Python loader's neurons a second: one neuron after another, as a job's loop reads
    /// them, and with a pool of threads.
    pub python: Option<PythonFigures>,
}

/// The Python loader's neurons a second.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PythonFigures {
    pub one_thread: f64,
    pub pool: f64,
}

/// Everything the remote scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteResults {
    pub plan: RemotePlan,
    /// Mean size of the neuron files served.
    pub bytes_per_neuron: f64,
    /// The in-process read-and-parse ceiling, neurons a second.
    pub cpu_ceiling: f64,
    /// `total / bytes_per_neuron`.
    pub bandwidth_limit: f64,
    pub runs: Vec<RemoteRun>,
}

impl RemoteResults {
    /// `min(CPU ceiling, bandwidth limit)`, neurons a second.
    pub fn limit(&self) -> f64 {
        self.cpu_ceiling.min(self.bandwidth_limit)
    }
}

/// Runs the scenario at each time to first byte of `remote`, against servers from `launcher`;
/// `cpu_ceiling` is the in-process ceiling measured in the same run.
///
/// # Errors
///
/// An unreadable file, a server that does not start, a failed call, a Python run that fails.
pub async fn run_remote(
    plan: &Plan,
    remote: &RemotePlan,
    launcher: &Launcher,
    cpu_ceiling: f64,
) -> Result<RemoteResults, BenchError> {
    let ids: Vec<NeuronId> = plan
        .neuron_ids()
        .take(remote.bulk_neurons.max(remote.cold_neurons))
        .collect();
    let (files, bytes_per_neuron) = files(plan, &ids)?;
    let store = FaultyHttpServer::start(files);
    let bandwidth_limit = remote.total as f64 / bytes_per_neuron;
    let mut runs = Vec::new();
    for &first_byte in &remote.first_byte {
        store.set_network(Network {
            first_byte,
            per_connection: Some(remote.per_connection),
            total: Some(remote.total),
        });
        let first_byte_ms = first_byte.as_millis() as u64;
        let uri = store.url();
        let bulk_ids = &ids[..remote.bulk_neurons.min(ids.len())];
        let read_path = read_path(&uri, bulk_ids, READ_PATH_CONCURRENCY).await?;
        let bulk = {
            let server = launcher.start_uri(&uri, 0).await?;
            let client = connect_to(&server.url, plan, None).await?;
            let selection = Selection::Neurons(bulk_ids.to_vec());
            let n = plan.n_examples;
            let measurement = closed_loop(1, 1, move |_| {
                count_neurons(client.neuron_splits(selection.clone(), &ALL_SPLITS, Some(n)))
            })
            .await?;
            Figures::from(&measurement)
        };
        let cold = {
            let server = launcher.start_uri(&uri, 0).await?;
            let client = connect_to(&server.url, plan, None).await?;
            let cold_ids: Arc<[NeuronId]> = ids[..remote.cold_neurons.min(ids.len())].into();
            let n = plan.n_examples;
            let measurement = closed_loop(plan.cold_concurrency, cold_ids.len(), move |i| {
                let one = Selection::Neurons(vec![cold_ids[i]]);
                count_neurons(client.neuron_splits(one, &ALL_SPLITS, Some(n)))
            })
            .await?;
            Figures::from(&measurement)
        };
        let python = match &remote.python {
            Some(python) => Some(time_python(python, plan, &uri).await?),
            None => None,
        };
        eprintln!(
            "remote {first_byte_ms} ms: bulk {:.0} neurons/s, read path {:.0} neurons/s, \
             per-call cold {:.0} neurons/s, Python {}, limit {:.0} neurons/s (CPU \
             {cpu_ceiling:.0}, bandwidth {bandwidth_limit:.0})",
            bulk.neurons_per_second,
            read_path.neurons_per_second,
            cold.neurons_per_second,
            python.map_or("not run".to_string(), |p| format!(
                "{:.1} neurons/s (one thread), {:.1} (pool)",
                p.one_thread, p.pool
            )),
            cpu_ceiling.min(bandwidth_limit),
        );
        runs.push(RemoteRun {
            first_byte_ms,
            read_path,
            bulk,
            cold,
            python,
        });
    }
    Ok(RemoteResults {
        plan: remote.clone(),
        bytes_per_neuron,
        cpu_ceiling,
        bandwidth_limit,
        runs,
    })
}

/// The server's read path alone: the dataset at `uri` opened in this process as the server
/// opens it (object store, checksum checks, reader threads; no cache), and `ids` read
/// `concurrency` at once, with no gRPC and no client.
///
/// # Errors
///
/// The dataset does not open, or a neuron cannot be read.
pub async fn read_path(
    uri: &str,
    ids: &[NeuronId],
    concurrency: usize,
) -> Result<Figures, BenchError> {
    let spec = DatasetSpec {
        name: "remote".to_string(),
        uri: uri.to_string(),
    };
    let options = OpenOptions {
        cache: CacheConfig {
            max_bytes: 0,
            ..CacheConfig::default()
        },
        ..OpenOptions::default()
    };
    let dataset = Dataset::open(&spec, &options)
        .await
        .map_err(|e| BenchError::Ceiling(format!("opening {uri}: {e}")))?;
    let store = dataset.store.clone();
    let ids: Arc<[NeuronId]> = ids.into();
    let measurement = closed_loop(concurrency, ids.len(), move |i| {
        let (store, id) = (store.clone(), ids[i]);
        async move {
            let key = NeuronKey {
                layer: id.layer_index,
                neuron: id.neuron_index,
            };
            let record = store.neuron(key).await.map_err(|e| {
                activations_client::Error::from(tonic::Status::unavailable(format!(
                    "reading {key}: {e}"
                )))
            })?;
            Ok(Delivered {
                neurons: 1,
                records: 0,
                bytes: heap_bytes(&record) as u64,
            })
        }
    })
    .await?;
    Ok(Figures::from(&measurement))
}

/// The files the store serves, held in memory as a blob store holds them: the manifest and the
/// neurons `ids`; and their mean size.
fn files(plan: &Plan, ids: &[NeuronId]) -> Result<(HashMap<String, Bytes>, f64), BenchError> {
    let layout = plan.layout();
    let mut files = HashMap::new();
    let mut bytes = 0;
    for id in ids {
        let path = neuron_path(layout, id.layer_index, id.neuron_index);
        let data = std::fs::read(plan.dataset_dir.join(&path))?;
        bytes += data.len();
        files.insert(path_string(&path), Bytes::from(data));
    }
    let manifest = std::fs::read(plan.dataset_dir.join(MANIFEST_FILE))?;
    files.insert(MANIFEST_FILE.to_string(), Bytes::from(manifest));
    Ok((files, bytes as f64 / ids.len().max(1) as f64))
}

fn path_string(path: &Path) -> String {
    path.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// The reference loader's neurons a second over the store at `url`, with one thread and with a
/// pool of `threads`.
async fn time_python(
    python: &PythonLoader,
    plan: &Plan,
    url: &str,
) -> Result<PythonFigures, BenchError> {
    let mut rates = Vec::with_capacity(2);
    for threads in [1, python.threads.max(1)] {
        let output = tokio::process::Command::new(&python.python)
            .arg(&python.script)
            .arg(&plan.dataset_dir)
            .args(["--neurons", &python.neurons.to_string()])
            .args(["--threads", &threads.to_string()])
            .args(["-n", &plan.n_examples.to_string()])
            .args(["--base-url", url])
            .output()
            .await?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let rate = stdout
            .lines()
            .rev()
            .find_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .and_then(|result| result["neurons_per_s"].as_f64());
        match rate {
            Some(rate) if output.status.success() => rates.push(rate),
            _ => {
                return Err(BenchError::Ceiling(format!(
                    "{} {}: {}{}",
                    python.python.display(),
                    python.script.display(),
                    stdout,
                    String::from_utf8_lossy(&output.stderr)
                )));
            }
        }
    }
    Ok(PythonFigures {
        one_thread: rates[0],
        pool: rates[1],
    })
}

/// The scenario's table, in markdown.
pub fn markdown(results: &RemoteResults) -> String {
    use std::fmt::Write as _;

    let mib = |bytes: u64| bytes as f64 / f64::from(1u32 << 20);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Remote store: the benchmark's web store, {:.0} MiB/s per connection, {:.0} MiB/s in \
         total, {:.0} KB per neuron; server without cache. Limit = min(CPU ceiling {:.0}, \
         bandwidth {:.0}) = {:.0} neurons/s.\n",
        mib(results.plan.per_connection),
        mib(results.plan.total),
        results.bytes_per_neuron / 1e3,
        results.cpu_ceiling,
        results.bandwidth_limit,
        results.limit(),
    );
    let _ = writeln!(
        out,
        "| first byte | bulk neurons/s | bulk / limit | read path (in-process, {READ_PATH_CONCURRENCY} at once) neurons/s | bulk / read path | per-call cold (c={}) neurons/s | Python, one thread | Python, {} threads | bulk / Python one thread | bulk / Python pool |",
        results.runs.first().map_or(0, |run| run.cold.concurrency),
        results.plan.python.as_ref().map_or(0, |p| p.threads),
    );
    let _ = writeln!(
        out,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for run in &results.runs {
        let bulk = run.bulk.neurons_per_second;
        let python = |pick: fn(&PythonFigures) -> f64| {
            run.python
                .as_ref()
                .map_or(("not run".to_string(), String::new()), |p| {
                    (format!("{:.1}", pick(p)), format!("{:.0}x", bulk / pick(p)))
                })
        };
        let (one, one_ratio) = python(|p| p.one_thread);
        let (pool, pool_ratio) = python(|p| p.pool);
        let _ = writeln!(
            out,
            "| {} ms | {bulk:.0} | {:.0}% | {:.0} | {:.0}% | {:.0} | {one} | {pool} | {one_ratio} | {pool_ratio} |",
            run.first_byte_ms,
            100.0 * bulk / results.limit(),
            run.read_path.neurons_per_second,
            100.0 * bulk / run.read_path.neurons_per_second,
            run.cold.neurons_per_second,
        );
    }
    out
}
