//! The SDK's jobs-at-scale side against real servers: bulk streams that give exactly what
//! per-neuron calls give, per-neuron errors in place, resumption after a dropped connection (and
//! onto another server), client-side balancing, retries of unavailable storage, deadlines, and
//! the explainer helpers against the Python explainer.

use activations_webstore::{Fault, FaultyHttpServer};
use std::{
    collections::HashMap,
    net::SocketAddr,
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use activations_client::{
    ActivationsClient, Code, Compression, Error, NeuronSplits, RetryPolicy, Selection, Split,
    max_activation, neuron_id, normalized_activations, pb,
};
use activations_e2e::{
    TcpProxy, TestServer,
    conformance::{self, CORRUPT},
    fixtures, open_datasets, serve_dir, serve_uris, start_server,
    tools::{python, workspace_root},
};
use activations_format::layout::LayoutChoice;
use activations_server::{
    bulk::BulkSettings, location::StorageOptions, service::ActivationsService,
};
use bytes::Bytes;
use futures::TryStreamExt;
use prost::Message;
use serde_json::Value;
use tonic::{Request, Response, Status};

const ALL_SPLITS: [Split; 4] = [Split::Train, Split::Calibration, Split::Valid, Split::Test];

/// Serves `dir` with small bulk messages, so most neurons take several.
async fn serve_in_small_messages(dir: &std::path::Path) -> TestServer {
    let datasets = open_datasets(&[("sdk", dir)], LayoutChoice::Auto).await;
    start_server(
        ActivationsService::new(datasets).with_bulk_settings(BulkSettings {
            message_bytes: 8 * 1024,
            ..BulkSettings::DEFAULT
        }),
    )
    .await
}

/// One split of one neuron through `StreamActivationRecords`: the records encoded, or the code.
async fn split_bytes(
    client: &ActivationsClient,
    id: pb::NeuronId,
    split: Split,
    n: Option<u32>,
) -> Result<Vec<Vec<u8>>, Code> {
    let stream = client
        .stream_activation_records(id, split, n)
        .await
        .map_err(|e| e.code().unwrap())?;
    let records: Vec<pb::SplitActivationRecord> =
        stream.try_collect().await.map_err(|e| e.code().unwrap())?;
    Ok(records.iter().map(Message::encode_to_vec).collect())
}

/// The records of a bulk item, per split, encoded.
fn item_bytes(neuron: &NeuronSplits) -> Vec<Vec<Vec<u8>>> {
    neuron
        .splits
        .as_ref()
        .unwrap_or_else(|e| panic!("{:?}: {e}", neuron.neuron_id))
        .iter()
        .map(|split| split.records.iter().map(Message::encode_to_vec).collect())
        .collect()
}

fn ids(items: &[NeuronSplits]) -> Vec<(u32, u32)> {
    items
        .iter()
        .map(|item| (item.neuron_id.layer_index, item.neuron_id.neuron_index))
        .collect()
}

/// Checks every bulk item against per-neuron calls of every split.
async fn assert_matches_per_neuron_calls(
    client: &ActivationsClient,
    items: &[NeuronSplits],
    splits: &[Split],
    n: Option<u32>,
) {
    for item in items {
        let id = item.neuron_id;
        let mut per_split = Vec::new();
        for &split in splits {
            per_split.push(split_bytes(client, id, split, n).await);
        }
        match &item.splits {
            Ok(_) => {
                let expected: Vec<Vec<Vec<u8>>> = per_split
                    .into_iter()
                    .map(|split| split.unwrap_or_else(|code| panic!("{id:?} n={n:?}: {code:?}")))
                    .collect();
                assert_eq!(item_bytes(item), expected, "{id:?} n={n:?}");
                for (records, &split) in item.splits.as_ref().unwrap().iter().zip(splits) {
                    assert_eq!(records.split(), split);
                }
            }
            Err(status) => {
                // The neuron's error is what its own calls fail with (all of them, or for too
                // few records at least one).
                let code = status.code();
                assert!(
                    per_split.iter().all(|r| r.is_ok() || *r == Err(code))
                        && per_split.contains(&Err(code)),
                    "{id:?} n={n:?}: bulk {status}, per split {per_split:?}"
                );
                assert!(status.reason().is_some(), "{id:?}: {status}");
            }
        }
    }
}

/// The code the conformance dataset answers a neuron with, for `n`.
fn expected_code((layer, neuron): (u32, u32), n: Option<u32>) -> Option<Code> {
    if layer >= conformance::LAYERS || neuron >= conformance::NEURONS {
        Some(Code::NotFound)
    } else if (layer, neuron) == CORRUPT {
        Some(Code::DataLoss)
    } else if (layer, neuron) != conformance::REAL && n == Some(11) {
        // 40 top-activating records, where 4 * 11 are needed.
        Some(Code::FailedPrecondition)
    } else {
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_streams_give_what_per_neuron_calls_give() {
    let dir = tempfile::tempdir().unwrap();
    conformance::write_dataset(dir.path(), false);
    let server = serve_in_small_messages(dir.path()).await;
    // Compressed requests and responses on the way.
    let client = ActivationsClient::builder()
        .endpoint(server.url())
        .compression(Some(Compression::Gzip))
        .connect()
        .await
        .unwrap();
    let list = [(1, 1), (0, 2), (5, 5), (1, 1), (0, 0)];
    let cases = [
        (
            Selection::Range {
                layers: 0..2,
                neurons: None,
            },
            vec![(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)],
        ),
        (
            Selection::Range {
                layers: 0..3,
                neurons: Some(1..4),
            },
            vec![
                (0, 1),
                (0, 2),
                (0, 3),
                (1, 1),
                (1, 2),
                (1, 3),
                (2, 1),
                (2, 2),
                (2, 3),
            ],
        ),
        (
            Selection::Neurons(list.iter().map(|&(l, n)| neuron_id(l, n)).collect()),
            list.to_vec(),
        ),
    ];
    for (selection, expected) in cases {
        for (splits, n) in [
            (&ALL_SPLITS[..], None),
            (&[Split::Valid, Split::Train][..], Some(5)),
            (&[Split::Test][..], Some(11)),
        ] {
            let context = format!("{selection:?} {splits:?} n={n:?}");
            let items: Vec<NeuronSplits> = client
                .neuron_splits(selection.clone(), splits, n)
                .try_collect()
                .await
                .unwrap_or_else(|e| panic!("{context}: {e}"));
            assert_eq!(ids(&items), expected, "{context}");
            for item in &items {
                let key = (item.neuron_id.layer_index, item.neuron_id.neuron_index);
                let code = item.splits.as_ref().err().map(|status| status.code());
                assert_eq!(code, expected_code(key, n), "{context}: {key:?}");
                assert!(!item.cursor.is_empty(), "{context}: {key:?}");
            }
            assert_matches_per_neuron_calls(&client, &items, splits, n).await;
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_continues_a_bulk_stream_after_that_neuron() {
    let dir = tempfile::tempdir().unwrap();
    conformance::write_dataset(dir.path(), false);
    let server = serve_in_small_messages(dir.path()).await;
    let client = server.client().await;
    let selection = Selection::Range {
        layers: 0..2,
        neurons: Some(0..3),
    };
    let all: Vec<NeuronSplits> = client
        .neuron_splits(selection.clone(), &ALL_SPLITS, Some(3))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 6);
    for (i, item) in all.iter().enumerate() {
        let rest: Vec<NeuronSplits> = client
            .neuron_splits_from(selection.clone(), &ALL_SPLITS, Some(3), item.cursor.clone())
            .try_collect()
            .await
            .unwrap();
        assert_eq!(ids(&rest), ids(&all[i + 1..]), "after {:?}", item.neuron_id);
    }
    // A cursor of another request is refused.
    let err = client
        .neuron_splits_from(selection, &[Split::Valid], Some(3), all[0].cursor.clone())
        .try_next()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
    server.stop().await;
}

/// Errors a `for_each_neuron` job may stop with.
#[derive(Debug)]
enum JobError {
    Sdk(Error),
    Stopped(pb::NeuronId),
}

impl From<Error> for JobError {
    fn from(error: Error) -> Self {
        JobError::Sdk(error)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn for_each_neuron_runs_callbacks_concurrently_and_stops_at_the_first_error() {
    let dir = tempfile::tempdir().unwrap();
    conformance::write_dataset(dir.path(), false);
    let server = serve_in_small_messages(dir.path()).await;
    let client = server.client().await;
    let selection = Selection::Range {
        layers: 0..2,
        neurons: None,
    };

    let seen = Mutex::new(Vec::new());
    let running = std::sync::atomic::AtomicUsize::new(0);
    let most = std::sync::atomic::AtomicUsize::new(0);
    client
        .for_each_neuron(selection.clone(), &[Split::Valid], Some(3), 3, |neuron| {
            let (seen, running, most) = (&seen, &running, &most);
            async move {
                use std::sync::atomic::Ordering::SeqCst;
                let now = running.fetch_add(1, SeqCst) + 1;
                most.fetch_max(now, SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                let key = (neuron.neuron_id.layer_index, neuron.neuron_id.neuron_index);
                seen.lock().unwrap().push((key, neuron.splits.is_ok()));
                running.fetch_sub(1, SeqCst);
                Ok::<(), JobError>(())
            }
        })
        .await
        .unwrap();
    let mut seen = seen.into_inner().unwrap();
    seen.sort();
    assert_eq!(
        seen,
        [
            ((0, 0), true),
            ((0, 1), true),
            ((0, 2), false),
            ((1, 0), true),
            ((1, 1), true),
            ((1, 2), true)
        ]
    );
    let most = most.into_inner();
    assert!((2..=3).contains(&most), "{most} callbacks at once");

    let stopped = client
        .for_each_neuron(
            selection.clone(),
            &[Split::Valid],
            Some(3),
            2,
            |neuron| async move {
                if neuron.neuron_id == neuron_id(1, 0) {
                    return Err(JobError::Stopped(neuron.neuron_id));
                }
                Ok(())
            },
        )
        .await;
    assert!(
        matches!(stopped, Err(JobError::Stopped(id)) if id == neuron_id(1, 0)),
        "{stopped:?}"
    );

    // A stream error is the job's error.
    let unknown = client
        .clone()
        .with_dataset("no-such-dataset")
        .for_each_neuron(selection, &[Split::Valid], None, 2, |_| async {
            Ok::<(), JobError>(())
        })
        .await;
    assert!(
        matches!(&unknown, Err(JobError::Sdk(e)) if e.code() == Some(Code::NotFound)),
        "{unknown:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_stream_resumes_after_a_dropped_connection_on_another_server() {
    const NEURONS: u32 = 40;
    let dir = tempfile::tempdir().unwrap();
    for neuron in 0..NEURONS {
        let record = fixtures::neuron(7000 + u64::from(neuron), 0, neuron, 200, 150);
        fixtures::write_neuron(dir.path(), false, 0, neuron, &fixtures::to_json(&record));
    }
    let first = serve_in_small_messages(dir.path()).await;
    let second = serve_in_small_messages(dir.path()).await;
    let proxy = TcpProxy::start(first.addr).await;
    let client = ActivationsClient::builder()
        .endpoint(proxy.url())
        .retry(RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
        })
        .connect()
        .await
        .unwrap();
    let selection = Selection::Range {
        layers: 0..1,
        neurons: Some(0..NEURONS),
    };
    let mut stream = client.neuron_splits(selection, &ALL_SPLITS, None);
    let mut items = Vec::new();
    for _ in 0..3 {
        items.push(stream.try_next().await.unwrap().unwrap());
    }
    // The network fails under the stream, and the server it used goes away.
    proxy.set_target(second.addr);
    proxy.cut();
    tokio::time::timeout(Duration::from_secs(10), first.stop())
        .await
        .expect("the first server stops");
    while let Some(item) = stream.try_next().await.unwrap() {
        items.push(item);
    }
    assert!(proxy.accepted() >= 2, "{} connections", proxy.accepted());
    assert_eq!(
        ids(&items),
        (0..NEURONS).map(|n| (0, n)).collect::<Vec<_>>(),
        "every neuron exactly once, in order"
    );
    let direct = second.client().await;
    assert_matches_per_neuron_calls(&direct, &items, &ALL_SPLITS, None).await;
    second.stop().await;
}

/// A `StreamNeuronSplits` that plays a script: the first call ends cleanly in the middle of
/// neuron 1, the second (resuming after neuron 0) fails in the middle of it, the third serves
/// the rest. Other calls are UNIMPLEMENTED.
#[derive(Debug, Default, Clone)]
struct Scripted {
    cursors: Arc<Mutex<Vec<String>>>,
}

fn scripted_part(neuron: u32, token: &str, continues: bool, cursor: &str) -> pb::NeuronSplits {
    pb::NeuronSplits {
        neuron_id: Some(neuron_id(0, neuron)),
        splits: vec![pb::SplitRecords {
            split: Split::Valid.into(),
            records: vec![pb::SplitActivationRecord {
                record: Some(pb::ActivationRecord {
                    tokens: vec![token.to_owned()],
                    activations: vec![0.5],
                    ..Default::default()
                }),
                source: pb::RecordSource::TopActivating.into(),
                source_index: 0,
            }],
        }],
        error: None,
        continues,
        cursor: cursor.to_owned(),
    }
}

type ScriptStream<T> = futures::stream::Iter<std::vec::IntoIter<Result<T, Status>>>;

#[tonic::async_trait]
impl pb::activation_service_server::ActivationService for Scripted {
    async fn get_neuron_record(
        &self,
        _: Request<pb::GetNeuronRecordRequest>,
    ) -> Result<Response<pb::NeuronRecord>, Status> {
        Err(Status::unimplemented("scripted"))
    }

    type StreamActivationRecordsStream = ScriptStream<pb::SplitActivationRecord>;

    async fn stream_activation_records(
        &self,
        _: Request<pb::StreamActivationRecordsRequest>,
    ) -> Result<Response<Self::StreamActivationRecordsStream>, Status> {
        Err(Status::unimplemented("scripted"))
    }

    type StreamNeuronSplitsStream = ScriptStream<pb::NeuronSplits>;

    async fn stream_neuron_splits(
        &self,
        request: Request<pb::StreamNeuronSplitsRequest>,
    ) -> Result<Response<Self::StreamNeuronSplitsStream>, Status> {
        let cursor = request.into_inner().cursor;
        let call = {
            let mut cursors = self.cursors.lock().unwrap();
            cursors.push(cursor);
            cursors.len()
        };
        let messages = match call {
            1 => vec![
                Ok(scripted_part(0, "a", false, "after-0")),
                Ok(scripted_part(1, "stale", true, "")),
            ],
            2 => vec![
                Ok(scripted_part(1, "stale", true, "")),
                Err(Status::unavailable("scripted failure")),
            ],
            _ => vec![
                Ok(scripted_part(1, "b1", true, "")),
                Ok(scripted_part(1, "b2", false, "after-1")),
                Ok(scripted_error(
                    2,
                    Code::NotFound,
                    "no neuron 0:2",
                    "after-2",
                )),
            ],
        };
        Ok(Response::new(futures::stream::iter(messages)))
    }

    async fn get_neuron_summary(
        &self,
        _: Request<pb::GetNeuronSummaryRequest>,
    ) -> Result<Response<pb::NeuronSummary>, Status> {
        Err(Status::unimplemented("scripted"))
    }

    async fn neuron_exists(
        &self,
        _: Request<pb::NeuronExistsRequest>,
    ) -> Result<Response<pb::NeuronExistsResponse>, Status> {
        Err(Status::unimplemented("scripted"))
    }

    async fn list_layers(
        &self,
        _: Request<pb::ListLayersRequest>,
    ) -> Result<Response<pb::ListLayersResponse>, Status> {
        Err(Status::unimplemented("scripted"))
    }

    async fn list_neurons(
        &self,
        _: Request<pb::ListNeuronsRequest>,
    ) -> Result<Response<pb::ListNeuronsResponse>, Status> {
        Err(Status::unimplemented("scripted"))
    }

    async fn list_datasets(
        &self,
        _: Request<pb::ListDatasetsRequest>,
    ) -> Result<Response<pb::ListDatasetsResponse>, Status> {
        Err(Status::unimplemented("scripted"))
    }
}

/// A neuron's error message, its `google.rpc.Status` filled in place (the tests do not name
/// that type's crate).
fn scripted_error(neuron: u32, code: Code, message: &str, cursor: &str) -> pb::NeuronSplits {
    let mut splits = pb::NeuronSplits {
        neuron_id: Some(neuron_id(0, neuron)),
        error: Some(Default::default()),
        cursor: cursor.to_owned(),
        ..Default::default()
    };
    if let Some(error) = &mut splits.error {
        error.code = code as i32;
        error.message = message.to_owned();
    }
    splits
}

async fn serve_scripted(service: Scripted) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(pb::activation_service_server::ActivationServiceServer::new(
            service,
        ))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    let task = tokio::spawn(async move {
        server.await.expect("the scripted server runs");
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_neuron_cut_short_is_read_again_from_the_start() {
    let script = Scripted::default();
    let (addr, task) = serve_scripted(script.clone()).await;
    let client = ActivationsClient::builder()
        .endpoint(addr.to_string())
        .retry(RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(20),
        })
        .connect()
        .await
        .unwrap();
    let selection = Selection::Range {
        layers: 0..1,
        neurons: Some(0..3),
    };
    let items: Vec<NeuronSplits> = client
        .neuron_splits(selection.clone(), &[Split::Valid], None)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(ids(&items), [(0, 0), (0, 1), (0, 2)]);
    let tokens = |item: &NeuronSplits| -> Vec<String> {
        item.records(Split::Valid)
            .unwrap()
            .iter()
            .map(|entry| entry.record.as_ref().unwrap().tokens[0].clone())
            .collect()
    };
    assert_eq!(tokens(&items[0]), ["a"]);
    // The stale first part of neuron 1, from the two failed calls, is gone.
    assert_eq!(tokens(&items[1]), ["b1", "b2"]);
    let error = items[2].splits.as_ref().unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
    assert_eq!(
        (items[0].cursor.as_str(), items[1].cursor.as_str()),
        ("after-0", "after-1")
    );
    assert_eq!(
        *script.cursors.lock().unwrap(),
        ["", "after-0", "after-0"],
        "resumed twice after neuron 0"
    );

    // The failures count from the last neuron delivered: with 2 attempts, the second failure
    // in neuron 1 ends the stream.
    let script = Scripted::default();
    let (addr, second_task) = serve_scripted(script.clone()).await;
    let impatient = ActivationsClient::builder()
        .endpoint(addr.to_string())
        .retry(RetryPolicy {
            max_attempts: 2,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(20),
        })
        .connect()
        .await
        .unwrap();
    let mut stream = impatient.neuron_splits(selection, &[Split::Valid], None);
    let first = stream.try_next().await.unwrap().unwrap();
    assert_eq!(first.neuron_id, neuron_id(0, 0));
    let err = stream.try_next().await.unwrap_err();
    assert_eq!(err.code(), Some(Code::Unavailable), "{err}");
    assert!(err.to_string().contains("scripted failure"), "{err}");
    assert!(stream.try_next().await.unwrap().is_none(), "nothing after");
    task.abort();
    second_task.abort();
}

/// `load_neuron` of each of `0..count` on a client, to spread calls.
async fn load_each(client: &ActivationsClient, count: u32) {
    for neuron in 0..count {
        client
            .load_neuron(0, neuron)
            .await
            .unwrap_or_else(|e| panic!("0/{neuron}: {e}"));
    }
}

fn real_neuron_files(count: u32) -> HashMap<String, Bytes> {
    (0..count)
        .map(|n| {
            (
                format!("0/{n}.json"),
                Bytes::from_static(fixtures::REAL_NEURON),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_balanced_over_several_servers() {
    const NEURONS: u32 = 24;
    // Each server reads its own copy of the dataset; its storage requests show its calls (each
    // neuron is asked for once, so no server answers from its cache).
    let webs = [
        FaultyHttpServer::start(real_neuron_files(NEURONS)),
        FaultyHttpServer::start(real_neuron_files(NEURONS)),
    ];
    let mut servers = Vec::new();
    for web in &webs {
        let uri = format!("{}?layers=1&neurons={NEURONS}&layout=flat", web.url());
        servers.push(serve_uris(&[("web", &uri)], StorageOptions::DEFAULT).await);
    }
    let client = ActivationsClient::builder()
        .endpoints(servers.iter().map(TestServer::url))
        .connect()
        .await
        .unwrap();
    load_each(&client, NEURONS).await;
    let counts: Vec<usize> = webs
        .iter()
        .map(|web| {
            (0..NEURONS)
                .map(|n| web.requests(&format!("0/{n}.json")))
                .sum()
        })
        .collect();
    assert_eq!(counts.iter().sum::<usize>(), NEURONS as usize, "{counts:?}");
    assert!(
        counts.iter().all(|&c| c > 0),
        "both servers get calls: {counts:?}"
    );

    // One server going away leaves the other to answer, the failures retried.
    let mut servers = servers.into_iter();
    let (gone, left) = (servers.next().unwrap(), servers.next().unwrap());
    gone.stop().await;
    let layers = client.sorted_layers().await;
    assert_eq!(layers.unwrap(), [0]);
    left.stop().await;
}

/// Storage that fails fast: one attempt, no server-side retries.
const FAIL_FAST: StorageOptions = StorageOptions {
    request_timeout: Duration::from_millis(300),
    connect_timeout: Duration::from_secs(1),
    max_retries: 0,
    retry_budget: Duration::from_secs(0),
};

const PATIENT: RetryPolicy = RetryPolicy {
    max_attempts: 5,
    initial_backoff: Duration::from_millis(100),
    max_backoff: Duration::from_secs(2),
};

/// Clears the faults of `path` after 300 ms.
fn recover_soon(web: &Arc<FaultyHttpServer>, path: &str) -> tokio::task::JoinHandle<()> {
    let (web, path) = (web.clone(), path.to_owned());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        web.clear_faults(&path);
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_storage_is_retried_until_it_recovers() {
    let web = Arc::new(FaultyHttpServer::start(real_neuron_files(6)));
    let uri = format!("{}?layers=1&neurons=6&layout=flat", web.url());
    let server = serve_uris(&[("web", &uri)], FAIL_FAST).await;
    let once = ActivationsClient::builder()
        .endpoint(server.url())
        .retry(RetryPolicy::NONE)
        .connect()
        .await
        .unwrap();
    let patient = ActivationsClient::builder()
        .endpoint(server.url())
        .retry(PATIENT)
        .connect()
        .await
        .unwrap();
    let expected = once.load_neuron(0, 5).await.unwrap().encode_to_vec();

    // Unary: UNAVAILABLE without retries; with them, the call outlives the fault.
    web.inject_always("0/0.json", Fault::Status(500));
    let err = once.load_neuron(0, 0).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::Unavailable), "{err}");
    assert_eq!(
        err.status().and_then(|s| s.reason()),
        Some("STORAGE_UNAVAILABLE")
    );
    let recovery = recover_soon(&web, "0/0.json");
    let started = Instant::now();
    let record = patient.load_neuron(0, 0).await.unwrap();
    assert_eq!(record.encode_to_vec(), expected);
    // The server asks for a second before a retry (RetryInfo), and the client waits that long.
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert!(
        web.requests("0/0.json") >= 3,
        "{}",
        web.requests("0/0.json")
    );
    recovery.await.unwrap();

    // A split stream fails before its first record: retried.
    web.inject_always("0/1.json", Fault::Status(500));
    let err = once
        .activation_records(neuron_id(0, 1), Split::Valid, Some(5))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::Unavailable), "{err}");
    let recovery = recover_soon(&web, "0/1.json");
    let records = patient
        .activation_records(neuron_id(0, 1), Split::Valid, Some(5))
        .await
        .unwrap();
    let reference = patient
        .activation_records(neuron_id(0, 5), Split::Valid, Some(5))
        .await
        .unwrap();
    assert_eq!(records, reference);
    recovery.await.unwrap();

    // A bulk stream ends at the unavailable neuron; the SDK resumes it after the last neuron
    // delivered.
    web.inject_always("0/3.json", Fault::Status(500));
    let selection = Selection::Range {
        layers: 0..1,
        neurons: Some(0..6),
    };
    let partial: Vec<Result<NeuronSplits, Error>> = {
        use futures::StreamExt;
        once.neuron_splits(selection.clone(), &[Split::Valid], Some(5))
            .collect()
            .await
    };
    let delivered: Vec<_> = partial
        .iter()
        .filter_map(|item| item.as_ref().ok())
        .collect();
    assert_eq!(delivered.len(), 3, "neurons 0 to 2 before the failure");
    let last = partial.last().unwrap().as_ref().unwrap_err();
    assert_eq!(last.code(), Some(Code::Unavailable), "{last}");
    let before = web.requests("0/3.json");
    let recovery = recover_soon(&web, "0/3.json");
    let items: Vec<NeuronSplits> = patient
        .neuron_splits(selection, &[Split::Valid], Some(5))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(ids(&items), (0..6).map(|n| (0, n)).collect::<Vec<_>>());
    assert!(items.iter().all(|item| item.splits.is_ok()));
    assert!(web.requests("0/3.json") >= before + 2);
    recovery.await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_bounds_calls_and_streams_with_deadline_exceeded() {
    let web = FaultyHttpServer::start(real_neuron_files(3));
    web.inject_always("0/0.json", Fault::Delay(Duration::from_secs(3)));
    let uri = format!("{}?layers=1&neurons=3&layout=flat", web.url());
    let storage = StorageOptions {
        request_timeout: Duration::from_secs(10),
        ..FAIL_FAST
    };
    let server = serve_uris(&[("web", &uri)], storage).await;
    let timeout = Duration::from_millis(500);
    let client = ActivationsClient::builder()
        .endpoint(server.url())
        .timeout(timeout)
        .retry(PATIENT)
        .connect()
        .await
        .unwrap();

    let started = Instant::now();
    let err = client.load_neuron(0, 0).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::DeadlineExceeded), "{err}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= timeout && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );

    let err = client
        .activation_records(neuron_id(0, 0), Split::Valid, Some(5))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::DeadlineExceeded), "{err}");

    // Within the deadline, calls succeed.
    client.load_neuron(0, 1).await.unwrap();

    // A bulk stream delivers what came in time, then DEADLINE_EXCEEDED, then nothing.
    let mut stream = client.neuron_splits(
        Selection::Neurons(vec![neuron_id(0, 1), neuron_id(0, 0), neuron_id(0, 2)]),
        &[Split::Valid],
        Some(5),
    );
    let started = Instant::now();
    let first = stream.try_next().await.unwrap().unwrap();
    assert_eq!(first.neuron_id, neuron_id(0, 1));
    let err = stream.try_next().await.unwrap_err();
    assert_eq!(err.code(), Some(Code::DeadlineExceeded), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(stream.try_next().await.unwrap().is_none());

    // Without a timeout, the slow neuron arrives.
    let record = client.clone().with_timeout(None).load_neuron(0, 0).await;
    assert!(record.is_ok(), "{record:?}");
    server.stop().await;
}

/// Runs `tests/oracle/SCRIPT ARGS...` with the reference loader's Python; its JSON output.
fn run_reference(script: &str, args: &[String]) -> Value {
    let output = Command::new(python())
        .arg(workspace_root().join("tests/oracle").join(script))
        .args(args)
        .output()
        .expect("running the Python reference");
    assert!(
        output.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the script prints JSON")
}

fn bits(value: &Value) -> u32 {
    value
        .as_u64()
        .and_then(|bits| u32::try_from(bits).ok())
        .unwrap_or_else(|| panic!("not float bits: {value}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Python reference loader: run scripts/test.sh"]
async fn explainer_helpers_match_the_python_explainer() {
    let dir = tempfile::tempdir().unwrap();
    fixtures::write_neuron(dir.path(), false, 1, 1, fixtures::REAL_NEURON);
    // Edge cases, as the decimals of a file: bucket edges where a float's own value falls
    // below the integer, an activation at the maximum that Python rounds to 9, NaN, negatives.
    let cases: &[(&[f32], f32, &str)] = &[
        (
            &[0.7, 0.3, 0.6, 0.9, 0.1, 0.2],
            1.0,
            "[[0.7, 0.3, 0.6, 0.9, 0.1, 0.2], 1.0]",
        ),
        (&[1.4, 0.7, 2.0], 2.0, "[[1.4, 0.7, 2.0], 2.0]"),
        (
            &[0.0527, 0.0526, -0.0527],
            0.0527,
            "[[0.0527, 0.0526, -0.0527], 0.0527]",
        ),
        (&[7.77, 3.885, 0.777], 7.77, "[[7.77, 3.885, 0.777], 7.77]"),
        (&[f32::NAN, 1.0, -2.0], 2.0, "[[NaN, 1.0, -2.0], 2.0]"),
        (&[-1.0, -0.5], 0.0, "[[-1.0, -0.5], 0.0]"),
        (
            &[3.2617, 1.6308, 1.6309],
            3.2617,
            "[[3.2617, 1.6308, 1.6309], 3.2617]",
        ),
    ];
    let cases_json = format!(
        "[{}]",
        cases
            .iter()
            .map(|(_, _, json)| *json)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let reference = run_reference(
        "reference_explain.py",
        &[
            dir.path().display().to_string(),
            "1/1".to_owned(),
            cases_json,
        ],
    );

    let server = serve_dir("explain", dir.path()).await;
    let client = server.client().await;
    let neuron = client
        .neuron_splits(Selection::Neurons(vec![neuron_id(1, 1)]), &ALL_SPLITS, None)
        .try_next()
        .await
        .unwrap()
        .unwrap();
    let names = ["train", "calibration", "valid", "test"];
    let mut compared = 0;
    for (split, name) in ALL_SPLITS.into_iter().zip(names) {
        let expected = &reference["splits"][name];
        let records: Vec<pb::ActivationRecord> = neuron
            .records(split)
            .unwrap()
            .iter()
            .map(|entry| entry.record.clone().unwrap())
            .collect();
        let split_max = max_activation(&records).unwrap();
        assert_eq!(split_max.to_bits(), bits(&expected["max"]), "{name} max");
        let expected_records = expected["records"].as_array().unwrap();
        assert_eq!(records.len(), expected_records.len(), "{name}");
        for (i, (record, want)) in records.iter().zip(expected_records).enumerate() {
            let own_max = max_activation(std::slice::from_ref(record)).unwrap();
            assert_eq!(own_max.to_bits(), bits(&want["max"]), "{name} #{i} max");
            let by_split = normalized_activations(&record.activations, split_max);
            assert_eq!(
                serde_json::json!(by_split),
                want["by_split_max"],
                "{name} #{i}"
            );
            let by_own = normalized_activations(&record.activations, own_max);
            assert_eq!(serde_json::json!(by_own), want["by_own_max"], "{name} #{i}");
            compared += record.activations.len();
        }
    }
    assert!(compared > 6000, "{compared} activations compared");

    for (i, (activations, max, json)) in cases.iter().enumerate() {
        let want = &reference["cases"][i];
        assert_eq!(
            serde_json::json!(normalized_activations(activations, *max)),
            want["normalized"],
            "normalized {json}"
        );
        let record = pb::ActivationRecord {
            tokens: vec![String::new(); activations.len()],
            activations: activations.to_vec(),
            ..Default::default()
        };
        let max = max_activation(&[record]).unwrap();
        assert_eq!(max.to_bits(), bits(&want["max"]), "max {json}");
    }
    server.stop().await;
}
