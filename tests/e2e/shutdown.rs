//! The draining shutdown of the real `activations-server` binary: on SIGTERM health turns
//! NOT_SERVING, new calls are refused with UNAVAILABLE, running streams finish with every
//! record, and the process exits 0; a stream longer than the grace period is ended with
//! UNAVAILABLE and its last cursor resumes it on another server.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use activations_client::{ActivationsClient, Code, RetryPolicy, Selection, Split};
use activations_e2e::{fixtures::REAL_NEURON, process::ServerProcess, serve_dir};
use futures::TryStreamExt;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Neurons `0/0` .. `0/{NEURONS-1}`, each the real public file: a stream of a few seconds for
/// a client that pauses after each neuron.
const NEURONS: u32 = 300;

fn write_dataset(dir: &Path) {
    let layer = dir.join("0");
    std::fs::create_dir_all(&layer).unwrap();
    let first = layer.join("0.json");
    std::fs::write(&first, REAL_NEURON).unwrap();
    for neuron in 1..NEURONS {
        let path = layer.join(format!("{neuron}.json"));
        // Links, not copies: the same bytes, without 70 MB of writes.
        if std::fs::hard_link(&first, &path).is_err() {
            std::fs::write(&path, REAL_NEURON).unwrap();
        }
    }
}

/// Waits until the server's health check answers NOT_SERVING, and checks that its liveness
/// entry still answers SERVING.
async fn wait_until_not_serving(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let channel = tonic::transport::Endpoint::from_shared(url.to_string())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = HealthClient::new(channel);
        let status = health
            .check(HealthCheckRequest::default())
            .await
            .unwrap()
            .into_inner()
            .status();
        if status == ServingStatus::NotServing {
            // Draining is not dying: the liveness entry stays SERVING.
            let liveness = health
                .check(HealthCheckRequest {
                    service: "liveness".into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status();
            assert_eq!(liveness, ServingStatus::Serving);
            return;
        }
        assert!(Instant::now() < deadline, "health still {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn server_args(dir: &Path, grace: &str) -> Vec<String> {
    let dataset = format!("local={}", dir.display());
    ["--shutdown-grace", grace, "--dataset", &dataset]
        .map(String::from)
        .to_vec()
}

async fn connect(url: &str) -> ActivationsClient {
    ActivationsClient::builder()
        .endpoint(url)
        // Every failure shows as it happens: nothing resumes behind the test's back.
        .retry(RetryPolicy::NONE)
        .connect()
        .await
        .unwrap()
}

fn selection() -> Selection {
    Selection::Range {
        layers: 0..1,
        neurons: Some(0..NEURONS),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_refuses_new_calls_lets_streams_finish_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path());
    activations_e2e::install_tls_provider();
    let mut args = server_args(dir.path(), "60s");
    args.extend(["--metrics-listen".to_string(), "127.0.0.1:0".to_string()]);
    let mut server = ServerProcess::start(&args);
    let metrics = server.metrics_url.clone().expect("a metrics endpoint");
    // The health in plain HTTP on the metrics port, for probes that cannot speak gRPC over TLS.
    let probe = |path: &'static str| {
        let url = format!("{metrics}{path}");
        async move {
            let response = reqwest::get(&url).await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    // Ready once the server has reported its datasets, just after its ready line.
    let deadline = Instant::now() + Duration::from_secs(5);
    while probe("/readyz").await.0 != 200 {
        assert!(Instant::now() < deadline, "/readyz never answered 200");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(probe("/readyz").await, (200, "SERVING\n".to_string()));
    assert_eq!(probe("/livez").await, (200, "SERVING\n".to_string()));
    let client = connect(&server.url).await;
    let mut stream = client.neuron_splits(selection(), &[Split::Valid], None);
    let mut received = Vec::new();
    while received.len() < 20 {
        let neuron = stream.try_next().await.unwrap().unwrap();
        received.push(neuron.neuron_id.neuron_index);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    server.terminate();
    wait_until_not_serving(&server.url).await;
    assert_eq!(probe("/readyz").await, (503, "NOT_SERVING\n".to_string()));
    assert_eq!(probe("/livez").await, (200, "SERVING\n".to_string()));
    let refused = connect(&server.url)
        .await
        .neuron_summary(activations_client::neuron_id(0, 0))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(Code::Unavailable), "{refused}");
    assert!(refused.to_string().contains("shutting down"), "{refused}");

    // The running stream goes on to its end.
    while let Some(neuron) = stream.try_next().await.unwrap() {
        assert!(neuron.splits.is_ok(), "{:?}", neuron.splits);
        received.push(neuron.neuron_id.neuron_index);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(received, (0..NEURONS).collect::<Vec<_>>());
    let status = server.exit_status(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_longer_than_the_grace_period_ends_unavailable_and_resumes_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path());
    let mut server = ServerProcess::start(&server_args(dir.path(), "1s"));
    let other = serve_dir("local", dir.path()).await;

    let client = connect(&server.url).await;
    let mut stream = client.neuron_splits(selection(), &[Split::Valid], None);
    let mut received = Vec::new();
    let mut cursor = String::new();
    let mut terminated = None;
    let error = loop {
        match stream.try_next().await {
            Ok(Some(neuron)) => {
                received.push(neuron.neuron_id.neuron_index);
                cursor = neuron.cursor;
                if received.len() == 20 {
                    server.terminate();
                    terminated = Some(Instant::now());
                }
                // 300 neurons at this pace take 6 s: longer than the grace period.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(None) => panic!("the stream finished within the grace period"),
            Err(error) => break error,
        }
    };
    let ended_after = terminated.expect("SIGTERM was sent").elapsed();
    assert_eq!(error.code(), Some(Code::Unavailable), "{error}");
    assert!(error.to_string().contains("grace period"), "{error}");
    assert!(
        ended_after >= Duration::from_millis(900) && ended_after < Duration::from_secs(5),
        "ended {ended_after:?} after SIGTERM"
    );
    assert!(received.len() < NEURONS as usize, "{}", received.len());
    let status = server.exit_status(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{status}");

    // Another server continues from the last cursor: nothing lost, nothing repeated.
    let elsewhere = connect(&other.url()).await;
    let rest: Vec<u32> = elsewhere
        .neuron_splits_from(selection(), &[Split::Valid], None, cursor)
        .map_ok(|neuron| neuron.neuron_id.neuron_index)
        .try_collect()
        .await
        .unwrap();
    received.extend(rest);
    assert_eq!(received, (0..NEURONS).collect::<Vec<_>>());
    other.stop().await;
}
