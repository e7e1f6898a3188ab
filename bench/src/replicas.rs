//! The replicas scenario: several servers, each with a cache of `B` bytes, over one web store
//! that counts its reads, and a working set of `factor x B` (2.5 by default): more than one
//! cache holds, less than all of them together.
//!
//! For each policy of the SDK (affinity, then round robin), on fresh servers: two passes over
//! the working set, one single-neuron `StreamNeuronSplits` call per neuron (all four splits), the
//! second in reverse order as the next job would ask. Reported: neurons a second and the cache
//! hit ratio of each pass, a hit being a neuron served without a storage read (the store counts
//! them). Then the failover cost: one bulk stream over the working set on fresh servers with
//! affinity, the owner of the next neurons killed (SIGKILL) in the middle, and the time from
//! the kill to the stream's next neuron and to the first neuron the killed server owned.

use std::{collections::HashMap, path::Path, sync::Arc, time::Duration};

use activations_client::{
    ActivationsClient, NeuronId, Selection,
    routing::{Policy, RouteKey, owner},
};
use activations_format::{neuron_json, shape::MANIFEST_FILE};
use activations_webstore::{FaultyHttpServer, Network};
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use tokio::time::Instant;

use crate::{
    datagen::neuron_path,
    error::BenchError,
    launcher::{Launcher, RunningServer},
    load::closed_loop,
    scenarios::{ALL_SPLITS, Figures, Plan, count_neurons},
};

/// What the replicas scenario runs.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicasPlan {
    /// Servers, on 127.0.0.2, 127.0.0.3, ...
    pub replicas: usize,
    /// Each server's `--cache-bytes`.
    pub cache_bytes: u64,
    /// The working set, in caches: its parsed size over `cache_bytes`.
    pub working_set: f64,
    /// The store's time to first byte.
    pub first_byte: Duration,
    /// Calls in flight in each pass.
    pub concurrency: usize,
}

/// One pass over the working set.
#[derive(Debug, Clone, Serialize)]
pub struct Pass {
    pub figures: Figures,
    /// Neurons the store was asked for during the pass.
    pub storage_reads: usize,
    /// The share of the pass's neurons served without a storage read.
    pub hit_ratio: f64,
}

/// Both passes with one policy.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyRun {
    pub policy: String,
    pub first: Pass,
    pub second: Pass,
}

/// The cost of losing a server in the middle of a bulk stream.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Failover {
    /// From the kill to the stream's next neuron (which may have been read before the kill).
    pub next_neuron_ms: f64,
    /// The longest wait between two neurons after the kill: the stream stalled on the first
    /// neuron the killed server had not sent, until it was read again elsewhere.
    pub longest_gap_after_ms: f64,
    /// The median wait between two neurons before the kill, for comparison.
    pub median_gap_before_ms: f64,
    /// Neurons of the stream, every one delivered once.
    pub neurons: usize,
}

/// Everything the scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicasResults {
    pub plan: ReplicasPlan,
    /// Neurons in the working set.
    pub neurons: usize,
    /// Mean parsed size of a neuron, as the cache weighs it.
    pub cached_bytes_per_neuron: f64,
    pub runs: Vec<PolicyRun>,
    /// `None` when the servers are not processes of their own (nothing to kill).
    pub failover: Option<Failover>,
}

/// Runs the scenario on the first neurons of the plan's dataset.
///
/// # Errors
///
/// An unreadable file, a server that does not start, a failed call, a stream that loses or
/// repeats a neuron.
pub async fn run_replicas(
    plan: &Plan,
    replicas: &ReplicasPlan,
    launcher: &Launcher,
) -> Result<ReplicasResults, BenchError> {
    let all: Vec<NeuronId> = plan.neuron_ids().collect();
    let cached_bytes_per_neuron = cached_size(plan, &all[..all.len().min(16)])?;
    let wanted = (replicas.working_set * replicas.cache_bytes as f64 / cached_bytes_per_neuron)
        .ceil() as usize;
    if wanted > all.len() {
        return Err(BenchError::Ceiling(format!(
            "a working set of {} caches of {} bytes is {wanted} neurons; the dataset has {}",
            replicas.working_set,
            replicas.cache_bytes,
            all.len()
        )));
    }
    let ids: Arc<[NeuronId]> = all[..wanted].into();
    let store = FaultyHttpServer::start(files(plan, &ids)?);
    store.set_network(Network {
        first_byte: replicas.first_byte,
        ..Network::default()
    });
    let mut runs = Vec::new();
    for policy in [Policy::Affinity, Policy::RoundRobin] {
        let servers = start(launcher, replicas, &store.url()).await?;
        let client = connect(plan, &servers, policy).await?;
        let first = pass(plan, replicas, &client, &store, &ids, false).await?;
        let second = pass(plan, replicas, &client, &store, &ids, true).await?;
        eprintln!(
            "replicas ({policy:?}): first pass {:.0} neurons/s, {:.1}% hits; second pass {:.0} \
             neurons/s, {:.1}% hits",
            first.figures.neurons_per_second,
            100.0 * first.hit_ratio,
            second.figures.neurons_per_second,
            100.0 * second.hit_ratio,
        );
        runs.push(PolicyRun {
            policy: format!("{policy:?}"),
            first,
            second,
        });
    }
    let failover = failover(plan, replicas, launcher, &store, &ids).await?;
    Ok(ReplicasResults {
        plan: replicas.clone(),
        neurons: ids.len(),
        cached_bytes_per_neuron,
        runs,
        failover,
    })
}

/// The mean of what the cache weighs for the neurons `ids`.
fn cached_size(plan: &Plan, ids: &[NeuronId]) -> Result<f64, BenchError> {
    let mut total = 0;
    for id in ids {
        let path = neuron_path(plan.layout(), id.layer_index, id.neuron_index);
        let bytes = std::fs::read(plan.dataset_dir.join(path))?;
        let record = neuron_json::parse_neuron(&bytes)
            .map_err(|error| BenchError::Ceiling(format!("{}: {error}", id_text(*id))))?;
        total += activations_server::store::heap_bytes(&record);
    }
    Ok(total as f64 / ids.len().max(1) as f64)
}

fn id_text(id: NeuronId) -> String {
    format!("{}/{}", id.layer_index, id.neuron_index)
}

/// The manifest and the files of `ids`, held in memory by the store.
fn files(plan: &Plan, ids: &[NeuronId]) -> Result<HashMap<String, Bytes>, BenchError> {
    let mut files = HashMap::new();
    for &id in ids {
        let path = store_path(plan, id);
        let data = std::fs::read(plan.dataset_dir.join(&path))?;
        files.insert(path, Bytes::from(data));
    }
    let manifest = std::fs::read(plan.dataset_dir.join(MANIFEST_FILE))?;
    files.insert(MANIFEST_FILE.to_string(), Bytes::from(manifest));
    Ok(files)
}

/// The path of `id`'s file in the store, `/`-separated.
fn store_path(plan: &Plan, id: NeuronId) -> String {
    path_text(&neuron_path(plan.layout(), id.layer_index, id.neuron_index))
}

fn path_text(path: &Path) -> String {
    path.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Fresh servers on 127.0.0.2, 127.0.0.3, ...
async fn start(
    launcher: &Launcher,
    replicas: &ReplicasPlan,
    uri: &str,
) -> Result<Vec<RunningServer>, BenchError> {
    let mut servers = Vec::with_capacity(replicas.replicas);
    for i in 0..replicas.replicas {
        let listen = format!("127.0.0.{}:0", i + 2);
        servers.push(
            launcher
                .start_uri_on(&listen, uri, replicas.cache_bytes)
                .await?,
        );
    }
    Ok(servers)
}

async fn connect(
    plan: &Plan,
    servers: &[RunningServer],
    policy: Policy,
) -> Result<ActivationsClient, BenchError> {
    ActivationsClient::builder()
        .endpoints(servers.iter().map(|server| server.url.clone()))
        .dataset(plan.dataset.clone())
        .policy(policy)
        .connect()
        .await
        .map_err(BenchError::Connect)
}

/// The store's reads of the files of `ids` so far.
fn reads(plan: &Plan, store: &FaultyHttpServer, ids: &[NeuronId]) -> usize {
    ids.iter()
        .map(|&id| store.requests(&store_path(plan, id)))
        .sum()
}

/// One single-neuron call per neuron of `ids` (in reverse with `reverse`).
async fn pass(
    plan: &Plan,
    replicas: &ReplicasPlan,
    client: &ActivationsClient,
    store: &FaultyHttpServer,
    ids: &Arc<[NeuronId]>,
    reverse: bool,
) -> Result<Pass, BenchError> {
    let before = reads(plan, store, ids);
    let order: Arc<[NeuronId]> = if reverse {
        ids.iter().rev().copied().collect()
    } else {
        Arc::clone(ids)
    };
    let client = client.clone();
    let n = plan.n_examples;
    let calls = order.len();
    let measurement = closed_loop(replicas.concurrency, calls, move |i| {
        let one = Selection::Neurons(vec![order[i]]);
        count_neurons(client.neuron_splits(one, &ALL_SPLITS, Some(n)))
    })
    .await?;
    let storage_reads = reads(plan, store, ids) - before;
    Ok(Pass {
        figures: Figures::from(&measurement),
        storage_reads,
        hit_ratio: 1.0 - storage_reads as f64 / calls.max(1) as f64,
    })
}

/// One bulk stream over `ids` with affinity; the owner of the neuron a third of the way in is
/// killed once the stream has delivered that far.
async fn failover(
    plan: &Plan,
    replicas: &ReplicasPlan,
    launcher: &Launcher,
    store: &FaultyHttpServer,
    ids: &Arc<[NeuronId]>,
) -> Result<Option<Failover>, BenchError> {
    let mut servers = start(launcher, replicas, &store.url()).await?;
    let client = connect(plan, &servers, Policy::Affinity).await?;
    let addresses: Vec<String> = servers
        .iter()
        .map(|server| server.url.trim_start_matches("http://").to_string())
        .collect();
    let owner_of = |id: NeuronId| {
        let key = RouteKey::new(&plan.dataset, id);
        owner(addresses.iter().map(String::as_str), &key).map(str::to_string)
    };
    let kill_at = ids.len() / 3;
    let victim = owner_of(ids[kill_at]);
    let victim_index = addresses
        .iter()
        .position(|address| Some(address) == victim.as_ref())
        .expect("the owner is one of the servers");
    let mut stream = client.neuron_splits(
        Selection::Neurons(ids.to_vec()),
        &ALL_SPLITS,
        Some(plan.n_examples),
    );
    let mut delivered = 0;
    let mut killed: Option<Instant> = None;
    let mut next_neuron = None;
    let mut last = Instant::now();
    let mut gaps_before = Vec::new();
    let mut longest_after = Duration::ZERO;
    while let Some(neuron) = stream.next().await {
        let neuron = neuron.map_err(BenchError::Connect)?;
        if neuron.neuron_id != ids[delivered] {
            return Err(BenchError::Ceiling(format!(
                "the stream delivered {} where {} was due",
                id_text(neuron.neuron_id),
                id_text(ids[delivered])
            )));
        }
        delivered += 1;
        let now = Instant::now();
        match killed {
            Some(at) => {
                next_neuron.get_or_insert(now - at);
                longest_after = longest_after.max(now - last.max(at));
            }
            None if delivered > 1 => gaps_before.push(now - last),
            None => {}
        }
        last = now;
        if delivered == kill_at {
            if !servers[victim_index].kill() {
                return Ok(None);
            }
            killed = Some(Instant::now());
        }
    }
    if delivered != ids.len() {
        return Err(BenchError::Ceiling(format!(
            "the stream delivered {delivered} of {} neurons",
            ids.len()
        )));
    }
    gaps_before.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok(Some(Failover {
        next_neuron_ms: next_neuron.map_or(f64::NAN, ms),
        longest_gap_after_ms: ms(longest_after),
        median_gap_before_ms: gaps_before
            .get(gaps_before.len() / 2)
            .map_or(f64::NAN, |&d| ms(d)),
        neurons: delivered,
    }))
}

/// The scenario's table, in markdown.
pub fn markdown(results: &ReplicasResults) -> String {
    use std::fmt::Write as _;

    let plan = &results.plan;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Replicas: {} servers with a {:.0} MiB cache each, a working set of {} neurons ({:.1} \
         caches at {:.0} KB parsed per neuron), a store {} ms away; one call per neuron, {} at \
         once; the second pass in reverse order.\n",
        plan.replicas,
        plan.cache_bytes as f64 / f64::from(1u32 << 20),
        results.neurons,
        plan.working_set,
        results.cached_bytes_per_neuron / 1e3,
        plan.first_byte.as_millis(),
        plan.concurrency,
    );
    let _ = writeln!(
        out,
        "| policy | first pass neurons/s | first pass hits | second pass neurons/s | second pass hits | second pass storage reads |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: |");
    for run in &results.runs {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.1}% | {:.0} | {:.1}% | {} |",
            run.policy,
            run.first.figures.neurons_per_second,
            100.0 * run.first.hit_ratio,
            run.second.figures.neurons_per_second,
            100.0 * run.second.hit_ratio,
            run.second.storage_reads,
        );
    }
    match &results.failover {
        Some(failover) => {
            let _ = writeln!(
                out,
                "\nFailover (one bulk stream of {} neurons, the next neuron's server killed a third \
                 of the way): {:.1} ms from the kill to the stream's next neuron; the longest wait \
                 between two neurons after the kill {:.1} ms (the stall until the killed \
                 server's neurons were read elsewhere), against a median of {:.2} ms before; \
                 every neuron delivered once, in order.",
                failover.neurons,
                failover.next_neuron_ms,
                failover.longest_gap_after_ms,
                failover.median_gap_before_ms
            );
        }
        None => {
            let _ = writeln!(out, "\nFailover: not measured (no server process to kill).");
        }
    }
    out
}
