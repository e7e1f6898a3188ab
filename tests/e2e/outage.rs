//! A store that is down when the server starts: the real `activations-server` binary starts
//! anyway, serves its other datasets, reports the broken one in health (`dataset/NAME`) and
//! `ListDatasets`, answers its calls `UNAVAILABLE` with `RetryInfo` and the cause, and opens it
//! once the store answers. Only a configuration error stops the startup.

use std::{collections::HashMap, process::Command, time::Duration};

use activations_client::{ActivationsClient, Code, ErrorReason, RetryPolicy};
use activations_e2e::{
    fixtures::REAL_NEURON, process::ServerProcess, scrape::Scrape, tools::server_binary,
};
use activations_format::{layout::Layout, shape::Shape};
use activations_webstore::{Fault, FaultyHttpServer};
use bytes::Bytes;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

async fn health(url: &str, service: &str) -> ServingStatus {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .unwrap_or_else(|status| panic!("health of {service:?}: {status:?}"));
    response.into_inner().status()
}

fn web_dataset() -> FaultyHttpServer {
    let mut files: HashMap<String, Bytes> = (0..4)
        .map(|n| (format!("0/{n}.json"), Bytes::from_static(REAL_NEURON)))
        .collect();
    let manifest = Shape::uniform(1, 4)
        .unwrap()
        .to_manifest(Some(Layout::Flat));
    files.insert("manifest.json".to_string(), Bytes::from(manifest));
    FaultyHttpServer::start(files)
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dataset_whose_store_is_down_at_startup_is_served_once_it_answers() {
    let web = web_dataset();
    web.inject_always("manifest.json", Fault::Status(503));
    let refused = format!("http://127.0.0.1:{}/data", closed_port());
    let server = ServerProcess::start(&[
        "--dataset".into(),
        "sample=bundled:gpt2-xl-sample".into(),
        "--dataset".into(),
        format!("web={}", web.url()),
        "--dataset".into(),
        format!("refused={refused}"),
        "--storage-retries".into(),
        "1".into(),
        "--storage-retry-budget".into(),
        "1s".into(),
        "--dataset-reopen-max-delay".into(),
        "1s".into(),
        "--metrics-listen".into(),
        "127.0.0.1:0".into(),
    ]);
    let metrics = server.metrics_url.clone().expect("a metrics endpoint");
    let available = |scrape: &Scrape, dataset: &str| {
        scrape.value("activations_dataset_available", &[("dataset", dataset)])
    };
    let client = ActivationsClient::connect(server.url.clone())
        .await
        .unwrap()
        .with_retry(RetryPolicy::NONE);

    // The other datasets are served.
    let sample = client.clone().with_dataset("sample");
    assert_eq!(
        sample.load_neuron(1, 1).await.unwrap().random_sample.len(),
        50
    );
    assert_eq!(
        health(&server.url, "dataset/sample").await,
        ServingStatus::Serving
    );
    // Ready: every dataset has opened or failed an attempt (the failed ones are reported, and
    // answered UNAVAILABLE, below).
    assert_eq!(health(&server.url, "").await, ServingStatus::Serving);
    assert_eq!(
        health(&server.url, "liveness").await,
        ServingStatus::Serving
    );

    // The broken ones are reported, with their cause.
    for (name, cause) in [("web", "manifest.json"), ("refused", "127.0.0.1")] {
        assert_eq!(
            health(&server.url, &format!("dataset/{name}")).await,
            ServingStatus::NotServing,
            "{name}"
        );
        let error = client
            .clone()
            .with_dataset(name)
            .load_neuron(0, 1)
            .await
            .unwrap_err();
        let status = error.status().unwrap_or_else(|| panic!("{error}"));
        assert_eq!(status.status().code(), Code::Unavailable, "{error}");
        assert_eq!(status.error_reason(), Some(ErrorReason::DatasetUnavailable));
        let delay = status
            .details()
            .retry_info()
            .and_then(|retry| retry.retry_delay)
            .expect("RetryInfo with a delay");
        assert!(delay >= Duration::from_secs(1), "{delay:?}");
        let message = status.status().message();
        for said in [
            format!("dataset {name:?} is not available"),
            cause.to_string(),
        ] {
            assert!(message.contains(&said), "{said} missing: {message}");
        }
        assert!(
            message.contains("keeps trying"),
            "the message says it is retried: {message}"
        );
    }
    let listed = client.datasets().await.unwrap();
    let unavailable: Vec<(&str, bool)> = listed
        .iter()
        .map(|d| (d.name.as_str(), d.unavailable.is_empty()))
        .collect();
    assert_eq!(
        unavailable,
        [("sample", true), ("web", false), ("refused", false)]
    );
    assert!(listed[1].unavailable.contains("503"), "{:?}", listed[1]);
    let scrape = Scrape::fetch(&metrics).await;
    let states: Vec<f64> = ["sample", "web", "refused"]
        .iter()
        .map(|dataset| available(&scrape, dataset))
        .collect();
    assert_eq!(states, [1.0, 0.0, 0.0], "{}", scrape.text);

    // The store answers again: the dataset opens without a restart.
    web.clear_faults("manifest.json");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let web_client = client.clone().with_dataset("web");
    let record = loop {
        match web_client.load_neuron(0, 1).await {
            Ok(record) => break record,
            Err(error) => {
                assert!(std::time::Instant::now() < deadline, "still {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    // The same file as the sample's, under another id.
    let mut expected = sample.load_neuron(1, 1).await.unwrap();
    expected.neuron_id = record.neuron_id;
    assert_eq!(record, expected);
    assert_eq!(
        health(&server.url, "dataset/web").await,
        ServingStatus::Serving
    );
    assert_eq!(
        health(&server.url, "dataset/refused").await,
        ServingStatus::NotServing
    );
    let scrape = Scrape::fetch(&metrics).await;
    assert_eq!(available(&scrape, "web"), 1.0, "{}", scrape.text);
    assert_eq!(available(&scrape, "refused"), 0.0, "{}", scrape.text);

    // Each change is logged once, however many attempts failed the same way.
    let log = server.log();
    let warned = |name: &str| {
        log.lines()
            .filter(|line| line.contains("dataset unavailable") && line.contains(name))
            .count()
    };
    assert_eq!(warned("dataset=web"), 1, "{log}");
    assert_eq!(warned("dataset=refused"), 1, "{log}");
    assert_eq!(
        log.lines()
            .filter(|line| line.contains("dataset opened: its store answers again"))
            .count(),
        1,
        "{log}"
    );
}

#[tokio::test]
async fn a_configuration_error_still_stops_the_startup_naming_the_dataset() {
    for (uri, said) in [
        ("ftp://host/data", "not a supported location"),
        ("s3://bucket/x?no_such_setting=1", "no_such_setting"),
    ] {
        let output = Command::new(server_binary())
            .args(["--listen", "127.0.0.1:0"])
            .args(["--dataset", "sample=bundled:gpt2-xl-sample"])
            .args(["--dataset", &format!("bad={uri}")])
            .env_remove("ACTIVATIONS_DATASETS")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{uri}");
        let log = String::from_utf8_lossy(&output.stderr);
        assert!(
            log.contains("\"bad\"") && log.contains(said),
            "{uri}: {log}"
        );
    }
}
