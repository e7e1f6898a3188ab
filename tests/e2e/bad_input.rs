//! Bad input against a running server: the mistakes a caller can make and the damage a store
//! can hold, and the status each gets. The README table "Bad input and what it gets" lists
//! these cases; this test checks that every row still holds: the code, and the phrases that
//! make each message actionable (which dataset, neuron, file, split, field, what was expected).

use activations_client::{neuron_id, pb};
use activations_e2e::{
    TestServer,
    fixtures::{self, REAL_NEURON},
    open_datasets, start_server,
};
use activations_format::layout::LayoutChoice;
use activations_server::{bulk::BulkSettings, service::ActivationsService};
use futures::StreamExt;
use pb::activation_service_client::ActivationServiceClient;
use tonic::{Code, Status, transport::Channel};

/// The dataset's name in every message.
const DATASET: &str = "bad";

/// Neurons of layer 0, each a file the store could hold.
const GOOD: u32 = 0;
const FEW_RECORDS: u32 = 1;
const HUGE: u32 = 2;

/// Corrupt neuron files and the phrases their `DATA_LOSS` message must hold besides the
/// dataset, neuron and file. Neuron indices from 10 on.
fn corrupt_files() -> Vec<(&'static str, Vec<u8>, Vec<String>)> {
    let text = String::from_utf8(REAL_NEURON.to_vec()).expect("UTF-8");
    let first_token = text.find(r#""tokens": [""#).expect("a token") + 11;
    let first_activations = text.find(r#""activations": ["#).expect("activations") + 16;
    let small = with_record(r#""tokens": ["a", "b"], "activations": [0.5, 1.5]"#);

    let mut invalid_utf8 = REAL_NEURON.to_vec();
    invalid_utf8[first_token + 1] = 0xFF;
    let mut nan_token = text.clone();
    nan_token.replace_range(first_token..first_token + 1, "NaN, \"");
    let mut text_activation = text.clone();
    text_activation.insert_str(first_activations, "\"0.5\", ");

    let cases: Vec<(&'static str, Vec<u8>, Vec<&str>)> = vec![
        (
            "truncated (first 5000 bytes of the public file)",
            REAL_NEURON[..5000].to_vec(),
            vec![
                "byte 4996",
                "random_sample[4].tokens[7]: unterminated string",
            ],
        ),
        (
            "not JSON (an HTML error page)",
            b"<html><body>502 Bad Gateway</body></html>".to_vec(),
            vec!["byte 0", "expected an object, found '<'"],
        ),
        (
            "empty file",
            Vec::new(),
            vec!["byte 0", "empty input: expected a neuron record object"],
        ),
        (
            "JSON null",
            b"null".to_vec(),
            vec!["expected an object, found null"],
        ),
        (
            "a JSON list instead of an object",
            b"[]".to_vec(),
            vec!["expected an object, found a list"],
        ),
        (
            "NaN in the tokens",
            nan_token.into_bytes(),
            vec!["random_sample[0].tokens[0]: expected a string, found NaN"],
        ),
        (
            "a string among the activations",
            text_activation.into_bytes(),
            vec!["random_sample[0].activations[0]: expected a number, found a string"],
        ),
        (
            "tokens and activations of different lengths",
            with_record(r#""tokens": ["a", "b"], "activations": [0.5]"#).into_bytes(),
            vec!["random_sample[0]: 2 tokens but 1 activations"],
        ),
        (
            "tokens is not a list",
            with_record(r#""tokens": "ab", "activations": [0.5, 1.5]"#).into_bytes(),
            vec!["random_sample[0].tokens: expected a list, found a string"],
        ),
        (
            "a required field missing",
            br#"{"dataclass_name": "NeuronRecord", "random_sample": []}"#.to_vec(),
            vec!["missing field neuron_id"],
        ),
        (
            "another dataclass",
            small
                .replacen(
                    r#""neuron_id": {"#,
                    r#""neuron_id": {"dataclass_name": "ActivationRecord", "#,
                    1,
                )
                .into_bytes(),
            vec![r#"neuron_id: expected dataclass_name "NeuronId", found "ActivationRecord""#],
        ),
        (
            "a negative neuron index",
            small
                .replacen(r#""neuron_index": 0"#, r#""neuron_index": -1"#, 1)
                .into_bytes(),
            vec!["neuron_id.neuron_index: expected a non-negative integer below 2^32, found -1"],
        ),
        (
            "values nested 10,000 deep in an unknown field",
            format!(
                r#"{{"neuron_id": {{"layer_index": 0, "neuron_index": 0}}, "extra": {}0{}}}"#,
                "[".repeat(10_000),
                "]".repeat(10_000)
            )
            .into_bytes(),
            vec!["extra", "values nested more than 128 levels deep"],
        ),
        (
            "two records one after the other",
            format!("{small}{small}").into_bytes(),
            vec!["unexpected data after the neuron record: an object"],
        ),
    ];
    let utf8_offset = format!("byte {}", first_token + 1);
    cases
        .into_iter()
        .chain([(
            "invalid UTF-8 inside a token",
            invalid_utf8,
            vec!["invalid UTF-8", utf8_offset.as_str()],
        )])
        .map(|(case, bytes, phrases)| {
            (case, bytes, phrases.into_iter().map(String::from).collect())
        })
        .collect()
}

/// A small valid record whose only random sample has these members.
fn with_record(members: &str) -> String {
    format!(
        r#"{{"dataclass_name": "NeuronRecord", "neuron_id": {{"layer_index": 0, "neuron_index": 0}}, "random_sample": [{{{members}}}]}}"#
    )
}

/// A valid record of about `mib` MiB encoded: too large for one 4 MiB gRPC message.
fn huge_record(mib: usize) -> pb::NeuronRecord {
    let token = "x".repeat(250);
    let record = pb::ActivationRecord {
        tokens: vec![token; 64],
        activations: vec![0.5; 64],
        ..Default::default()
    };
    let count = (mib << 20) / (64 * 252);
    pb::NeuronRecord {
        neuron_id: Some(neuron_id(0, HUGE)),
        most_positive_activation_records: vec![record; count],
        ..fixtures::neuron(1, 0, HUGE, 0, 0)
    }
}

/// A dataset holding a good neuron, a neuron with few records, a huge one and every corrupt file,
/// served with a small limit on listed neurons.
async fn serve_bad_dataset() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let write = |neuron, bytes: &[u8]| fixtures::write_neuron(dir.path(), false, 0, neuron, bytes);
    write(GOOD, REAL_NEURON);
    write(
        FEW_RECORDS,
        &fixtures::to_json(&fixtures::neuron(7, 0, FEW_RECORDS, 8, 2)),
    );
    write(HUGE, &fixtures::to_json(&huge_record(6)));
    for (i, (_, bytes, _)) in corrupt_files().iter().enumerate() {
        write(10 + i as u32, bytes);
    }
    let datasets = open_datasets(&[(DATASET, dir.path())], LayoutChoice::Auto).await;
    let service = ActivationsService::new(datasets).with_bulk_settings(BulkSettings {
        max_listed_neurons: 3,
        ..BulkSettings::DEFAULT
    });
    (start_server(service).await, dir)
}

async fn raw(server: &TestServer) -> ActivationServiceClient<Channel> {
    ActivationServiceClient::connect(server.url())
        .await
        .unwrap()
}

/// Asserts the code and that the message holds every phrase; prints the row for the README.
#[track_caller]
fn check<T: std::fmt::Debug>(case: &str, result: Result<T, Status>, code: Code, phrases: &[&str]) {
    let status = match result {
        Ok(value) => panic!("{case}: expected {code:?}, got {value:?}"),
        Err(status) => status,
    };
    println!("| {case} | `{:?}` | {} |", status.code(), status.message());
    assert_eq!(status.code(), code, "{case}: {}", status.message());
    for phrase in phrases {
        assert!(
            status.message().contains(phrase),
            "{case}: {phrase:?} missing from {:?}",
            status.message()
        );
    }
}

fn get(layer: u32, neuron: u32) -> pb::GetNeuronRecordRequest {
    pb::GetNeuronRecordRequest {
        dataset: DATASET.into(),
        neuron_id: Some(neuron_id(layer, neuron)),
    }
}

fn split_request(
    neuron: u32,
    split: pb::Split,
    n: Option<u32>,
) -> pb::StreamActivationRecordsRequest {
    pb::StreamActivationRecordsRequest {
        dataset: DATASET.into(),
        neuron_id: Some(neuron_id(0, neuron)),
        split: split.into(),
        slice_params: Some(pb::ActivationRecordSliceParams {
            n_examples_per_split: n,
        }),
    }
}

fn bulk(selection: Option<pb::neuron_selection::Selection>) -> pb::StreamNeuronSplitsRequest {
    pb::StreamNeuronSplitsRequest {
        dataset: DATASET.into(),
        selection: selection.map(|selection| pb::NeuronSelection {
            selection: Some(selection),
        }),
        splits: vec![pb::Split::Train.into()],
        slice_params: None,
        cursor: String::new(),
    }
}

fn listed(ids: &[(u32, u32)]) -> Option<pb::neuron_selection::Selection> {
    Some(pb::neuron_selection::Selection::Neurons(pb::NeuronIdList {
        neuron_ids: ids.iter().map(|&(l, n)| neuron_id(l, n)).collect(),
    }))
}

/// The first item of a bulk stream: an error status, or the first message.
async fn first_bulk_item(
    client: &mut ActivationServiceClient<Channel>,
    request: pb::StreamNeuronSplitsRequest,
) -> Result<pb::NeuronSplits, Status> {
    let mut stream = client.stream_neuron_splits(request).await?.into_inner();
    stream.next().await.expect("at least one item")
}

#[tokio::test]
async fn requests_a_caller_gets_wrong_are_refused_with_the_field_and_what_was_expected() {
    let (server, _dir) = serve_bad_dataset().await;
    let mut client = raw(&server).await;

    let unknown = pb::GetNeuronRecordRequest {
        dataset: "nope".into(),
        ..get(0, GOOD)
    };
    check(
        "unknown dataset",
        client.get_neuron_record(unknown).await,
        Code::NotFound,
        &[r#"unknown dataset "nope""#, "this server serves: bad"],
    );
    check(
        "neuron that does not exist",
        client.get_neuron_record(get(0, 9)).await,
        Code::NotFound,
        &[
            r#"dataset "bad""#,
            "layer 0 neuron 9",
            "0/9.json does not exist",
        ],
    );
    check(
        "layer out of range (GetNeuronRecord)",
        client.get_neuron_record(get(99, 0)).await,
        Code::NotFound,
        &["layer 99 neuron 0", "99/0.json does not exist"],
    );
    let list_neurons = |layer_index, page_size, page_token: &str| pb::ListNeuronsRequest {
        dataset: DATASET.into(),
        layer_index,
        page_size,
        page_token: page_token.into(),
    };
    check(
        "layer out of range (ListNeurons)",
        client.list_neurons(list_neurons(99, 0, "")).await,
        Code::NotFound,
        &[r#"dataset "bad""#, "layer 99", "99/ does not exist"],
    );
    check(
        "neuron_id missing",
        client
            .get_neuron_record(pb::GetNeuronRecordRequest {
                neuron_id: None,
                ..get(0, GOOD)
            })
            .await,
        Code::InvalidArgument,
        &["invalid neuron_id: is required"],
    );
    check(
        "split unspecified",
        client
            .stream_activation_records(split_request(GOOD, pb::Split::Unspecified, None))
            .await,
        Code::InvalidArgument,
        &["invalid split: is required", "SPLIT_TRAIN", "SPLIT_TEST"],
    );
    let mut unknown_split = split_request(GOOD, pb::Split::Train, None);
    unknown_split.split = 9;
    check(
        "split not in the enum (9)",
        client.stream_activation_records(unknown_split).await,
        Code::InvalidArgument,
        &["invalid split: 9 is not a Split value (1 to 4)"],
    );
    check(
        "n_examples_per_split too large for the records",
        client
            .stream_activation_records(split_request(FEW_RECORDS, pb::Split::Valid, Some(2)))
            .await,
        Code::FailedPrecondition,
        &[
            r#"dataset "bad""#,
            "layer 0 neuron 1",
            "the valid split with n_examples_per_split=2",
            "needs 6 random records (2 x 3)",
            "random_sample holds 2",
        ],
    );
    check(
        "n_examples_per_split too large for the public file",
        client
            .stream_activation_records(split_request(GOOD, pb::Split::Train, Some(13)))
            .await,
        Code::FailedPrecondition,
        &[
            "layer 0 neuron 0",
            "the train split with n_examples_per_split=13",
            "needs 52 top-activating records (13 x 4)",
            "most_positive_activation_records holds 50",
        ],
    );
    check(
        "malformed page token",
        client.list_neurons(list_neurons(0, 0, "garbage!")).await,
        Code::InvalidArgument,
        &["invalid page_token: is not a page token issued by this service"],
    );
    let page = client
        .list_neurons(list_neurons(0, 1, ""))
        .await
        .unwrap()
        .into_inner();
    check(
        "page token of another layer",
        client
            .list_neurons(list_neurons(1, 1, &page.next_page_token))
            .await,
        Code::InvalidArgument,
        &[
            "invalid page_token",
            r#"was issued for dataset "bad" layer 0, not dataset "bad" layer 1"#,
        ],
    );
    check(
        "negative page size",
        client.list_neurons(list_neurons(0, -5, "")).await,
        Code::InvalidArgument,
        &["invalid page_size: must not be negative, got -5"],
    );

    // StreamNeuronSplits: refused before the first message.
    let mut bad_cursor = bulk(listed(&[(0, GOOD)]));
    bad_cursor.cursor = "not-a-cursor".into();
    check(
        "malformed bulk cursor",
        first_bulk_item(&mut client, bad_cursor).await,
        Code::InvalidArgument,
        &["invalid cursor: is not a cursor issued by StreamNeuronSplits"],
    );
    let issued = first_bulk_item(&mut client, bulk(listed(&[(0, GOOD)])))
        .await
        .unwrap()
        .cursor;
    let mut other_request = bulk(listed(&[(0, GOOD), (0, FEW_RECORDS)]));
    other_request.cursor = issued;
    check(
        "bulk cursor of another request",
        first_bulk_item(&mut client, other_request).await,
        Code::InvalidArgument,
        &[
            "invalid cursor: belongs to a different request",
            "same dataset, selection, splits and slice_params",
        ],
    );
    check(
        "no selection",
        first_bulk_item(&mut client, bulk(None)).await,
        Code::InvalidArgument,
        &["invalid selection: is required: a list of neuron_ids or a range"],
    );
    check(
        "too many listed neurons (limit 3 here)",
        first_bulk_item(&mut client, bulk(listed(&[(0, 0), (0, 1), (0, 2), (0, 3)]))).await,
        Code::InvalidArgument,
        &[
            "invalid selection.neurons: names 4 neurons; at most 3 per request",
            "use a range",
        ],
    );
    let reversed = pb::NeuronRange {
        layer_start: 5,
        layer_end: 2,
        ..Default::default()
    };
    check(
        "range with layer_start after layer_end",
        first_bulk_item(
            &mut client,
            bulk(Some(pb::neuron_selection::Selection::Range(reversed))),
        )
        .await,
        Code::InvalidArgument,
        &["invalid selection.range: layer_start 5 is after layer_end 2"],
    );
    let mut no_splits = bulk(listed(&[(0, GOOD)]));
    no_splits.splits.clear();
    check(
        "no splits",
        first_bulk_item(&mut client, no_splits).await,
        Code::InvalidArgument,
        &["invalid splits: name at least one of SPLIT_TRAIN"],
    );
    let mut twice = bulk(listed(&[(0, GOOD)]));
    twice.splits = vec![pb::Split::Valid.into(), pb::Split::Valid.into()];
    check(
        "a split named twice",
        first_bulk_item(&mut client, twice).await,
        Code::InvalidArgument,
        &["invalid splits: valid is named twice"],
    );

    // An empty list or range is not an error: it selects nothing, and the stream is empty.
    for empty in [
        listed(&[]),
        Some(pb::neuron_selection::Selection::Range(pb::NeuronRange {
            layer_start: 3,
            layer_end: 3,
            ..Default::default()
        })),
    ] {
        let stream = client.stream_neuron_splits(bulk(empty)).await.unwrap();
        let items: Vec<_> = stream.into_inner().collect().await;
        assert!(items.is_empty(), "{items:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn corrupt_files_are_data_loss_naming_the_file_the_position_and_the_value() {
    let (server, _dir) = serve_bad_dataset().await;
    let mut client = raw(&server).await;
    for (i, (case, _, phrases)) in corrupt_files().into_iter().enumerate() {
        let neuron = 10 + i as u32;
        let neuron_name = format!("layer 0 neuron {neuron}");
        let file = format!("0/{neuron}.json is not a valid neuron file");
        let mut all = vec![r#"dataset "bad""#, neuron_name.as_str(), file.as_str()];
        all.extend(phrases.iter().map(String::as_str));
        check(
            case,
            client.get_neuron_record(get(0, neuron)).await,
            Code::DataLoss,
            &all,
        );
        // The same file read in bulk is that neuron's error; the stream goes on.
        let item = first_bulk_item(&mut client, bulk(listed(&[(0, neuron)])))
            .await
            .unwrap();
        let error = item.error.expect("a per-neuron error");
        assert_eq!(
            error.code,
            Code::DataLoss as i32,
            "{case}: {}",
            error.message
        );
        assert!(error.message.contains(&file), "{case}: {}", error.message);
    }
    server.stop().await;
}

#[tokio::test]
async fn a_neuron_too_large_for_one_message_is_refused_by_the_client_but_streams_in_splits() {
    let (server, _dir) = serve_bad_dataset().await;
    let mut client = raw(&server).await;
    // The server sends it whole; the client's default 4 MiB limit refuses it.
    check(
        "neuron file larger than a 4 MiB message (GetNeuronRecord)",
        client.get_neuron_record(get(0, HUGE)).await,
        Code::OutOfRange,
        &["decoded message length too large", "4194304"],
    );
    // Records stream one per message, so its splits and the bulk stream still read it.
    let records: Vec<_> = client
        .stream_activation_records(split_request(HUGE, pb::Split::Train, None))
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    assert!(records.len() > 50 && records.iter().all(Result::is_ok));
    let mut stream = client
        .stream_neuron_splits(bulk(listed(&[(0, HUGE)])))
        .await
        .unwrap()
        .into_inner();
    let mut parts = 0;
    while let Some(item) = stream.next().await {
        let item = item.unwrap();
        assert!(item.error.is_none());
        parts += 1;
    }
    assert!(parts > 1, "sent in several messages");
    server.stop().await;
}
