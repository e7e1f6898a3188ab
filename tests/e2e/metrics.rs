//! Metrics end to end: calls to a real server, then `GET /metrics` over HTTP, read as
//! Prometheus reads it. Calls count by method and code when their responses end (streams
//! included, and a stream the client gives up on as CANCELLED), with their latency, records,
//! the cache's figures and the storage reads and HTTP requests under them.

use activations_webstore::{Fault, FaultyHttpServer};
use std::{collections::HashMap, time::Duration};

use activations_client::{Code, Split, neuron_id, pb};
use activations_e2e::{
    fixtures::REAL_NEURON,
    scrape::{Scrape, serve_observed},
};
use activations_server::location::StorageOptions;
use bytes::Bytes;
use pb::activation_service_client::ActivationServiceClient;

const SERVICE: &str = "neuron_explainer.activations.v1.ActivationService";
const BUNDLED: &str = "gpt2-xl-sample";

fn calls(scrape: &Scrape, rpc: &str, code: &str) -> f64 {
    scrape.value(
        "activations_rpc_requests_total",
        &[("service", SERVICE), ("rpc", rpc), ("code", code)],
    )
}

#[tokio::test]
async fn calls_count_by_method_and_code_when_their_responses_end() {
    let (server, metrics) = serve_observed(&[], StorageOptions::DEFAULT).await;
    let client = server.client().await;

    client
        .load_neuron(1, 1)
        .await
        .expect("GetNeuronRecord of 1/1");
    let missing = client.load_neuron(1, 2).await.unwrap_err();
    assert_eq!(missing.code(), Some(Code::NotFound));
    let records = client
        .activation_records(neuron_id(1, 1), Split::Valid, Some(5))
        .await
        .expect("a split stream");
    assert_eq!(records.len(), 10);

    // A stream far longer than the client reads: it takes one message and goes away.
    let mut raw = ActivationServiceClient::connect(server.url())
        .await
        .unwrap();
    let request = pb::StreamNeuronSplitsRequest {
        selection: Some(pb::NeuronSelection {
            selection: Some(pb::neuron_selection::Selection::Neurons(pb::NeuronIdList {
                neuron_ids: vec![neuron_id(1, 1); 50_000],
            })),
        }),
        splits: vec![pb::Split::Train as i32],
        ..Default::default()
    };
    let mut stream = raw
        .stream_neuron_splits(request)
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().expect("a first neuron");
    assert_eq!(first.splits[0].records.len(), 12);
    drop(stream);
    drop(raw);

    // The server learns of the cancel from the connection, a moment later.
    let mut scrape = metrics.scrape().await;
    for _ in 0..100 {
        if calls(&scrape, "StreamNeuronSplits", "CANCELLED") > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        scrape = metrics.scrape().await;
    }
    let text = &scrape.text;

    assert_eq!(calls(&scrape, "GetNeuronRecord", "OK"), 1.0, "{text}");
    assert_eq!(
        calls(&scrape, "GetNeuronRecord", "NOT_FOUND"),
        1.0,
        "{text}"
    );
    assert_eq!(
        calls(&scrape, "StreamActivationRecords", "OK"),
        1.0,
        "{text}"
    );
    assert_eq!(
        calls(&scrape, "StreamNeuronSplits", "CANCELLED"),
        1.0,
        "{text}"
    );
    assert_eq!(calls(&scrape, "StreamNeuronSplits", "OK"), 0.0, "{text}");
    let latency = |rpc: &str| {
        scrape.value(
            "activations_rpc_duration_seconds_count",
            &[("service", SERVICE), ("rpc", rpc)],
        )
    };
    assert_eq!(latency("GetNeuronRecord"), 2.0, "{text}");
    assert_eq!(latency("StreamActivationRecords"), 1.0, "{text}");
    assert_eq!(latency("StreamNeuronSplits"), 1.0, "{text}");
    // Every call took more than nothing and less than the top bucket.
    let within = scrape.value(
        "activations_rpc_duration_seconds_bucket",
        &[("rpc", "GetNeuronRecord"), ("le", "30.0")],
    );
    assert_eq!(within, 2.0, "{text}");
    assert_eq!(
        scrape.value("activations_rpc_in_flight", &[]),
        0.0,
        "{text}"
    );
    assert!(
        scrape.value(
            "activations_rpc_response_bytes_total",
            &[("rpc", "GetNeuronRecord")]
        ) > 100_000.0,
        "the whole record was sent: {text}"
    );

    let streamed = |rpc: &str| {
        scrape.value(
            "activations_records_streamed_total",
            &[("service", SERVICE), ("rpc", rpc)],
        )
    };
    assert_eq!(streamed("StreamActivationRecords"), 10.0, "{text}");
    let bulk = streamed("StreamNeuronSplits");
    assert!(bulk >= 12.0, "{text}");
    assert!(
        bulk < 50_000.0 * 12.0,
        "a cancelled stream stops producing: {text}"
    );

    // 1/1 and 1/2 were read from storage once each; every other read of 1/1 was a hit.
    let dataset = [("dataset", BUNDLED)];
    assert_eq!(
        scrape.value("activations_cache_misses_total", &dataset),
        2.0,
        "{text}"
    );
    assert!(
        scrape.value("activations_cache_hits_total", &dataset) >= 2.0,
        "{text}"
    );
    assert_eq!(
        scrape.value("activations_cache_entries", &dataset),
        2.0,
        "{text}"
    );
    assert!(
        scrape.value("activations_cache_weighted_bytes", &dataset) > 100_000.0,
        "{text}"
    );
    assert_eq!(
        scrape.value("activations_cache_capacity_bytes", &dataset),
        (1u64 << 30) as f64,
        "{text}"
    );
    let read = [("dataset", BUNDLED), ("operation", "read")];
    assert_eq!(
        scrape.value("activations_storage_reads_total", &read),
        2.0,
        "{text}"
    );
    assert_eq!(
        scrape.value(
            "activations_storage_read_errors_total",
            &[
                ("dataset", BUNDLED),
                ("operation", "read"),
                ("kind", "not_found")
            ]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        scrape.value("activations_storage_read_duration_seconds_count", &read),
        2.0,
        "{text}"
    );
    // The bundled sample is in memory: no HTTP.
    assert_eq!(
        scrape.value("activations_storage_http_requests_total", &[]),
        0.0,
        "{text}"
    );

    let other = reqwest::get(format!("{}/other", metrics.url()))
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    server.stop().await;
}

#[tokio::test]
async fn storage_http_requests_show_the_retries_of_a_read() {
    let files = HashMap::from([("0/0.json".to_string(), Bytes::from_static(REAL_NEURON))]);
    let web = FaultyHttpServer::start(files);
    web.inject("0/0.json", vec![Fault::Status(503)]);
    let uri = format!("{}?layers=1&neurons=1&layout=flat", web.url());
    let storage = StorageOptions {
        max_retries: 3,
        ..StorageOptions::DEFAULT
    };
    let (server, metrics) = serve_observed(&[("web", &uri)], storage).await;
    let client = server.client().await;

    client
        .load_neuron(0, 0)
        .await
        .expect("served after a retry");

    let scrape = metrics.scrape().await;
    let text = &scrape.text;
    let web_reads = [("dataset", "web"), ("operation", "read")];
    assert_eq!(
        scrape.value("activations_storage_reads_total", &web_reads),
        1.0,
        "{text}"
    );
    assert_eq!(
        scrape.value(
            "activations_storage_read_errors_total",
            &[("dataset", "web")]
        ),
        0.0,
        "{text}"
    );
    let http = |status: &str| {
        scrape.value(
            "activations_storage_http_requests_total",
            &[("dataset", "web"), ("status", status)],
        )
    };
    assert_eq!(http("5xx"), 1.0, "{text}");
    assert_eq!(http("2xx"), 1.0, "{text}");
    let requests = scrape.value("activations_storage_http_requests_total", &[]);
    let reads = scrape.value("activations_storage_reads_total", &[]);
    assert_eq!(requests - reads, 1.0, "one retry: {text}");
    server.stop().await;
}
