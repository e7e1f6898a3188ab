//! The scenarios of `activations-load` and the ceilings they are compared with, measured in the
//! same run so their ratios hold on a noisy machine.
//!
//! | scenario | server | calls | figures |
//! | --- | --- | --- | --- |
//! | cold | fresh, cache smaller than the dataset | one `StreamNeuronSplits` per distinct neuron, 4 splits | neurons/s, p50, p99 |
//! | cold ceiling | none | the same files read and parsed in this process | neurons/s |
//! | warm | cache holding the hot set, warmed first | `StreamActivationRecords` of the valid split | req/s, p50/p90/p99 per concurrency |
//! | warm ceiling (echo) | [`EchoService`], a process of its own like the server (`activations-echo`) | the same calls, answered with pre-encoded bytes | the same |
//! | bulk | fresh | one `StreamNeuronSplits` over a range, 4 splits, plain and zstd | neurons/s, records/s, MB/s |
//! | memory | fresh, cache of a set budget | repeated bulk passes over the dataset | RSS after each pass, peak RSS |

use std::{
    fs,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use activations_client::{
    ActivationsClient, Compression, NeuronId, NeuronSplitsStream, Selection, Split, neuron_id, pb,
};
use activations_format::{layout::Layout, neuron_json};
use activations_proto::wire;
use futures::TryStreamExt;
use prost::Message;
use serde::Serialize;

use crate::{
    datagen::neuron_path,
    echo::EchoService,
    error::BenchError,
    launcher::{Launcher, RunningServer},
    load::{Delivered, Measurement, closed_loop, new_histogram},
    process_memory::ProcessMemory,
};

/// The four splits, as the cold and bulk scenarios request them.
pub const ALL_SPLITS: [Split; 4] = [Split::Train, Split::Calibration, Split::Valid, Split::Test];

/// What to run, and how big. Neurons are taken in dataset order (layer by layer).
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The dataset's files; the cold ceiling reads them directly.
    pub dataset_dir: PathBuf,
    /// Dataset name in requests; empty for the server's default.
    pub dataset: String,
    /// The dataset holds layers `0..layers`, each with neurons `0..neurons`.
    pub layers: u32,
    pub neurons: u32,
    /// `n_examples_per_split` of every request.
    pub n_examples: u32,
    /// Distinct neurons the cold scenario reads, each once.
    pub cold_neurons: usize,
    pub cold_concurrency: usize,
    pub cold_cache_bytes: u64,
    /// Threads of the in-process cold ceiling.
    pub ceiling_threads: usize,
    /// Neurons the warm calls cycle over; they must fit in `warm_cache_bytes`.
    pub hot_neurons: usize,
    /// Calls per concurrency level, for the service and for the echo ceiling alike.
    pub warm_requests: usize,
    pub warm_concurrency: Vec<usize>,
    pub warm_cache_bytes: u64,
    /// Neurons of each bulk stream: the first ones of the dataset, layer by layer.
    pub bulk_neurons: usize,
    pub bulk_cache_bytes: u64,
    pub memory_cache_bytes: u64,
    /// Bulk passes over `bulk_neurons` in the memory scenario.
    pub memory_passes: usize,
    /// Runs of each scenario and ceiling except memory; the median run is reported.
    pub repeat: usize,
}

impl Plan {
    /// Every neuron of the dataset, layer by layer.
    pub fn neuron_ids(&self) -> impl Iterator<Item = NeuronId> + use<> {
        let neurons = self.neurons;
        (0..self.layers).flat_map(move |layer| (0..neurons).map(move |n| neuron_id(layer, n)))
    }

    /// The first `bulk_neurons` neurons as a range: whole layers, then part of the next one
    /// (as an explicit list if the count is not a whole number of layers).
    fn bulk_selection(&self) -> Selection {
        let count = self.bulk_neurons.min(self.neuron_count());
        let neurons = self.neurons as usize;
        if count.is_multiple_of(neurons) {
            Selection::Range {
                layers: 0..(count / neurons) as u32,
                neurons: Some(0..self.neurons),
            }
        } else if count < neurons {
            Selection::Range {
                layers: 0..1,
                neurons: Some(0..count as u32),
            }
        } else {
            Selection::Neurons(self.neuron_ids().take(count).collect())
        }
    }

    fn neuron_count(&self) -> usize {
        self.layers as usize * self.neurons as usize
    }

    /// The layout of the dataset's files: `neurons/` if that directory exists.
    pub(crate) fn layout(&self) -> Layout {
        if self.dataset_dir.join("neurons").is_dir() {
            Layout::Neurons
        } else {
            Layout::Flat
        }
    }
}

/// Throughput and latency of one run, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub concurrency: usize,
    pub requests: u64,
    pub seconds: f64,
    pub neurons: u64,
    pub records: u64,
    pub response_bytes: u64,
    pub requests_per_second: f64,
    pub neurons_per_second: f64,
    pub records_per_second: f64,
    pub megabytes_per_second: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
}

impl From<&Measurement> for Figures {
    fn from(m: &Measurement) -> Self {
        Figures {
            concurrency: m.concurrency,
            requests: m.requests,
            seconds: m.elapsed.as_secs_f64(),
            neurons: m.delivered.neurons,
            records: m.delivered.records,
            response_bytes: m.delivered.bytes,
            requests_per_second: m.requests_per_second(),
            neurons_per_second: m.neurons_per_second(),
            records_per_second: m.records_per_second(),
            megabytes_per_second: m.megabytes_per_second(),
            p50_ms: m.latency_ms(0.50),
            p90_ms: m.latency_ms(0.90),
            p99_ms: m.latency_ms(0.99),
        }
    }
}

/// One bulk stream's figures, and whether responses were zstd-compressed.
#[derive(Debug, Clone, Serialize)]
pub struct BulkRun {
    pub compression: Option<&'static str>,
    pub figures: Figures,
}

/// One pass of the memory scenario and the server's resident memory after it.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryPass {
    pub figures: Figures,
    /// `VmRSS` after the pass; `None` when the server's memory cannot be read.
    pub rss_bytes: Option<u64>,
}

/// The memory scenario: a cache budget against what the server held.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryRun {
    pub cache_bytes: u64,
    pub passes: Vec<MemoryPass>,
    /// `VmHWM` at the end: the most the server ever held.
    pub peak_rss_bytes: Option<u64>,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub plan: Plan,
    /// Whether each scenario got a server started for it (false against `--server URL`).
    pub fresh_servers: bool,
    pub cold: Figures,
    pub cold_ceiling: Figures,
    /// Response bytes of one warm call (the valid split).
    pub warm_response_bytes: u64,
    pub warm: Vec<Figures>,
    pub warm_ceiling: Vec<Figures>,
    pub bulk: Vec<BulkRun>,
    pub memory: MemoryRun,
}

/// The cold scenario and its in-process ceiling, run back to back.
#[derive(Debug, Clone, Serialize)]
pub struct ColdResults {
    /// Whether the cold runs got a server started for them (false against `--server URL`).
    pub fresh_servers: bool,
    pub cold: Figures,
    pub cold_ceiling: Figures,
}

/// Runs every scenario and ceiling of `plan`, each scenario against a server from `launcher`,
/// logging progress on stderr.
///
/// # Errors
///
/// The first failure: a server that does not start, a failed call, an unreadable file.
pub async fn run_all(plan: &Plan, launcher: &Launcher) -> Result<Results, BenchError> {
    let runs = plan.repeat.max(1);
    let ColdResults {
        fresh_servers,
        cold,
        cold_ceiling,
    } = run_cold(plan, launcher).await?;
    let mut warm_runs = Vec::with_capacity(runs);
    for _ in 0..runs {
        warm_runs.push(warm(plan, launcher).await?);
    }
    let warm = WarmRuns::median(warm_runs);
    let mut bulk = Vec::new();
    for compression in [None, Some(Compression::Zstd)] {
        let name = format!("bulk {}", compression.map_or("uncompressed", |_| "zstd"));
        let run = median_run(
            runs,
            &name,
            || self::bulk(plan, launcher, compression),
            |run| &run.figures,
        )
        .await?;
        bulk.push(run);
    }
    let memory = memory(plan, launcher).await?;
    Ok(Results {
        plan: plan.clone(),
        fresh_servers,
        cold,
        cold_ceiling,
        warm_response_bytes: warm.response_bytes,
        warm: warm.service,
        warm_ceiling: warm.echo,
        bulk,
        memory,
    })
}

/// Only the cold scenario and its ceiling (the median of `plan.repeat` runs each), after
/// reading the cold files once so that both find them in the page cache. The comparison with
/// the Python loader runs this between the loader's runs, so that both meet the machine in the
/// same state.
///
/// # Errors
///
/// As [`run_all`].
pub async fn run_cold(plan: &Plan, launcher: &Launcher) -> Result<ColdResults, BenchError> {
    let runs = plan.repeat.max(1);
    let paths = cold_paths(plan);
    tokio::task::spawn_blocking(move || prime_page_cache(&paths))
        .await
        .expect("the page-cache reader panicked")?;
    let (cold, fresh_servers) = median_run(
        runs,
        "cold",
        || cold(plan, launcher),
        |(figures, _)| figures,
    )
    .await?;
    let cold_ceiling = median_run(
        runs,
        "cold ceiling",
        || cold_ceiling(plan),
        |figures| figures,
    )
    .await?;
    Ok(ColdResults {
        fresh_servers,
        cold,
        cold_ceiling,
    })
}

/// Runs `run` `runs` times, one after the other, logging each run's figures under `name`, and
/// keeps the median run by neurons per second.
async fn median_run<T, F, Fut>(
    runs: usize,
    name: &str,
    mut run: F,
    figures: impl Fn(&T) -> &Figures,
) -> Result<T, BenchError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, BenchError>>,
{
    let mut results = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let result = run().await?;
        log_figures(name, figures(&result));
        results.push(result);
    }
    Ok(median_by(results, |result| figures(result).neurons_per_second).expect("at least one run"))
}

/// The item whose `rate` is the median (the higher middle one of an even count).
fn median_by<T>(mut items: Vec<T>, rate: impl Fn(&T) -> f64) -> Option<T> {
    items.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
    let middle = items.len() / 2;
    (!items.is_empty()).then(|| items.swap_remove(middle))
}

fn log_figures(name: &str, f: &Figures) {
    eprintln!(
        "{name}: c={} {} requests in {:.2}s: {:.0} req/s, {:.0} neurons/s, p50 {:.2} ms, p99 {:.2} ms",
        f.concurrency,
        f.requests,
        f.seconds,
        f.requests_per_second,
        f.neurons_per_second,
        f.p50_ms,
        f.p99_ms
    );
}

async fn connect(
    server: &RunningServer,
    plan: &Plan,
    compression: Option<Compression>,
) -> Result<ActivationsClient, BenchError> {
    connect_to(&server.url, plan, compression).await
}

/// A client of the server at `url`, reading `plan`'s dataset.
pub(crate) async fn connect_to(
    url: &str,
    plan: &Plan,
    compression: Option<Compression>,
) -> Result<ActivationsClient, BenchError> {
    ActivationsClient::builder()
        .endpoint(url.to_string())
        .dataset(plan.dataset.clone())
        .compression(compression)
        .connect()
        .await
        .map_err(BenchError::Connect)
}

/// Every distinct neuron read from storage once: one single-neuron `StreamNeuronSplits` call
/// per neuron, all four splits.
pub async fn cold(plan: &Plan, launcher: &Launcher) -> Result<(Figures, bool), BenchError> {
    let server = launcher
        .start(&plan.dataset_dir, plan.cold_cache_bytes)
        .await?;
    let client = connect(&server, plan, None).await?;
    let ids: Arc<[NeuronId]> = plan.neuron_ids().take(plan.cold_neurons).collect();
    let n = plan.n_examples;
    let measurement = closed_loop(plan.cold_concurrency, ids.len(), move |i| {
        let stream = client.neuron_splits(Selection::Neurons(vec![ids[i]]), &ALL_SPLITS, Some(n));
        count_neurons(stream)
    })
    .await?;
    Ok((Figures::from(&measurement), server.fresh))
}

/// The cold ceiling: the cold scenario's files read and parsed in this process, on
/// `ceiling_threads` threads, without gRPC.
pub async fn cold_ceiling(plan: &Plan) -> Result<Figures, BenchError> {
    let paths = cold_paths(plan);
    let threads = plan.ceiling_threads.max(1);
    tokio::task::spawn_blocking(move || read_and_parse(&paths, threads))
        .await
        .expect("the ceiling thread panicked")
}

/// The files of the neurons the cold scenario reads, in `--dataset-dir`.
fn cold_paths(plan: &Plan) -> Vec<PathBuf> {
    let layout = plan.layout();
    plan.neuron_ids()
        .take(plan.cold_neurons)
        .map(|id| {
            plan.dataset_dir
                .join(neuron_path(layout, id.layer_index, id.neuron_index))
        })
        .collect()
}

/// Reads every file once before anything is measured, so the service's first cold run and the
/// ceiling (which runs after it) both read them from the operating system's page cache; without
/// this, after a build had pushed the dataset out of memory, the first cold run read it from
/// disk and the ceiling did not.
fn prime_page_cache(paths: &[PathBuf]) -> Result<(), BenchError> {
    let started = Instant::now();
    let mut bytes = 0;
    for path in paths {
        bytes += fs::read(path)?.len();
    }
    eprintln!(
        "page cache: read the cold scenario's {} files ({:.0} MiB) in {:.2}s",
        paths.len(),
        mib(bytes as u64),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn read_and_parse(paths: &[PathBuf], threads: usize) -> Result<Figures, BenchError> {
    let next = AtomicUsize::new(0);
    let total = Mutex::new((new_histogram(), Delivered::default()));
    let started = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<(), BenchError> {
                    let mut latency_us = new_histogram();
                    let mut delivered = Delivered::default();
                    while let Some(path) = paths.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let start = Instant::now();
                        let (file_bytes, record) = read_neuron_file(path)?;
                        latency_us.saturating_record(start.elapsed().as_micros() as u64);
                        delivered += Delivered {
                            neurons: 1,
                            records: record_count(&record),
                            bytes: file_bytes,
                        };
                    }
                    let mut total = total.lock().expect("no worker panics holding it");
                    total.0.add(latency_us).expect("same bounds");
                    total.1 += delivered;
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|worker| worker.join().expect("a ceiling worker panicked"))
    })?;
    let (latency_us, delivered) = total.into_inner().expect("no worker panicked");
    Ok(Figures::from(&Measurement {
        concurrency: threads,
        requests: paths.len() as u64,
        elapsed: started.elapsed(),
        delivered,
        latency_us,
    }))
}

/// Reads one neuron file and parses it with the server's parser, into the form its cache
/// keeps (records encoded). The parser is called here and nowhere else in the benchmarks, so a
/// rename of its entry point touches one line. Returns the file's size (the ceiling's MB/s are
/// of JSON read) and the record.
fn read_neuron_file(path: &Path) -> Result<(u64, wire::NeuronRecord), BenchError> {
    let bytes = fs::read(path)?;
    let record = neuron_json::parse_neuron(&bytes)
        .map_err(|e| BenchError::Ceiling(format!("{}: {e}", path.display())))?;
    Ok((bytes.len() as u64, record))
}

fn record_count(record: &wire::NeuronRecord) -> u64 {
    let quantiles = record
        .random_sample_by_quantile
        .iter()
        .flat_map(|q| &q.quantiles)
        .map(|bucket| bucket.records.len())
        .sum::<usize>();
    (record.most_positive_activation_records.len() + record.random_sample.len() + quantiles) as u64
}

/// What the warm scenario measured: the service and its echo ceiling, per concurrency level.
#[derive(Debug)]
struct WarmRuns {
    response_bytes: u64,
    service: Vec<Figures>,
    echo: Vec<Figures>,
}

impl WarmRuns {
    /// The median of several runs, level by level, for the service and the echo apart.
    fn median(runs: Vec<WarmRuns>) -> WarmRuns {
        let response_bytes = runs.first().map_or(0, |run| run.response_bytes);
        let levels = runs.iter().map(|run| run.service.len()).min().unwrap_or(0);
        let level = |pick: fn(&WarmRuns) -> &Vec<Figures>, i: usize| {
            median_by(
                runs.iter().map(|run| pick(run)[i].clone()).collect(),
                |figures| figures.requests_per_second,
            )
        };
        WarmRuns {
            response_bytes,
            service: (0..levels)
                .filter_map(|i| level(|run| &run.service, i))
                .collect(),
            echo: (0..levels)
                .filter_map(|i| level(|run| &run.echo, i))
                .collect(),
        }
    }
}

/// `StreamActivationRecords` of the valid split over a hot set held in the cache, against the
/// echo ceiling answering the same calls; levels alternate between the two, so both see the
/// same machine.
async fn warm(plan: &Plan, launcher: &Launcher) -> Result<WarmRuns, BenchError> {
    let server = launcher
        .start(&plan.dataset_dir, plan.warm_cache_bytes)
        .await?;
    let client = connect(&server, plan, None).await?;
    let hot: Arc<[NeuronId]> = plan.neuron_ids().take(plan.hot_neurons.max(1)).collect();
    let n = Some(plan.n_examples);
    for &id in hot.iter() {
        client.activation_records(id, Split::Valid, n).await?;
    }
    let captured: Vec<pb::SplitActivationRecord> = client
        .stream_activation_records(hot[0], Split::Valid, n)
        .await?
        .try_collect()
        .await?;
    let echo_service = EchoService::new(&captured);
    let response_bytes = echo_service.response_bytes();
    let echo = launcher.start_echo(echo_service).await?;
    let echo_client = ActivationsClient::connect(echo.url.clone())
        .await
        .map_err(BenchError::Connect)?;

    let mut runs = WarmRuns {
        response_bytes,
        service: Vec::new(),
        echo: Vec::new(),
    };
    for &concurrency in &plan.warm_concurrency {
        let figures = valid_split_loop(&client, &hot, n, concurrency, plan.warm_requests).await?;
        log_figures("warm", &figures);
        runs.service.push(figures);
        let figures =
            valid_split_loop(&echo_client, &hot, n, concurrency, plan.warm_requests).await?;
        log_figures("warm ceiling (echo)", &figures);
        runs.echo.push(figures);
    }
    Ok(runs)
}

async fn valid_split_loop(
    client: &ActivationsClient,
    hot: &Arc<[NeuronId]>,
    n: Option<u32>,
    concurrency: usize,
    requests: usize,
) -> Result<Figures, BenchError> {
    let client = client.clone();
    let hot = Arc::clone(hot);
    let measurement = closed_loop(concurrency, requests, move |i| {
        let client = client.clone();
        let id = hot[i % hot.len()];
        async move {
            client
                .stream_activation_records(id, Split::Valid, n)
                .await?
                .try_fold(Delivered::default(), |mut delivered, item| async move {
                    delivered.records += 1;
                    delivered.bytes += item.encoded_len() as u64;
                    Ok(delivered)
                })
                .await
        }
    })
    .await?;
    Ok(Figures::from(&measurement))
}

/// One `StreamNeuronSplits` call over the first `bulk_neurons` neurons, all four splits, from a
/// fresh server; `compression` is what the client accepts (and the server then sends).
pub async fn bulk(
    plan: &Plan,
    launcher: &Launcher,
    compression: Option<Compression>,
) -> Result<BulkRun, BenchError> {
    let server = launcher
        .start(&plan.dataset_dir, plan.bulk_cache_bytes)
        .await?;
    let client = connect(&server, plan, compression).await?;
    let figures = bulk_pass(&client, plan).await?;
    Ok(BulkRun {
        compression: compression.map(|_| "zstd"),
        figures,
    })
}

async fn bulk_pass(client: &ActivationsClient, plan: &Plan) -> Result<Figures, BenchError> {
    let client = client.clone();
    let selection = plan.bulk_selection();
    let n = plan.n_examples;
    let measurement = closed_loop(1, 1, move |_| {
        count_neurons(client.neuron_splits(selection.clone(), &ALL_SPLITS, Some(n)))
    })
    .await?;
    Ok(Figures::from(&measurement))
}

/// The server's resident memory over repeated bulk passes with a cache budget smaller than the
/// data passing through it.
pub async fn memory(plan: &Plan, launcher: &Launcher) -> Result<MemoryRun, BenchError> {
    let server = launcher
        .start(&plan.dataset_dir, plan.memory_cache_bytes)
        .await?;
    let client = connect(&server, plan, None).await?;
    let read = || server.pid.and_then(ProcessMemory::read);
    let mut passes = Vec::new();
    for pass in 1..=plan.memory_passes.max(1) {
        let figures = bulk_pass(&client, plan).await?;
        let rss_bytes = read().map(|m| m.rss);
        eprintln!(
            "memory pass {pass}: {:.0} neurons/s, RSS {}",
            figures.neurons_per_second,
            rss_bytes.map_or("unknown".to_string(), |b| format!("{:.0} MiB", mib(b)))
        );
        passes.push(MemoryPass { figures, rss_bytes });
    }
    Ok(MemoryRun {
        cache_bytes: plan.memory_cache_bytes,
        passes,
        peak_rss_bytes: read().map(|m| m.peak),
    })
}

/// Bytes in mebibytes.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

/// Drains a bulk stream, counting neurons, records and response bytes. A neuron served with an
/// error fails the run: the benchmark data has none.
pub(crate) async fn count_neurons(
    stream: NeuronSplitsStream,
) -> activations_client::Result<Delivered> {
    stream
        .try_fold(Delivered::default(), |mut delivered, neuron| async move {
            let splits = neuron
                .splits
                .map_err(|error| activations_client::Error::Status(Box::new(error)))?;
            delivered.neurons += 1;
            for split in &splits {
                delivered.records += split.records.len() as u64;
                delivered.bytes += split.encoded_len() as u64;
            }
            Ok(delivered)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_kept_whatever_the_order() {
        assert_eq!(median_by(vec![5.0, 1.0, 9.0, 3.0, 7.0], |r| *r), Some(5.0));
        assert_eq!(median_by(vec![2.0, 8.0], |r| *r), Some(8.0));
        assert_eq!(median_by(Vec::<f64>::new(), |r| *r), None);
    }
}
