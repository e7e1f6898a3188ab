//! `StreamNeuronSplits` at the protocol level, through the generated client: selection order,
//! per-neuron errors that do not end the stream, cursors that resume with nothing lost or
//! repeated, neurons split over several messages, bounded read-ahead under a slow client.

use activations_webstore::FaultyHttpServer;
use std::{collections::HashMap, time::Duration};

use activations_client::{Split, neuron_id, pb};
use activations_e2e::{
    TestServer,
    conformance::{self, CORRUPT},
    fixtures, open_datasets, serve_dir, serve_uris, start_server,
};
use activations_format::layout::LayoutChoice;
use activations_server::{
    bulk::BulkSettings, location::StorageOptions, service::ActivationsService,
};
use bytes::Bytes;
use futures::StreamExt;
use pb::activation_service_client::ActivationServiceClient;
use prost::Message;
use tonic::{Code, Status, transport::Channel};

const ALL_SPLITS: [Split; 4] = [Split::Train, Split::Calibration, Split::Valid, Split::Test];

async fn raw(server: &TestServer) -> ActivationServiceClient<Channel> {
    ActivationServiceClient::connect(server.url())
        .await
        .unwrap()
        .max_decoding_message_size(64 << 20)
}

fn range(
    layers: std::ops::Range<u32>,
    neurons: Option<std::ops::Range<u32>>,
) -> pb::NeuronSelection {
    pb::NeuronSelection {
        selection: Some(pb::neuron_selection::Selection::Range(pb::NeuronRange {
            layer_start: layers.start,
            layer_end: layers.end,
            neuron_start: neurons.as_ref().map_or(0, |n| n.start),
            neuron_end: neurons.map(|n| n.end),
        })),
    }
}

fn list(ids: &[(u32, u32)]) -> pb::NeuronSelection {
    pb::NeuronSelection {
        selection: Some(pb::neuron_selection::Selection::Neurons(pb::NeuronIdList {
            neuron_ids: ids.iter().map(|&(l, n)| neuron_id(l, n)).collect(),
        })),
    }
}

fn request(
    selection: pb::NeuronSelection,
    splits: &[Split],
    n: Option<u32>,
) -> pb::StreamNeuronSplitsRequest {
    pb::StreamNeuronSplitsRequest {
        dataset: String::new(),
        selection: Some(selection),
        splits: splits.iter().map(|&s| s as i32).collect(),
        slice_params: Some(pb::ActivationRecordSliceParams {
            n_examples_per_split: n,
        }),
        cursor: String::new(),
    }
}

/// Every message of a stream, and the status that ended it if it failed.
async fn collect(
    client: &mut ActivationServiceClient<Channel>,
    request: pb::StreamNeuronSplitsRequest,
) -> (Vec<pb::NeuronSplits>, Option<Status>) {
    let mut stream = match client.stream_neuron_splits(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return (Vec::new(), Some(status)),
    };
    let mut messages = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(message) => messages.push(message),
            Err(status) => return (messages, Some(status)),
        }
    }
    (messages, None)
}

fn id(message: &pb::NeuronSplits) -> (u32, u32) {
    let id = message.neuron_id.unwrap();
    (id.layer_index, id.neuron_index)
}

/// What the one-neuron RPC streams for each split, encoded.
async fn per_neuron(
    client: &mut ActivationServiceClient<Channel>,
    (layer, neuron): (u32, u32),
    splits: &[Split],
    n: Option<u32>,
) -> Vec<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for &split in splits {
        let mut stream = client
            .stream_activation_records(pb::StreamActivationRecordsRequest {
                dataset: String::new(),
                neuron_id: Some(neuron_id(layer, neuron)),
                split: split as i32,
                slice_params: Some(pb::ActivationRecordSliceParams {
                    n_examples_per_split: n,
                }),
            })
            .await
            .unwrap()
            .into_inner();
        let mut records = Vec::new();
        while let Some(record) = stream.next().await {
            records.push(record.unwrap().encode_to_vec());
        }
        out.push(records);
    }
    out
}

/// The records of one neuron's messages (parts concatenated), per split, encoded.
fn reassembled(parts: &[pb::NeuronSplits]) -> Vec<Vec<Vec<u8>>> {
    let mut out: Vec<Vec<Vec<u8>>> = Vec::new();
    for part in parts {
        out.resize(part.splits.len(), Vec::new());
        for (i, split) in part.splits.iter().enumerate() {
            out[i].extend(split.records.iter().map(Message::encode_to_vec));
        }
    }
    out
}

/// Groups messages by neuron, checking that only a neuron's last message carries a cursor.
fn neurons(messages: &[pb::NeuronSplits]) -> Vec<Vec<pb::NeuronSplits>> {
    let mut grouped: Vec<Vec<pb::NeuronSplits>> = Vec::new();
    let mut open = false;
    for message in messages {
        if open {
            assert_eq!(
                id(message),
                id(&grouped.last().unwrap()[0]),
                "a part of another neuron"
            );
            grouped.last_mut().unwrap().push(message.clone());
        } else {
            grouped.push(vec![message.clone()]);
        }
        open = message.continues;
        assert_eq!(
            message.cursor.is_empty(),
            message.continues,
            "cursor only on the last part"
        );
    }
    assert!(!open, "the stream ended inside a neuron");
    grouped
}

/// Messages with the error details left out: their metadata map has no fixed order.
fn comparable(messages: &[pb::NeuronSplits]) -> Vec<pb::NeuronSplits> {
    messages
        .iter()
        .cloned()
        .map(|mut message| {
            if let Some(error) = &mut message.error {
                assert!(!error.details.is_empty(), "{error:?}");
                error.details.clear();
            }
            message
        })
        .collect()
}

async fn conformance_server() -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    conformance::write_dataset(dir.path(), false);
    let server = serve_dir("bulk", dir.path()).await;
    (dir, server)
}

#[tokio::test]
async fn a_range_streams_every_neuron_in_order_with_errors_in_place() {
    let (_dir, server) = conformance_server().await;
    let mut client = raw(&server).await;
    for (selection, expected) in [
        (
            range(0..2, None),
            vec![(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)],
        ),
        (
            range(0..5, Some(1..4)),
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
                (3, 1),
                (3, 2),
                (3, 3),
                (4, 1),
                (4, 2),
                (4, 3),
            ],
        ),
        (
            list(&[(1, 1), (0, 0), (1, 1), (9, 9)]),
            vec![(1, 1), (0, 0), (1, 1), (9, 9)],
        ),
    ] {
        for n in [None, Some(2)] {
            let (messages, failure) = collect(
                &mut client,
                request(selection.clone(), &[Split::Valid, Split::Train], n),
            )
            .await;
            assert!(failure.is_none(), "{failure:?}");
            let grouped = neurons(&messages);
            let ids: Vec<_> = grouped.iter().map(|parts| id(&parts[0])).collect();
            assert_eq!(ids, expected);
            for parts in &grouped {
                let neuron = id(&parts[0]);
                let exists = neuron.0 < conformance::LAYERS && neuron.1 < conformance::NEURONS;
                match &parts[0].error {
                    Some(error) if neuron == CORRUPT => {
                        assert_eq!(error.code, Code::DataLoss as i32, "{error:?}")
                    }
                    Some(error) if !exists => {
                        assert_eq!(error.code, Code::NotFound as i32, "{error:?}");
                        assert!(
                            error
                                .message
                                .contains(&format!("{}/{}.json", neuron.0, neuron.1)),
                            "{}",
                            error.message
                        );
                        // The rich details travel inside the per-neuron status.
                        assert!(!error.details.is_empty());
                    }
                    Some(error) => panic!("{neuron:?}: {error:?}"),
                    None => {
                        assert!(exists && neuron != CORRUPT, "{neuron:?} served");
                        let splits: Vec<i32> = parts[0].splits.iter().map(|s| s.split).collect();
                        assert_eq!(splits, [Split::Valid as i32, Split::Train as i32]);
                        assert_eq!(
                            reassembled(parts),
                            per_neuron(&mut client, neuron, &[Split::Valid, Split::Train], n).await,
                            "{neuron:?} n={n:?}"
                        );
                    }
                }
            }
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn too_few_records_is_a_per_neuron_failed_precondition() {
    let dir = tempfile::tempdir().unwrap();
    fixtures::write_neuron(
        dir.path(),
        false,
        0,
        0,
        &fixtures::to_json(&fixtures::neuron(1, 0, 0, 8, 6)),
    );
    fixtures::write_neuron(
        dir.path(),
        false,
        0,
        1,
        &fixtures::to_json(&fixtures::neuron(2, 0, 1, 40, 30)),
    );
    let server = serve_dir("small", dir.path()).await;
    let mut client = raw(&server).await;
    let (messages, failure) = collect(
        &mut client,
        request(range(0..1, None), &ALL_SPLITS, Some(5)),
    )
    .await;
    assert!(failure.is_none(), "{failure:?}");
    assert_eq!(messages.len(), 2);
    let error = messages[0]
        .error
        .as_ref()
        .expect("8 top records cannot make 4 splits of 5");
    assert_eq!(error.code, Code::FailedPrecondition as i32);
    assert!(
        error.message.contains("layer 0 neuron 0"),
        "{}",
        error.message
    );
    assert!(messages[1].error.is_none());
    assert_eq!(
        messages[1]
            .splits
            .iter()
            .map(|s| s.records.len())
            .collect::<Vec<_>>(),
        [5, 10, 10, 10]
    );
    server.stop().await;
}

#[tokio::test]
async fn every_cursor_resumes_with_nothing_lost_or_repeated() {
    let (_dir, server) = conformance_server().await;
    let mut client = raw(&server).await;
    for selection in [
        range(0..2, None),
        range(0..3, Some(0..3)),
        list(&[(1, 1), (0, 0), (1, 1), (7, 7), (0, 1)]),
    ] {
        let full = request(selection, &[Split::Test], Some(1));
        let (messages, failure) = collect(&mut client, full.clone()).await;
        assert!(failure.is_none(), "{failure:?}");
        for (i, message) in messages.iter().enumerate() {
            let resumed = pb::StreamNeuronSplitsRequest {
                cursor: message.cursor.clone(),
                ..full.clone()
            };
            let (rest, failure) = collect(&mut client, resumed).await;
            assert!(failure.is_none(), "{failure:?}");
            assert_eq!(
                comparable(&rest),
                comparable(&messages[i + 1..]),
                "resumed after message {i}"
            );
        }
        // A cursor only fits the request that issued it.
        let other = pb::StreamNeuronSplitsRequest {
            cursor: messages[0].cursor.clone(),
            splits: vec![Split::Train as i32],
            ..full.clone()
        };
        let (_, failure) = collect(&mut client, other).await;
        let status = failure.expect("refused");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().contains("different request"),
            "{}",
            status.message()
        );
    }
    server.stop().await;
}

/// `SAVED` is the cursor the previous release's server gave, on its bundled sample, after
/// neuron 1/1 of the selection [1/1, 1/2] (valid split, n = 5).
#[tokio::test]
async fn a_cursor_saved_from_the_previous_release_resumes_the_same_stream() {
    const SAVED: &str = "YzEKYTAxY2E5OTE4NjgyZmZlYwowCjEKMQ";
    let datasets = activations_server::Datasets::open(&[], &Default::default())
        .await
        .unwrap();
    let server = start_server(datasets).await;
    let mut client = raw(&server).await;
    let full = request(list(&[(1, 1), (1, 2)]), &[Split::Valid], Some(5));
    let resumed = pb::StreamNeuronSplitsRequest {
        cursor: SAVED.to_string(),
        ..full.clone()
    };
    let (rest, failure) = collect(&mut client, resumed).await;
    assert!(failure.is_none(), "{failure:?}");
    let (all, _) = collect(&mut client, full.clone()).await;
    assert_eq!(rest.iter().map(id).collect::<Vec<_>>(), [(1, 2)]);
    assert_eq!(
        comparable(&rest),
        comparable(&all[all.len() - rest.len()..])
    );
    // Cursors written now are of the current version, and also resume.
    assert!(
        activations_client::Cursor::inspect(&all[0].cursor).is_ok(),
        "{}",
        all[0].cursor
    );
    assert_ne!(all[0].cursor, SAVED);
    // The saved cursor does not fit another stream.
    let other = pb::StreamNeuronSplitsRequest {
        cursor: SAVED.to_string(),
        ..request(list(&[(1, 1), (1, 2)]), &[Split::Valid], Some(4))
    };
    let (_, failure) = collect(&mut client, other).await;
    assert_eq!(failure.expect("refused").code(), Code::InvalidArgument);
    server.stop().await;
}

#[tokio::test]
// Reversed ranges are the point: the server must refuse them.
#[allow(clippy::reversed_empty_ranges)]
async fn bad_requests_are_invalid_argument_naming_the_field() {
    let (_dir, server) = conformance_server().await;
    let mut client = raw(&server).await;
    let good = request(range(0..2, None), &[Split::Train], None);
    let cases = [
        (
            "selection",
            pb::StreamNeuronSplitsRequest {
                selection: None,
                ..good.clone()
            },
        ),
        (
            "splits",
            pb::StreamNeuronSplitsRequest {
                splits: vec![],
                ..good.clone()
            },
        ),
        (
            "splits",
            pb::StreamNeuronSplitsRequest {
                splits: vec![1, 1],
                ..good.clone()
            },
        ),
        (
            "splits",
            pb::StreamNeuronSplitsRequest {
                splits: vec![0],
                ..good.clone()
            },
        ),
        (
            "selection.range",
            pb::StreamNeuronSplitsRequest {
                selection: Some(range(3..2, None)),
                ..good.clone()
            },
        ),
        (
            "selection.range",
            pb::StreamNeuronSplitsRequest {
                selection: Some(range(0..2, Some(5..1))),
                ..good.clone()
            },
        ),
        (
            "cursor",
            pb::StreamNeuronSplitsRequest {
                cursor: "not-a-cursor".into(),
                ..good.clone()
            },
        ),
    ];
    for (field, bad) in cases {
        let (messages, failure) = collect(&mut client, bad.clone()).await;
        assert!(messages.is_empty());
        let status = failure.unwrap_or_else(|| panic!("{bad:?} accepted"));
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}");
        assert!(
            status.message().contains(field),
            "{field}: {}",
            status.message()
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn large_neurons_are_split_over_messages_below_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    fixtures::write_neuron(dir.path(), false, 0, 0, fixtures::REAL_NEURON);
    fixtures::write_neuron(
        dir.path(),
        false,
        0,
        1,
        &fixtures::to_json(&fixtures::neuron(3, 0, 1, 200, 150)),
    );
    let datasets = open_datasets(&[("big", dir.path())], LayoutChoice::Auto).await;
    let limit = 16 * 1024;
    let server = start_server(
        ActivationsService::new(datasets).with_bulk_settings(BulkSettings {
            message_bytes: limit,
            ..BulkSettings::DEFAULT
        }),
    )
    .await;
    let mut client = raw(&server).await;
    let (messages, failure) =
        collect(&mut client, request(range(0..1, None), &ALL_SPLITS, None)).await;
    assert!(failure.is_none(), "{failure:?}");
    let grouped = neurons(&messages);
    assert_eq!(grouped.len(), 2);
    for parts in &grouped {
        assert!(parts.len() > 2, "{} parts", parts.len());
        for part in parts {
            // A part exceeds the limit by at most one record.
            let largest = part
                .splits
                .iter()
                .flat_map(|s| &s.records)
                .map(Message::encoded_len)
                .max()
                .unwrap_or(0);
            assert!(
                part.encoded_len() <= limit + largest + 64,
                "{} bytes",
                part.encoded_len()
            );
        }
        assert_eq!(
            reassembled(parts),
            per_neuron(&mut client, id(&parts[0]), &ALL_SPLITS, None).await
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_holds_the_server_to_its_read_ahead() {
    const COUNT: u32 = 300;
    let files: HashMap<String, Bytes> = (0..COUNT)
        .map(|n| {
            (
                format!("0/{n}.json"),
                Bytes::from_static(fixtures::REAL_NEURON),
            )
        })
        .collect();
    let web = FaultyHttpServer::start(files);
    let uri = format!("{}?layers=1&neurons={COUNT}&layout=flat", web.url());
    let server = serve_uris(&[("web", &uri)], StorageOptions::DEFAULT).await;
    // Small HTTP/2 windows, so what the transport holds is a message or two and the count
    // below measures the server's read-ahead (16, grown by half at most once per neuron the
    // client waited for: at most 16 x 1.5^3 = 54 after three neurons).
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(64 * 1024)
        .connect()
        .await
        .unwrap();
    let mut client = ActivationServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let mut stream = client
        .stream_neuron_splits(request(range(0..1, None), &ALL_SPLITS, None))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..3 {
        stream.next().await.unwrap().unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let read = (0..COUNT)
        .filter(|n| web.requests(&format!("0/{n}.json")) > 0)
        .count();
    // Read ahead plus what the small windows hold; far from all 300.
    assert!(
        read < 80,
        "{read} of {COUNT} neurons read while the client waited"
    );
    // Then the client reads on, and gets every neuron exactly once.
    let mut seen = 3;
    while let Some(message) = stream.next().await {
        assert!(message.unwrap().error.is_none());
        seen += 1;
    }
    assert_eq!(seen, COUNT);
    eprintln!("read while waiting: {read} neurons");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_storage_ends_the_stream_and_the_cursor_resumes_it() {
    let files: HashMap<String, Bytes> = (0..6)
        .map(|n| {
            (
                format!("0/{n}.json"),
                Bytes::from_static(fixtures::REAL_NEURON),
            )
        })
        .collect();
    let web = FaultyHttpServer::start(files);
    web.inject_always("0/3.json", activations_webstore::Fault::Status(503));
    let uri = format!("{}?layers=1&neurons=6&layout=flat", web.url());
    let storage = StorageOptions {
        request_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_secs(1),
        max_retries: 1,
        retry_budget: Duration::from_millis(200),
    };
    let server = serve_uris(&[("web", &uri)], storage).await;
    let mut client = raw(&server).await;
    let full = request(range(0..1, None), &[Split::Valid], Some(3));
    let (messages, failure) = collect(&mut client, full.clone()).await;
    assert_eq!(
        failure.expect("ends with an error").code(),
        Code::Unavailable
    );
    let ids: Vec<_> = messages.iter().map(id).collect();
    assert_eq!(
        ids,
        [(0, 0), (0, 1), (0, 2)],
        "everything before the failure, nothing after"
    );
    web.clear_faults("0/3.json");
    let resumed = pb::StreamNeuronSplitsRequest {
        cursor: messages.last().unwrap().cursor.clone(),
        ..full
    };
    let (rest, failure) = collect(&mut client, resumed).await;
    assert!(failure.is_none(), "{failure:?}");
    assert_eq!(
        rest.iter().map(id).collect::<Vec<_>>(),
        [(0, 3), (0, 4), (0, 5)]
    );
    server.stop().await;
}

#[tokio::test]
async fn the_cli_prints_each_neuron_s_splits_on_a_line_and_continues_from_a_cursor() {
    use activations_cli::{self as cli, Cli};
    use clap::Parser;

    let source = tempfile::tempdir().unwrap();
    conformance::write_dataset(source.path(), false);
    let server = activations_e2e::serve_dir("conformance", source.path()).await;
    let splits = |extra: &[&str]| {
        let mut argv = vec![
            "activations",
            "--server",
            &server.url(),
            "splits",
            "--layers",
            "0..2",
            "--split",
            "valid,test",
            "-n",
            "2",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        argv.extend(extra.iter().map(|arg| arg.to_string()));
        async move {
            let mut out = Vec::new();
            let result = cli::run(Cli::parse_from(argv), &mut out).await;
            let lines: Vec<serde_json::Value> = String::from_utf8(out)
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect();
            (result, lines)
        }
    };
    let (result, lines) = splits(&[]).await;
    // One line per neuron of the selection, the corrupt one with its error: exit code 1.
    assert!(result.is_err(), "the corrupt neuron fails the command");
    let (layers, neurons) = (conformance::LAYERS, conformance::NEURONS);
    assert_eq!(lines.len() as u32, layers * neurons);
    let client = activations_client::ActivationsClient::connect(server.url())
        .await
        .unwrap();
    for line in &lines {
        let id = (
            line["layer_index"].as_u64().unwrap() as u32,
            line["neuron_index"].as_u64().unwrap() as u32,
        );
        if id == conformance::CORRUPT {
            assert_eq!(line["error"]["code"], "DATA_LOSS", "{line}");
            continue;
        }
        for (name, split) in [("valid", Split::Valid), ("test", Split::Test)] {
            let expected = client
                .activation_records(neuron_id(id.0, id.1), split, Some(2))
                .await
                .unwrap();
            let printed = line["splits"][name].as_array().unwrap();
            let tokens: Vec<serde_json::Value> = printed
                .iter()
                .map(|record| record["tokens"].clone())
                .collect();
            let expected: Vec<serde_json::Value> = expected
                .iter()
                .map(|record| serde_json::json!(record.tokens))
                .collect();
            assert_eq!(tokens, expected, "{id:?} {name}");
        }
    }
    // The cursor of a line continues after its neuron.
    let cursor = lines[1]["cursor"].as_str().unwrap().to_string();
    let (_, rest) = splits(&["--from", &cursor]).await;
    assert_eq!(rest, lines[2..]);
    server.stop().await;
}
