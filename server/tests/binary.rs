//! The `activations-server` binary as an operator runs it: settings from the environment, the
//! ready line with the bound address on standard output, and a clean exit on SIGTERM.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::Duration,
};

use activations_proto::pb::{self, activation_service_client::ActivationServiceClient};
use activations_server::Ready;

/// The address of the server's ready line on its standard output (then left unread).
fn ready_address(child: &mut Child) -> SocketAddr {
    let stdout = child.stdout.take().expect("stdout is piped");
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| Ready::parse(&line))
        .expect("the server prints its ready line");
    ready.address
}

#[tokio::test]
async fn binary_reads_settings_from_the_environment_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("neurons/5")).unwrap();
    std::fs::write(dir.path().join("neurons/5/0.json"), b"{}").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_activations-server"))
        .env("ACTIVATIONS_LISTEN", "127.0.0.1:0")
        .env(
            "ACTIVATIONS_DATASETS",
            format!("env-data={}", dir.path().display()),
        )
        .env("ACTIVATIONS_LAYOUT", "neurons")
        .env_remove("ACTIVATIONS_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = ready_address(&mut child);
    let log = BufReader::new(child.stderr.take().unwrap()).lines();

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

#[tokio::test]
async fn binary_logs_never_show_a_token_even_at_trace_level() {
    let (right, wrong) = ("binary-token-83c1f0", "binary-wrong-27d9e4");
    let mut child = Command::new(env!("CARGO_BIN_EXE_activations-server"))
        .args(["--listen", "127.0.0.1:0", "--log", "trace"])
        .env("ACTIVATIONS_AUTH_TOKENS", format!("{right},another"))
        .env_remove("ACTIVATIONS_DATASETS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    // Reads the whole log, so the server never blocks on a full pipe.
    let reader = std::thread::spawn(move || {
        let lines = BufReader::new(stderr).lines().map(Result::unwrap);
        lines.collect::<Vec<_>>().join("\n")
    });
    let addr = ready_address(&mut child);

    let mut client = ActivationServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    for (token, accepted) in [(right, true), (wrong, false)] {
        let mut request = tonic::Request::new(pb::ListDatasetsRequest {});
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let result = client.list_datasets(request).await;
        assert_eq!(result.is_ok(), accepted, "{token}: {result:?}");
    }

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    let log = reader.join().unwrap();
    assert!(log.contains("auth_tokens=2"), "the count is logged:\n{log}");
    assert!(
        log.contains("INVALID_BEARER_TOKEN"),
        "the refusal is logged"
    );
    for token in [right, wrong] {
        assert!(!log.contains(token), "{token} in the log:\n{log}");
    }
}

#[test]
fn help_does_not_print_the_tokens_of_the_environment() {
    let output = Command::new(env!("CARGO_BIN_EXE_activations-server"))
        .arg("--help")
        .env("ACTIVATIONS_AUTH_TOKENS", "help-secret-4b1d")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("ACTIVATIONS_AUTH_TOKENS"), "{help}");
    assert!(!help.contains("help-secret"), "{help}");
}
