//! The service end to end: a real server on 127.0.0.1:0, called through the Rust SDK (and the
//! generated client where the SDK would not send a bad request).

use activations_client::{ActivationsClient, Split, neuron_id, pb};
use activations_e2e::{
    fixtures::{self, REAL_NEURON},
    open_datasets, serve_bundled, serve_dir, start_server,
};
use activations_format::layout::LayoutChoice;
use futures::TryStreamExt;
use pb::activation_service_client::ActivationServiceClient;
use tonic::{Code, codec::CompressionEncoding};

fn code(error: &activations_client::Error) -> Code {
    error
        .code()
        .unwrap_or_else(|| panic!("expected a status, got {error}"))
}

/// Python's `top[i : 4n : 4]` and `random[i-1 : 3n : 3]`, written out on the full record.
fn expected_split(record: &pb::NeuronRecord, split: Split, n: usize) -> Vec<pb::ActivationRecord> {
    let top = &record.most_positive_activation_records;
    let random = &record.random_sample;
    let position = split as usize - 1;
    let mut out: Vec<_> = top
        .iter()
        .skip(position)
        .step_by(4)
        .take(n)
        .cloned()
        .collect();
    if split != Split::Train {
        out.extend(random.iter().skip(position - 1).step_by(3).take(n).cloned());
    }
    out
}

#[tokio::test]
async fn bundled_sample_is_the_default_dataset() {
    let server = serve_bundled().await;
    let client = server.client().await;
    let datasets = client.datasets().await.unwrap();
    assert_eq!(datasets.len(), 1);
    assert_eq!(datasets[0].name, "gpt2-xl-sample");
    assert!(datasets[0].is_default);
    assert_eq!(datasets[0].layout(), pb::Layout::Flat);
    assert_eq!(client.sorted_layers().await.unwrap(), vec![1]);
    let neurons: Vec<u32> = client.sorted_neuron_indices(1).try_collect().await.unwrap();
    assert_eq!(neurons, vec![1]);
    assert!(client.neuron_exists(neuron_id(1, 1)).await.unwrap());
    assert!(!client.neuron_exists(neuron_id(1, 2)).await.unwrap());
    server.stop().await;
}

#[tokio::test]
async fn splits_of_the_real_file_follow_the_python_slices() {
    let server = serve_bundled().await;
    let client = server.client().await;
    let record = client.load_neuron(1, 1).await.unwrap();
    assert_eq!(record.most_positive_activation_records.len(), 50);
    for (split, n, expected_len) in [
        (Split::Train, Some(5), 5),
        (Split::Calibration, Some(5), 10),
        (Split::Valid, Some(5), 10),
        (Split::Test, Some(5), 10),
        (Split::Train, None, 12),
        (Split::Valid, None, 12 + 16),
        (Split::Test, Some(0), 0),
    ] {
        let records = client
            .activation_records(neuron_id(1, 1), split, n)
            .await
            .unwrap();
        assert_eq!(records.len(), expected_len, "{split:?} n={n:?}");
        let n_top = n.map_or(50 / 4, |n| n as usize);
        let mut expected = expected_split(&record, split, n_top);
        if n.is_none() && split != Split::Train {
            // None derives n per source: 12 top records, 16 random ones.
            expected.truncate(12);
            let position = split as usize - 2;
            expected.extend(
                record
                    .random_sample
                    .iter()
                    .skip(position)
                    .step_by(3)
                    .take(16)
                    .cloned(),
            );
        }
        assert_eq!(records, expected, "{split:?} n={n:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn streamed_records_say_where_they_come_from() {
    let server = serve_bundled().await;
    let client = server.client().await;
    let items: Vec<_> = client
        .stream_activation_records(neuron_id(1, 1), Split::Calibration, Some(3))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let origins: Vec<_> = items.iter().map(|i| (i.source(), i.source_index)).collect();
    use pb::RecordSource::{Random, TopActivating};
    assert_eq!(
        origins,
        [
            (TopActivating, 1),
            (TopActivating, 5),
            (TopActivating, 9),
            (Random, 0),
            (Random, 3),
            (Random, 6)
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn summary_reports_moments_counts_and_max_activation() {
    let server = serve_bundled().await;
    let client = server.client().await;
    let record = client.load_neuron(1, 1).await.unwrap();
    let summary = client.neuron_summary(neuron_id(1, 1)).await.unwrap();
    let max = record
        .most_positive_activation_records
        .iter()
        .flat_map(|r| r.activations.iter().copied())
        .fold(f32::NEG_INFINITY, f32::max);
    assert_eq!(summary.max_activation, Some(max));
    assert_eq!(summary.mean, record.mean);
    assert_eq!(summary.quantile_boundaries, record.quantile_boundaries);
    assert_eq!(summary.random_sample_by_quantile_counts, vec![20; 5]);
    assert_eq!(summary.token_count, 12_777);
    server.stop().await;
}

#[tokio::test]
async fn both_layouts_are_detected_and_served() {
    for neurons_layout in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        for (layer, neuron) in [(0, 3), (0, 10), (2, 0), (10, 1)] {
            let record = fixtures::neuron(u64::from(layer * 100 + neuron), layer, neuron, 8, 6);
            fixtures::write_neuron(
                dir.path(),
                neurons_layout,
                layer,
                neuron,
                &fixtures::to_json(&record),
            );
        }
        let server = serve_dir("synthetic", dir.path()).await;
        let client = server.client().await;
        let expected_layout = if neurons_layout {
            pb::Layout::Neurons
        } else {
            pb::Layout::Flat
        };
        assert_eq!(
            client.datasets().await.unwrap()[0].layout(),
            expected_layout
        );
        assert_eq!(client.sorted_layers().await.unwrap(), vec![0, 2, 10]);
        let layer0: Vec<u32> = client.sorted_neuron_indices(0).try_collect().await.unwrap();
        assert_eq!(layer0, vec![3, 10]);
        let record = client.load_neuron(10, 1).await.unwrap();
        assert_eq!(record.neuron_id, Some(neuron_id(10, 1)));
        assert_eq!(record.most_positive_activation_records.len(), 8);
        assert!(client.neuron_exists(neuron_id(2, 0)).await.unwrap());
        server.stop().await;
    }
}

#[tokio::test]
async fn neuron_listing_pages_through_every_index_in_numeric_order() {
    let dir = tempfile::tempdir().unwrap();
    let indices: Vec<u32> = (0..25).map(|i| i * 7 % 101).collect();
    for &neuron in &indices {
        fixtures::write_neuron(dir.path(), false, 4, neuron, REAL_NEURON);
    }
    std::fs::write(dir.path().join("4/notes.txt"), "not a neuron").unwrap();
    let server = serve_dir("paged", dir.path()).await;
    let client = server.client().await;
    let mut sorted = indices.clone();
    sorted.sort_unstable();

    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = client.list_neurons(4, 7, token).await.unwrap();
        assert!(page.neuron_indices.len() <= 7);
        pages.push(page.neuron_indices);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages.len(), 4, "25 indices in pages of 7");
    assert_eq!(pages.concat(), sorted);
    let streamed: Vec<u32> = client.sorted_neuron_indices(4).try_collect().await.unwrap();
    assert_eq!(streamed, sorted);
    server.stop().await;
}

#[tokio::test]
async fn bad_requests_get_actionable_statuses() {
    let dir = tempfile::tempdir().unwrap();
    fixtures::write_neuron(dir.path(), false, 0, 0, REAL_NEURON);
    fixtures::write_neuron(dir.path(), false, 0, 1, &REAL_NEURON[..5000]);
    let small = fixtures::neuron(7, 0, 2, 8, 2);
    fixtures::write_neuron(dir.path(), false, 0, 2, &fixtures::to_json(&small));
    let server = serve_dir("errors", dir.path()).await;
    let client = server.client().await;

    let err = client
        .clone()
        .with_dataset("nope")
        .sorted_layers()
        .await
        .unwrap_err();
    assert_eq!(code(&err), Code::NotFound);
    assert!(
        err.to_string().contains("errors"),
        "names the known datasets: {err}"
    );

    let err = client.load_neuron(0, 9).await.unwrap_err();
    assert_eq!(code(&err), Code::NotFound);
    let status = err.status().unwrap();
    assert_eq!(status.reason(), Some("NEURON_NOT_FOUND"));
    assert_eq!(
        status.details().resource_info().unwrap().resource_name,
        "errors/0/9"
    );

    let err = client.load_neuron(0, 1).await.unwrap_err();
    assert_eq!(code(&err), Code::DataLoss);
    assert!(
        err.to_string().contains("0/1.json"),
        "names the file: {err}"
    );
    let offset = err
        .status()
        .unwrap()
        .details()
        .error_info()
        .unwrap()
        .metadata["offset"]
        .parse::<usize>()
        .unwrap();
    assert!(
        offset <= 5000 && err.to_string().contains(&format!("byte {offset}")),
        "names the position: {err}"
    );

    let err = client
        .valid_activation_records(neuron_id(0, 2), Some(2))
        .await
        .unwrap_err();
    assert_eq!(code(&err), Code::FailedPrecondition);
    for fact in [
        "layer 0 neuron 2",
        "valid",
        "n_examples_per_split=2",
        "needs 6",
        "holds 2",
    ] {
        assert!(
            err.to_string().contains(fact),
            "{fact:?} missing from {err}"
        );
    }
    // Train never reads the random sample, as in Python.
    assert_eq!(
        client
            .train_activation_records(neuron_id(0, 2), Some(1))
            .await
            .unwrap()
            .len(),
        1
    );

    let err = client
        .activation_records(neuron_id(0, 0), Split::Unspecified, None)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Code::InvalidArgument);
    assert_eq!(
        err.status()
            .unwrap()
            .details()
            .bad_request()
            .unwrap()
            .field_violations[0]
            .field,
        "split"
    );

    let err = client.list_neurons(0, 10, "garbage").await.unwrap_err();
    assert_eq!(code(&err), Code::InvalidArgument);
    let err = client.list_neurons(5, 10, "").await.unwrap_err();
    assert_eq!(code(&err), Code::NotFound, "a layer without files: {err}");

    let mut raw = ActivationServiceClient::connect(server.url())
        .await
        .unwrap();
    let status = raw
        .list_neurons(pb::ListNeuronsRequest {
            layer_index: 0,
            page_size: -1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("page_size"),
        "{}",
        status.message()
    );
    let status = raw
        .get_neuron_record(pb::GetNeuronRecordRequest {
            dataset: String::new(),
            neuron_id: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("neuron_id"),
        "{}",
        status.message()
    );
    server.stop().await;
}

#[tokio::test]
async fn a_response_is_compressed_as_its_request_was_and_carries_the_same_records() {
    let server = serve_bundled().await;
    let request = || pb::GetNeuronRecordRequest {
        dataset: String::new(),
        neuron_id: Some(neuron_id(1, 1)),
    };
    let mut plain = ActivationServiceClient::connect(server.url())
        .await
        .unwrap();
    let expected = plain
        .get_neuron_record(request())
        .await
        .unwrap()
        .into_inner();
    for encoding in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
        let mut client = ActivationServiceClient::connect(server.url())
            .await
            .unwrap()
            .send_compressed(encoding)
            .accept_compressed(encoding);
        let response = client.get_neuron_record(request()).await.unwrap();
        let header = response
            .metadata()
            .get("grpc-encoding")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(
            header.as_deref(),
            Some(encoding.to_string().as_str()),
            "response compressed"
        );
        assert_eq!(response.into_inner(), expected);
    }
    // A client that accepts compression without compressing its request, as every grpcio
    // client does, gets the message as it is.
    let mut accepting = ActivationServiceClient::connect(server.url())
        .await
        .unwrap()
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd);
    let response = accepting.get_neuron_record(request()).await.unwrap();
    assert_eq!(response.metadata().get("grpc-encoding"), None);
    assert_eq!(response.into_inner(), expected);
    server.stop().await;
}

#[tokio::test]
async fn several_datasets_are_addressed_by_name() {
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    fixtures::write_neuron(first.path(), false, 3, 0, REAL_NEURON);
    fixtures::write_neuron(second.path(), true, 8, 0, REAL_NEURON);
    let datasets = open_datasets(
        &[("first", first.path()), ("second", second.path())],
        LayoutChoice::Auto,
    )
    .await;
    let server = start_server(datasets).await;
    let client = server.client().await;
    assert_eq!(
        client.sorted_layers().await.unwrap(),
        vec![3],
        "first is the default"
    );
    let second_client = client.clone().with_dataset("second");
    assert_eq!(second_client.sorted_layers().await.unwrap(), vec![8]);
    let infos = client.datasets().await.unwrap();
    let names: Vec<_> = infos
        .iter()
        .map(|d| (d.name.as_str(), d.is_default))
        .collect();
    assert_eq!(names, [("first", true), ("second", false)]);
    server.stop().await;
}

#[tokio::test]
async fn health_reports_serving_for_the_server_and_the_service() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let server = serve_bundled().await;
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", activations_proto::SERVICE_NAME] {
        let response = health
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.status(), ServingStatus::Serving, "{service:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn cli_commands_print_what_the_sdk_returns() {
    use activations_cli::{self as cli, Cli};
    use clap::Parser;
    let server = serve_bundled().await;
    let url = server.url();
    let run = |args: &[&str]| {
        let mut argv = vec!["activations", "--server", url.as_str()];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).unwrap();
        async move {
            let mut out = Vec::new();
            cli::run(cli, &mut out)
                .await
                .map(|()| String::from_utf8(out).unwrap())
        }
    };
    assert_eq!(run(&["layers"]).await.unwrap(), "1\n");
    assert_eq!(run(&["neurons", "1"]).await.unwrap(), "1\n");
    assert_eq!(run(&["exists", "1", "1"]).await.unwrap(), "true\n");
    assert_eq!(run(&["exists", "1", "7"]).await.unwrap(), "false\n");
    assert!(run(&["datasets"]).await.unwrap().contains("gpt2-xl-sample"));
    let jsonl = run(&["get", "1", "1", "--split", "valid", "-n", "5", "--json"])
        .await
        .unwrap();
    let lines: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let client = ActivationsClient::connect(server.url()).await.unwrap();
    let expected = client
        .valid_activation_records(neuron_id(1, 1), Some(5))
        .await
        .unwrap();
    assert_eq!(lines.len(), expected.len());
    for (line, record) in lines.iter().zip(&expected) {
        let tokens: Vec<&str> = line["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(tokens, record.tokens);
    }
    let summary = run(&["summary", "1", "1"]).await.unwrap();
    assert!(
        summary.contains("12777") || summary.contains("12,777"),
        "{summary}"
    );
    let err = run(&["get", "1", "2"]).await.unwrap_err();
    assert!(
        err.to_string().contains("NOT_FOUND") && err.to_string().contains("1/2.json"),
        "{err}"
    );
    server.stop().await;
}
