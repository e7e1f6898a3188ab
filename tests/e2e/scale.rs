//! Several `activations-server` replicas behind one client: real processes on their own
//! loopback addresses (127.0.0.2, .3, ...), one web store counting every read. Affinity routing
//! sends every call about a neuron to the same replica, so a second pass reads nothing; a
//! replica killed in the middle loses no call; a change of the servers moves only the neurons
//! whose owner changed; a failed replica comes back after a health check.

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use activations_client::{
    ActivationsClient, NeuronId, Split, neuron_id, pb,
    routing::{Policy, Resolve, RouteKey, owner},
};
use activations_e2e::{fixtures, process::ServerProcess};
use activations_format::{layout::Layout, shape::Shape};
use activations_webstore::FaultyHttpServer;
use bytes::Bytes;
use futures::{StreamExt, future::BoxFuture};

const DATASET: &str = "d";
const LAYERS: u32 = 2;
const N: Option<u32> = Some(5);

/// A web store of `LAYERS` x `per_layer` distinct neurons (flat layout, with a manifest), and
/// the records.
fn store(per_layer: u32) -> (FaultyHttpServer, HashMap<NeuronId, pb::NeuronRecord>) {
    let mut files = HashMap::new();
    let mut records = HashMap::new();
    for layer in 0..LAYERS {
        for neuron in 0..per_layer {
            let seed = u64::from(layer) << 32 | u64::from(neuron);
            let record = fixtures::neuron(seed, layer, neuron, 20, 15);
            files.insert(
                format!("{layer}/{neuron}.json"),
                Bytes::from(fixtures::to_json(&record)),
            );
            records.insert(neuron_id(layer, neuron), record);
        }
    }
    let manifest = Shape::uniform(LAYERS, per_layer)
        .unwrap()
        .to_manifest(Some(Layout::Flat));
    files.insert("manifest.json".to_string(), Bytes::from(manifest));
    (FaultyHttpServer::start(files), records)
}

fn path(id: NeuronId) -> String {
    format!("{}/{}.json", id.layer_index, id.neuron_index)
}

/// How many times the store has been asked for each neuron's file.
fn reads(web: &FaultyHttpServer, ids: &[NeuronId]) -> Vec<usize> {
    ids.iter().map(|&id| web.requests(&path(id))).collect()
}

/// The neurons read since `before`.
fn read_since(web: &FaultyHttpServer, ids: &[NeuronId], before: &[usize]) -> BTreeSet<(u32, u32)> {
    let now = reads(web, ids);
    ids.iter()
        .zip(now.iter().zip(before))
        .filter(|(_, (now, before))| now > before)
        .map(|(&id, _)| (id.layer_index, id.neuron_index))
        .collect()
}

/// A replica on its own loopback address, serving the store as dataset `d`.
fn replica(host: u8, web: &FaultyHttpServer) -> ServerProcess {
    ServerProcess::start_on(&format!("127.0.0.{host}:0"), &replica_args(web, &[]))
}

/// The options of a replica of the store, and `extra`.
fn replica_args(web: &FaultyHttpServer, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--dataset".into(),
        format!("{DATASET}={}", web.url()),
        "--shutdown-grace".into(),
        "2s".into(),
    ];
    args.extend(extra.iter().map(|arg| arg.to_string()));
    args
}

fn address(server: &ServerProcess) -> String {
    server.url.trim_start_matches("http://").to_string()
}

/// Reads the valid split of every neuron of `ids`, 16 calls at once, and checks each against
/// the records; `after_each` runs after each neuron with the count done so far.
async fn pass(
    client: &ActivationsClient,
    ids: &[NeuronId],
    records: &HashMap<NeuronId, pb::NeuronRecord>,
    after_each: impl Fn(usize),
) {
    let done = std::sync::atomic::AtomicUsize::new(0);
    futures::stream::iter(ids)
        .map(|&id| async move {
            let got = client
                .activation_records(id, Split::Valid, N)
                .await
                .unwrap_or_else(|error| panic!("neuron {id:?}: {error}"));
            (id, got)
        })
        .buffer_unordered(16)
        .for_each(|(id, got)| {
            assert_eq!(
                got,
                expected_split(&records[&id], Split::Valid),
                "neuron {id:?}"
            );
            after_each(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1);
            futures::future::ready(())
        })
        .await;
}

fn all_ids(records: &HashMap<NeuronId, pb::NeuronRecord>) -> Vec<NeuronId> {
    let mut ids: Vec<_> = records.keys().copied().collect();
    ids.sort_by_key(|id| (id.layer_index, id.neuron_index));
    ids
}

async fn client_over(servers: &[&ServerProcess], policy: Policy) -> ActivationsClient {
    ActivationsClient::builder()
        .endpoints(servers.iter().map(|s| s.url.clone()))
        .dataset(DATASET)
        .policy(policy)
        .connect()
        .await
        .unwrap()
}

/// Storage reads of a first pass over 600 neurons on three replicas, with `policy`, and of a
/// second pass in reverse order.
async fn second_pass_reads(policy: Policy) -> (usize, usize) {
    let (web, records) = store(300);
    let ids = all_ids(&records);
    let replicas = [replica(2, &web), replica(3, &web), replica(4, &web)];
    let client = client_over(&replicas.iter().collect::<Vec<_>>(), policy).await;
    let start = reads(&web, &ids);
    pass(&client, &ids, &records, |_| {}).await;
    let first = reads(&web, &ids);
    // In another order, as the next job would ask.
    let reversed: Vec<_> = ids.iter().rev().copied().collect();
    pass(&client, &reversed, &records, |_| {}).await;
    let second = reads(&web, &ids);
    let total = |a: &[usize], b: &[usize]| a.iter().zip(b).map(|(a, b)| a - b).sum::<usize>();
    (total(&first, &start), total(&second, &first))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_affinity_a_second_pass_reads_nothing_from_storage() {
    let (first, second) = second_pass_reads(Policy::Affinity).await;
    assert_eq!(
        first, 600,
        "the first pass reads each neuron once, on its owner"
    );
    assert_eq!(
        second, 0,
        "the second pass is served from the owners' caches"
    );
    let (first, second) = second_pass_reads(Policy::RoundRobin).await;
    println!(
        "round robin: first pass {first} reads, second pass {second} reads of 600 neurons \
         ({:.0}% hits)",
        100.0 * (600 - second) as f64 / 600.0
    );
    assert!(first >= 600, "every neuron is read at least once: {first}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_in_the_middle_of_a_pass_loses_no_call() {
    let (web, records) = store(150);
    let ids = all_ids(&records);
    let replicas = [replica(2, &web), replica(3, &web), replica(4, &web)];
    let client = client_over(&replicas.iter().collect::<Vec<_>>(), Policy::Affinity).await;
    let killed = &replicas[1];
    pass(&client, &ids, &records, |done| {
        if done == 100 {
            killed.signal("KILL");
        }
    })
    .await;
    let servers = client.servers();
    let out: Vec<_> = servers.iter().filter(|s| !s.available).collect();
    assert_eq!(out.len(), 1, "{servers:?}");
    assert_eq!(out[0].address, address(killed));
}

/// A resolver whose answer the test changes.
#[derive(Debug, Clone, Default)]
struct Switchable(Arc<Mutex<Vec<SocketAddr>>>);

impl Switchable {
    fn set(&self, servers: &[&ServerProcess]) {
        *self.0.lock().unwrap() = servers
            .iter()
            .map(|s| address(s).parse().unwrap())
            .collect();
    }
}

impl Resolve for Switchable {
    fn resolve(
        &self,
        _host: &str,
        _port: u16,
    ) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> {
        let answer = self.0.lock().unwrap().clone();
        Box::pin(async move { Ok(answer) })
    }
}

async fn wait_for_servers(client: &ActivationsClient, count: usize) {
    for _ in 0..200 {
        if client.servers().len() == count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the client never saw {count} servers: {:?}",
        client.servers()
    );
}

/// The neurons of `ids` that `server` owns among `servers`.
fn owned_by(
    ids: &[NeuronId],
    servers: &[&ServerProcess],
    server: &ServerProcess,
) -> BTreeSet<(u32, u32)> {
    let addresses: Vec<String> = servers.iter().map(|s| address(s)).collect();
    let mine = address(server);
    ids.iter()
        .copied()
        .filter(|&id| {
            owner(
                addresses.iter().map(String::as_str),
                &RouteKey::new(DATASET, id),
            ) == Some(&mine)
        })
        .map(|id| (id.layer_index, id.neuron_index))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_or_removing_a_replica_moves_only_the_neurons_whose_owner_changed() {
    let (web, records) = store(150);
    let ids = all_ids(&records);
    let [a, b, c, d] = [2, 3, 4, 5].map(|host| replica(host, &web));
    let resolver = Switchable::default();
    resolver.set(&[&a, &b, &c]);
    let client = ActivationsClient::builder()
        .endpoint("dns:///replicas.test:50051")
        .resolver(resolver.clone())
        .resolve_interval(Duration::from_millis(100))
        .dataset(DATASET)
        .connect()
        .await
        .unwrap();
    assert_eq!(client.servers().len(), 3);
    pass(&client, &ids, &records, |_| {}).await;

    // A fourth replica: it reads exactly the neurons it now owns, nobody else reads anything.
    resolver.set(&[&a, &b, &c, &d]);
    wait_for_servers(&client, 4).await;
    let before = reads(&web, &ids);
    pass(&client, &ids, &records, |_| {}).await;
    let moved = read_since(&web, &ids, &before);
    let to_d = owned_by(&ids, &[&a, &b, &c, &d], &d);
    assert_eq!(moved, to_d);
    assert!(
        (30..=120).contains(&moved.len()),
        "about a quarter of 300 neurons move: {}",
        moved.len()
    );

    // Without the second: exactly its neurons move (to replicas that never read them).
    let of_b = owned_by(&ids, &[&a, &b, &c, &d], &b);
    resolver.set(&[&a, &c, &d]);
    wait_for_servers(&client, 3).await;
    let before = reads(&web, &ids);
    pass(&client, &ids, &records, |_| {}).await;
    assert_eq!(read_since(&web, &ids, &before), of_b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_replica_is_taken_back_once_its_health_check_passes() {
    let (web, records) = store(60);
    let ids = all_ids(&records);
    let mut first = replica(2, &web);
    let second = replica(3, &web);
    let first_address = address(&first);
    let client = client_over(&[&first, &second], Policy::Affinity).await;
    let of_first = owned_by(&ids, &[&first, &second], &first);
    let theirs: Vec<NeuronId> = of_first.iter().map(|&(l, n)| neuron_id(l, n)).collect();
    pass(&client, &theirs, &records, |_| {}).await;

    first.signal("KILL");
    first.exit_status(Duration::from_secs(10)).await;
    // Served by the other replica meanwhile, which reads them.
    let before = reads(&web, &ids);
    pass(&client, &theirs, &records, |_| {}).await;
    assert_eq!(read_since(&web, &ids, &before), of_first);
    assert!(!client.servers()[0].available, "{:?}", client.servers());

    // Back on the same address, with an empty cache: once the health check passes, its
    // neurons go to it again, and it reads them.
    let _restarted = ServerProcess::start_on(
        &first_address,
        &["--dataset".into(), format!("{DATASET}={}", web.url())],
    );
    for _ in 0..200 {
        if client.servers().iter().all(|s| s.available) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        client.servers().iter().all(|s| s.available),
        "{:?}",
        client.servers()
    );
    let before = reads(&web, &ids);
    pass(&client, &theirs, &records, |_| {}).await;
    assert_eq!(read_since(&web, &ids, &before), of_first);
}

/// `activations --server URLS export --out DIR ARGS...`, in process.
async fn cli_export(servers: &str, dir: &std::path::Path, args: &[&str]) -> Result<String, String> {
    use clap::Parser;
    let mut argv = vec![
        "activations",
        "--server",
        servers,
        "--dataset",
        DATASET,
        "export",
        "--out",
        dir.to_str().unwrap(),
    ];
    argv.extend_from_slice(args);
    let cli = activations_cli::Cli::try_parse_from(argv).map_err(|error| error.to_string())?;
    let (mut out, mut stderr) = (Vec::new(), Vec::new());
    match activations_cli::run_with_stderr(cli, &mut out, &mut stderr).await {
        Ok(()) => Ok(String::from_utf8(out).unwrap()),
        Err(error) => Err(format!("{error}\n{}", String::from_utf8_lossy(&stderr))),
    }
}

/// The neuron files under `dir`, by id.
fn exported(dir: &std::path::Path) -> BTreeSet<(u32, u32)> {
    let mut found = BTreeSet::new();
    for layer in std::fs::read_dir(dir).unwrap() {
        let layer = layer.unwrap();
        let Ok(layer_index) = layer.file_name().to_str().unwrap().parse::<u32>() else {
            continue;
        };
        for file in std::fs::read_dir(layer.path()).unwrap() {
            let name = file.unwrap().file_name().into_string().unwrap();
            if let Some(neuron) = name.strip_suffix(".json") {
                found.insert((layer_index, neuron.parse().unwrap()));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_exports_through_three_replicas_one_killed_midway() {
    let (web, records) = store(150);
    let replicas = [replica(2, &web), replica(3, &web), replica(4, &web)];
    let servers = replicas
        .iter()
        .map(|r| r.url.clone())
        .collect::<Vec<_>>()
        .join(",");
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_path_buf();
    let finished = std::sync::atomic::AtomicBool::new(false);
    let export = async {
        let result = cli_export(&servers, &dir, &["--layers", "0..2"]).await;
        finished.store(true, std::sync::atomic::Ordering::SeqCst);
        result
    };
    // Kill the second replica once a third of the neurons are written.
    let kill = async {
        loop {
            if dir.exists() && exported(&dir).len() >= 100 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            !finished.load(std::sync::atomic::Ordering::SeqCst),
            "the export ended before the kill"
        );
        replicas[1].signal("KILL");
    };
    let (summary, ()) = tokio::join!(export, kill);
    let summary = summary.unwrap();
    assert!(summary.starts_with("exported "), "{summary}");
    assert_eq!(exported(&dir).len(), 300);
    for (id, record) in &records {
        let file = dir
            .join(id.layer_index.to_string())
            .join(format!("{}.json", id.neuron_index));
        assert_eq!(
            std::fs::read(&file).unwrap(),
            fixtures::to_json(record),
            "{}",
            file.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_shards_are_disjoint_and_together_the_whole_selection() {
    let (web, records) = store(50);
    let replicas = [replica(2, &web), replica(3, &web)];
    let servers = format!("{},{}", replicas[0].url, replicas[1].url);
    let out = tempfile::tempdir().unwrap();
    let mut union = BTreeSet::new();
    for index in 0..3 {
        let dir = out.path().join(index.to_string());
        let shard = format!("{index}/3");
        cli_export(&servers, &dir, &["--layers", "0..2", "--shard", &shard])
            .await
            .unwrap();
        let part = exported(&dir);
        assert!((33..=34).contains(&part.len()), "{shard}: {}", part.len());
        assert!(union.is_disjoint(&part), "{shard} overlaps another part");
        union.extend(part);
    }
    let all: BTreeSet<_> = records
        .keys()
        .map(|id| (id.layer_index, id.neuron_index))
        .collect();
    assert_eq!(union, all);
    let refused = cli_export(
        &servers,
        out.path(),
        &["--layers", "0..2", "--shard", "3/3"],
    )
    .await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("below the count (0/3 to 2/3)")),
        "{refused:?}"
    );
}

/// The split of `record` as the Python module cuts it, with n=5.
fn expected_split(record: &pb::NeuronRecord, split: Split) -> Vec<pb::ActivationRecord> {
    use activations_format::splits::{self as splits, Source, SplitPlan};
    let split = splits::Split::try_from(i32::from(split)).unwrap();
    let plan = SplitPlan::new(
        split,
        N,
        record.most_positive_activation_records.len(),
        record.random_sample.len(),
    )
    .unwrap();
    plan.entries()
        .map(|(source, index)| match source {
            Source::TopActivating => record.most_positive_activation_records[index].clone(),
            Source::Random => record.random_sample[index].clone(),
        })
        .collect()
}

const BULK_SPLITS: [Split; 2] = [Split::Valid, Split::Test];
const ALL_SPLITS: [Split; 4] = [Split::Train, Split::Calibration, Split::Valid, Split::Test];

/// Checks one neuron of a bulk stream of [`BULK_SPLITS`] against its record.
fn check_neuron(
    neuron: &activations_client::NeuronSplits,
    records: &HashMap<NeuronId, pb::NeuronRecord>,
) {
    check_splits(neuron, records, &BULK_SPLITS);
}

/// Checks the `splits` of one neuron of a bulk stream against its record.
fn check_splits(
    neuron: &activations_client::NeuronSplits,
    records: &HashMap<NeuronId, pb::NeuronRecord>,
    splits: &[Split],
) {
    let record = &records[&neuron.neuron_id];
    for &split in splits {
        let got: Vec<pb::ActivationRecord> = neuron
            .records(split)
            .unwrap_or_else(|| panic!("{:?}: {:?}", neuron.neuron_id, neuron.splits))
            .iter()
            .map(|entry| entry.record.clone().unwrap())
            .collect();
        assert_eq!(
            got,
            expected_split(record, split),
            "{:?} {split:?}",
            neuron.neuron_id
        );
    }
}

fn block(per_layer: u32) -> activations_client::Selection {
    activations_client::Selection::Range {
        layers: 0..LAYERS,
        neurons: Some(0..per_layer),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_stream_over_three_replicas_loses_nothing_when_one_is_killed() {
    let (web, records) = store(150);
    let ids = all_ids(&records);
    let replicas = [replica(2, &web), replica(3, &web), replica(4, &web)];
    let client = client_over(&replicas.iter().collect::<Vec<_>>(), Policy::Affinity).await;
    let mut stream = client.neuron_splits(block(150), &BULK_SPLITS, N);
    let mut delivered = Vec::new();
    let mut cursors = Vec::new();
    while let Some(neuron) = stream.next().await {
        let neuron = neuron.unwrap();
        check_neuron(&neuron, &records);
        delivered.push(neuron.neuron_id);
        cursors.push(neuron.cursor);
        if delivered.len() == 100 {
            replicas[1].signal("KILL");
        }
    }
    // Every neuron once, in selection order, though a third of them lost their server.
    assert_eq!(delivered, ids);
    assert!(!client.servers()[1].available, "{:?}", client.servers());

    // Each cursor resumes the whole request after its neuron, here on the two replicas left.
    let rest: Vec<NeuronId> = client
        .neuron_splits_from(block(150), &BULK_SPLITS, N, cursors[199].clone())
        .map(|neuron| neuron.unwrap().neuron_id)
        .collect()
        .await;
    assert_eq!(rest, ids[200..]);
    // And on one server alone: the cursor is the server's own.
    let one = ActivationsClient::builder()
        .endpoint(replicas[0].url.clone())
        .dataset(DATASET)
        .connect()
        .await
        .unwrap();
    let rest: Vec<NeuronId> = one
        .neuron_splits_from(block(150), &BULK_SPLITS, N, cursors[249].clone())
        .map(|neuron| neuron.unwrap().neuron_id)
        .collect()
        .await;
    assert_eq!(rest, ids[250..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_streams_read_each_neuron_on_its_owner_once_and_unordered_ones_lose_nothing() {
    let (web, records) = store(150);
    let ids = all_ids(&records);
    let replicas = [replica(2, &web), replica(3, &web), replica(4, &web)];
    let client = client_over(&replicas.iter().collect::<Vec<_>>(), Policy::Affinity).await;
    let start = reads(&web, &ids);
    let first: Vec<NeuronId> = client
        .neuron_splits(block(150), &BULK_SPLITS, N)
        .map(|neuron| neuron.unwrap().neuron_id)
        .collect()
        .await;
    assert_eq!(first, ids);
    assert_eq!(read_since(&web, &ids, &start).len(), 300);
    let after_first = reads(&web, &ids);

    // The same neurons as they arrive: each once, none read from storage again.
    let mut unordered = Vec::new();
    let mut stream = client.neuron_splits_unordered(block(150), &BULK_SPLITS, N);
    while let Some(neuron) = stream.next().await {
        let neuron = neuron.unwrap();
        check_neuron(&neuron, &records);
        assert!(neuron.cursor.is_empty());
        unordered.push(neuron.neuron_id);
    }
    assert_eq!(unordered.len(), 300);
    unordered.sort_by_key(|id| (id.layer_index, id.neuron_index));
    assert_eq!(unordered, ids);
    assert!(read_since(&web, &ids, &after_first).is_empty());
    // The listed form of the same selection: expanded by listing, the same neurons.
    let listed: Vec<NeuronId> = client
        .neuron_splits(
            activations_client::Selection::Range {
                layers: 0..LAYERS,
                neurons: None,
            },
            &BULK_SPLITS,
            N,
        )
        .map(|neuron| neuron.unwrap().neuron_id)
        .collect()
        .await;
    assert_eq!(listed, ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_during_a_bulk_job_reaches_the_job_as_nothing() {
    let (web, records) = store(600);
    web.set_network(activations_webstore::Network {
        first_byte: Duration::from_millis(5),
        ..Default::default()
    });
    let ids = all_ids(&records);
    // More than HTTP/2's windows hold per replica, so each replica's stream is still open when
    // its replica stops.
    let args = replica_args(
        &web,
        &["--bulk-read-ahead", "1", "--bulk-read-ahead-bytes", "64KiB"],
    );
    let mut replicas: Vec<Option<ServerProcess>> = [2, 3, 4]
        .map(|host| Some(ServerProcess::start_on(&format!("127.0.0.{host}:0"), &args)))
        .into();
    let addresses: Vec<String> = replicas.iter().flatten().map(address).collect();
    let client = client_over(
        &replicas.iter().flatten().collect::<Vec<_>>(),
        Policy::Affinity,
    )
    .await;
    let mut delivered = Vec::new();
    let mut restarted = Vec::new();
    let mut cut_streams = 0;
    let mut stream = client.neuron_splits(block(600), &ALL_SPLITS, N);
    while let Some(neuron) = stream.next().await {
        let neuron = neuron.expect("no error reaches the job");
        check_splits(&neuron, &records, &ALL_SPLITS);
        delivered.push(neuron.neuron_id);
        // After each 300 neurons, one replica is restarted as Kubernetes rolls a Deployment:
        // SIGTERM, drain (its open stream, which the job is not reading meanwhile, is ended
        // after the 2 s grace), exit, a new process on the same address.
        let k = delivered.len() / 300;
        if delivered.len() % 300 == 0 && (1..=3).contains(&k) {
            let mut old = replicas[k - 1].take().unwrap();
            old.terminate();
            assert!(old.exit_status(Duration::from_secs(20)).await.success());
            if old.log().contains("grace period over") {
                cut_streams += 1;
            }
            restarted.push(ServerProcess::start_on(&addresses[k - 1], &args));
        }
    }
    assert_eq!(restarted.len(), 3);
    assert!(
        cut_streams >= 1,
        "no replica stopped with a stream open: the test did not test the hand-over"
    );
    assert_eq!(delivered, ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_target_over_tls_checks_the_certificates_against_the_dns_name() {
    use activations_e2e::certs::{SERVER_NAME, TestPki};
    activations_e2e::install_tls_provider();
    let pki = TestPki::new();
    let (web, records) = store(10);
    let ids = all_ids(&records);
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let tls_args = [
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    let replicas = [2, 3].map(|host| {
        ServerProcess::start_on(&format!("127.0.0.{host}:0"), &replica_args(&web, &tls_args))
    });
    let resolver = Switchable::default();
    resolver.set(&[&replicas[0], &replicas[1]]);
    let tls = activations_client::Tls::new().ca_certificate_pem(pki.read("ca.pem"));
    let builder = |name: &str| {
        ActivationsClient::builder()
            .endpoint(format!("dns:///{name}:50051"))
            .resolver(resolver.clone())
            .tls(tls.clone())
            .dataset(DATASET)
            .retry(activations_client::RetryPolicy::NONE)
    };
    // The replicas are dialed at their addresses, and their certificate (for SERVER_NAME, not
    // for 127.0.0.2 or .3) is checked against the DNS name.
    let client = builder(SERVER_NAME).connect().await.unwrap();
    assert_eq!(client.servers().len(), 2);
    pass(&client, &ids, &records, |_| {}).await;
    // Under another name, the same servers are refused.
    let other = builder("elsewhere.example").connect().await.unwrap();
    let error = other
        .activation_records(ids[0], Split::Valid, N)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("certificate") || error.contains("NotValidForName"),
        "{error}"
    );
}
