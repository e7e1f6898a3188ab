//! Limits and deadlines: a call over the concurrency limit is refused at once with
//! RESOURCE_EXHAUSTED and a retry delay, oversized requests are RESOURCE_EXHAUSTED naming the
//! limit, pages are capped, a stream past its deadline ends with DEADLINE_EXCEEDED, and a call
//! that is cancelled or runs out of time abandons its storage read.

use activations_webstore::{Fault, FaultyHttpServer};
use std::{collections::HashMap, time::Duration};

use activations_client::{ActivationsClient, Code, RetryPolicy};
use activations_e2e::{
    TestServer,
    fixtures::{REAL_NEURON, write_neuron},
    install_tls_provider, start_server,
};
use activations_proto::pb::{self, activation_service_client::ActivationServiceClient};
use activations_server::{
    DatasetSpec, Datasets, ServeConfig, dataset::OpenOptions, limits::Limits,
    location::StorageOptions, server::ServerSettings,
};
use bytes::Bytes;
use futures::StreamExt;
use tonic::transport::Channel;

/// Neurons `0/0` .. `0/{NEURONS-1}`, each the real public file.
const NEURONS: u32 = 8;

async fn serve(dir: &std::path::Path, limits: Limits) -> TestServer {
    for neuron in 0..NEURONS {
        write_neuron(dir, false, 0, neuron, REAL_NEURON);
    }
    let specs = [DatasetSpec {
        name: "local".into(),
        uri: dir.to_str().unwrap().to_string(),
    }];
    let datasets = Datasets::open(&specs, &OpenOptions::default())
        .await
        .unwrap();
    start_server(ServeConfig {
        settings: ServerSettings {
            limits,
            ..ServerSettings::DEFAULT
        },
        ..ServeConfig::from(datasets)
    })
    .await
}

async fn raw(server: &TestServer) -> ActivationServiceClient<Channel> {
    ActivationServiceClient::connect(server.url())
        .await
        .unwrap()
        .max_decoding_message_size(64 << 20)
}

/// A bulk request for neuron 0/0, `times` times over: a long stream.
fn long_stream(times: usize) -> pb::StreamNeuronSplitsRequest {
    pb::StreamNeuronSplitsRequest {
        selection: Some(pb::NeuronSelection {
            selection: Some(pb::neuron_selection::Selection::Neurons(pb::NeuronIdList {
                neuron_ids: vec![
                    pb::NeuronId {
                        layer_index: 0,
                        neuron_index: 0,
                    };
                    times
                ],
            })),
        }),
        splits: vec![pb::Split::Valid.into()],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_over_the_concurrency_limit_is_refused_at_once_with_retry_info() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(
        dir.path(),
        Limits {
            max_concurrent_requests: 1,
            ..Limits::DEFAULT
        },
    )
    .await;
    let mut raw = raw(&server).await;
    // The stream holds the only slot while its body is open, read or not.
    let mut stream = raw
        .stream_neuron_splits(long_stream(500))
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());

    let client = server.client().await.with_retry(RetryPolicy::NONE);
    let started = std::time::Instant::now();
    let error = client
        .neuron_summary(pb::NeuronId::default())
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused at once, not queued"
    );
    assert_eq!(error.code(), Some(Code::ResourceExhausted), "{error}");
    let message = error.to_string();
    assert!(message.contains("limit of 1 concurrent calls"), "{message}");
    assert!(message.contains("--max-concurrent-requests"), "{message}");
    let status = error.status().unwrap();
    assert!(status.details().retry_info().unwrap().retry_delay.is_some());
    assert_eq!(status.details().error_info().unwrap().reason, "OVERLOADED");

    // Health checks are exempt.
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        serving.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );

    // The SDK waits out the retry delay; once the stream is dropped, the slot is free again.
    let retrying = server.client().await;
    let call = tokio::spawn(async move { retrying.neuron_summary(pb::NeuronId::default()).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(stream);
    let summary = call.await.unwrap().unwrap();
    assert!(summary.max_activation.is_some());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_are_resource_exhausted_and_pages_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(
        dir.path(),
        Limits {
            max_request_bytes: 1024,
            max_page_size: 3,
            ..Limits::DEFAULT
        },
    )
    .await;
    let mut raw = raw(&server).await;
    let error = raw
        .stream_neuron_splits(long_stream(1000))
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::ResourceExhausted, "{error:?}");
    assert!(
        error.message().contains("1024 bytes"),
        "{}",
        error.message()
    );
    assert!(
        error.message().contains("--max-request-bytes"),
        "{}",
        error.message()
    );
    // A request under the limit is served.
    let mut small = raw
        .stream_neuron_splits(long_stream(2))
        .await
        .unwrap()
        .into_inner();
    let mut count = 0;
    while small.message().await.unwrap().is_some() {
        count += 1;
    }
    assert_eq!(count, 2);

    // The SDK refuses to send more than its own limit (tonic reports it as a failed HTTP/2
    // stream rather than a clear status).
    let sdk = ActivationsClient::builder()
        .endpoint(server.url())
        .max_encoding_message_size(1024)
        .retry(RetryPolicy::NONE)
        .connect()
        .await
        .unwrap();
    let ids = vec![pb::NeuronId::default(); 1000];
    let mut items = sdk.neuron_splits(ids.into(), &[activations_client::Split::Valid], None);
    assert!(items.next().await.unwrap().is_err());

    // Pages above the maximum are lowered to it.
    let page = raw
        .list_neurons(pb::ListNeuronsRequest {
            layer_index: 0,
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.neuron_indices, [0, 1, 2]);
    assert!(!page.next_page_token.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_past_its_deadline_ends_with_deadline_exceeded() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), Limits::DEFAULT).await;
    let mut raw = raw(&server).await;
    let mut request = tonic::Request::new(long_stream(2000));
    request.set_timeout(Duration::from_millis(500));
    let mut stream = raw
        .stream_neuron_splits(request)
        .await
        .unwrap()
        .into_inner();
    let mut received = 0;
    let error = loop {
        match stream.message().await {
            Ok(Some(_)) => {
                received += 1;
                // A slow client: the stream cannot finish in time.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(None) => panic!("the stream finished in time ({received} messages)"),
            Err(status) => break status,
        }
    };
    assert!(received > 0 && received < 2000, "{received}");
    assert_eq!(error.code(), tonic::Code::DeadlineExceeded, "{error:?}");
    assert!(error.message().contains("500ms"), "{}", error.message());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_and_timed_out_calls_abandon_their_storage_reads() {
    install_tls_provider();
    let path = |neuron: u32| format!("0/{neuron}.json");
    let files: HashMap<String, Bytes> = (0..4)
        .map(|n| (path(n), Bytes::from_static(REAL_NEURON)))
        .collect();
    let web = FaultyHttpServer::start(files);
    for neuron in 0..4 {
        // 64 pieces, 150 ms apart: a read of ~10 s.
        web.inject_always(&path(neuron), Fault::Drip(Duration::from_millis(150)));
    }
    let uri = format!("{}?layers=1&neurons=4&layout=flat", web.url());
    let specs = [DatasetSpec {
        name: "slow".into(),
        uri,
    }];
    let options = OpenOptions {
        storage: StorageOptions {
            request_timeout: Duration::from_secs(60),
            ..StorageOptions::DEFAULT
        },
        ..OpenOptions::default()
    };
    let datasets = Datasets::open(&specs, &options).await.unwrap();
    let server = start_server(datasets).await;
    let client = server.client().await.with_retry(RetryPolicy::NONE);

    let abandoned = |neuron: u32| {
        let web = &web;
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while web.abandoned(&path(neuron)) == 0 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the read of neuron {neuron} went on after its call ended"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    // A unary call the client gives up on.
    let call = client.load_neuron(0, 0);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), call)
            .await
            .is_err()
    );
    abandoned(0).await;

    // A unary call past its deadline: DEADLINE_EXCEEDED, and the read stops.
    let error = client
        .clone()
        .with_timeout(Some(Duration::from_millis(500)))
        .load_neuron(0, 1)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(Code::DeadlineExceeded), "{error}");
    abandoned(1).await;

    // A bulk stream dropped while its first neurons are being read.
    let mut stream = client.neuron_splits(
        activations_client::Selection::Range {
            layers: 0..1,
            neurons: Some(2..4),
        },
        &[activations_client::Split::Valid],
        None,
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), stream.next())
            .await
            .is_err()
    );
    drop(stream);
    abandoned(2).await;
    abandoned(3).await;
    // Each was read once: nothing retried the abandoned reads behind the client's back.
    for neuron in 0..4 {
        assert_eq!(web.requests(&path(neuron)), 1, "neuron {neuron}");
    }
    server.stop().await;
}
