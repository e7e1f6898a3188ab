//! The `activations-server` binary as an operator runs it: settings from the environment, the
//! bound address in the log, and a clean exit on SIGTERM.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use activations_proto::pb::{self, activation_service_client::ActivationServiceClient};

#[tokio::test]
async fn binary_reads_settings_from_the_environment_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("neurons/5")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_activations-server"))
        .env("ACTIVATIONS_LISTEN", "127.0.0.1:0")
        .env(
            "ACTIVATIONS_DATASETS",
            format!("env-data={}", dir.path().display()),
        )
        .env("ACTIVATIONS_LAYOUT", "neurons")
        .env_remove("ACTIVATIONS_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let mut log = BufReader::new(child.stderr.take().unwrap()).lines();
    let listening = log
        .by_ref()
        .map(Result::unwrap)
        .find(|line| line.contains("listening"))
        .expect("the server logs its address");
    let addr = listening
        .split_whitespace()
        .find_map(|field| field.strip_prefix("address="))
        .unwrap_or_else(|| panic!("no address in {listening:?}"));

    let mut client = ActivationServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let datasets = client
        .list_datasets(pb::ListDatasetsRequest {})
        .await
        .unwrap()
        .into_inner()
        .datasets;
    assert_eq!(datasets.len(), 1);
    assert_eq!(datasets[0].name, "env-data");
    assert_eq!(datasets[0].layout(), pb::Layout::Neurons);
    let layers = client
        .list_layers(pb::ListLayersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(layers.layer_indices, vec![5]);

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap()
    })
    .await
    .expect("the server exits after SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert!(
        log.map(Result::unwrap)
            .any(|line| line.contains("shutting down")),
        "the shutdown is logged"
    );
}

#[test]
fn binary_refuses_a_missing_dataset_directory_naming_it() {
    let output = Command::new(env!("CARGO_BIN_EXE_activations-server"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--dataset",
            "gone=/no/such/directory",
        ])
        .env_remove("ACTIVATIONS_DATASETS")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("\"gone\"") && stderr.contains("/no/such/directory"),
        "{stderr}"
    );
}
