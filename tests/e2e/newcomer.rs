//! What a newcomer's usual mistakes get from the real server and CLI: never a silent empty
//! answer, and refusals that name the valid choice.

use std::{collections::HashMap, path::Path};

use activations_cli::{self as cli, Cli, RunError};
use activations_e2e::{fixtures::REAL_NEURON, process::ServerProcess, tools::server_binary};
use activations_webstore::FaultyHttpServer;
use bytes::Bytes;
use clap::Parser;

/// `activations ARGS...`: what it printed, and how it ended.
async fn activations(args: &[&str]) -> (Result<(), RunError>, String) {
    let mut argv = vec!["activations"];
    argv.extend_from_slice(args);
    let mut out = Vec::new();
    let result = cli::run(Cli::parse_from(argv), &mut out).await;
    (result, String::from_utf8(out).unwrap())
}

fn write_neuron(root: &Path, layer: u32, neuron: u32) {
    let dir = root.join(layer.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{neuron}.json")), REAL_NEURON).unwrap();
}

#[test]
fn a_dataset_one_directory_too_high_stops_the_server_naming_where_the_files_are() {
    let parent = tempfile::tempdir().unwrap();
    write_neuron(&parent.path().join("collated-activations"), 1, 1);
    let root = parent.path().display().to_string();
    let output = std::process::Command::new(server_binary())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--dataset",
            &format!("xl={root}"),
        ])
        .output()
        .unwrap();
    assert!(!output.status.success(), "an empty dataset was served");
    let said = String::from_utf8_lossy(&output.stderr);
    for expected in [
        format!("no neuron file was found below {root}"),
        format!("{root}/LAYER/NEURON.json and {root}/neurons/LAYER/NEURON.json"),
        format!("--dataset xl={root}/collated-activations"),
    ] {
        assert!(said.contains(&expected), "{expected} missing from:\n{said}");
    }
}

#[tokio::test]
async fn an_export_or_a_manifest_that_selects_nothing_fails_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    for layer in 0..2 {
        write_neuron(dir.path(), layer, 0);
    }
    let server = ServerProcess::start(&["--dataset".into(), format!("d={}", dir.path().display())]);
    let out = tempfile::tempdir().unwrap();
    let (result, printed) = activations(&[
        "--server",
        &server.url,
        "export",
        "--layers",
        "5..9",
        "--out",
        out.path().to_str().unwrap(),
    ])
    .await;
    let error = result.expect_err("an export of nothing");
    let said = error.to_string();
    assert!(
        said.contains("--layers 5..9") && said.contains("layers are 0..2"),
        "{said}"
    );
    assert!(!printed.contains("exported 0"), "{printed}");

    let empty = tempfile::tempdir().unwrap();
    let (result, printed) = activations(&["manifest", empty.path().to_str().unwrap()]).await;
    let error = result.expect_err("a manifest of nothing");
    assert!(
        error.to_string().contains("no neuron file was found"),
        "{error}"
    );
    assert!(!printed.contains("\"layers\": []"), "{printed}");
}

#[tokio::test]
async fn listing_existence_and_export_agree_whatever_a_stale_manifest_says() {
    let dir = tempfile::tempdir().unwrap();
    for neuron in 0..3 {
        write_neuron(dir.path(), 0, neuron);
    }
    // Written when the layer had two neurons.
    std::fs::write(
        dir.path().join("manifest.json"),
        r#"{"manifest_version": 1, "layout": "flat", "layers": [{"layer": 0, "neuron_count": 2}]}"#,
    )
    .unwrap();
    let server = ServerProcess::start(&["--dataset".into(), format!("d={}", dir.path().display())]);
    let (listed, printed) = activations(&["--server", &server.url, "neurons", "0"]).await;
    listed.unwrap();
    assert_eq!(printed.lines().collect::<Vec<_>>(), ["0", "1", "2"]);
    let (exists, printed) = activations(&["--server", &server.url, "exists", "0", "2"]).await;
    exists.unwrap();
    assert_eq!(printed.trim(), "true");
    let out = tempfile::tempdir().unwrap();
    let (exported, printed) = activations(&[
        "--server",
        &server.url,
        "export",
        "--layers",
        "0",
        "--out",
        out.path().to_str().unwrap(),
    ])
    .await;
    exported.unwrap();
    assert!(printed.contains("exported 3 neurons"), "{printed}");
}

// Two workers: the web server below runs on the test's runtime while the server process starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_the_valid_range() {
    let dir = tempfile::tempdir().unwrap();
    write_neuron(dir.path(), 0, 0);
    let server = ServerProcess::start(&["--dataset".into(), format!("d={}", dir.path().display())]);
    // The public neuron has 50 top-activating records: 12 per split at most.
    let (result, _) = activations(&[
        "--server",
        &server.url,
        "get",
        "0",
        "0",
        "--split",
        "valid",
        "-n",
        "13",
    ])
    .await;
    let said = result.expect_err("13 is too many").to_string();
    assert!(
        said.contains("allows n_examples_per_split up to 12"),
        "{said}"
    );

    // A web dataset with a declared shape: a neuron outside it says so.
    let web = FaultyHttpServer::start(HashMap::from([(
        "data/0/0.json".to_string(),
        Bytes::from_static(REAL_NEURON),
    )]));
    let uri = format!("{}/data?layers=1&neurons=2", web.url());
    let server = ServerProcess::start(&["--dataset".into(), format!("w={uri}")]);
    let (result, _) = activations(&["--server", &server.url, "get", "0", "5"]).await;
    let said = result.expect_err("outside the shape").to_string();
    assert!(
        said.contains("not in the dataset's declared shape: 1 layers of 2 neurons (2 in all)"),
        "{said}"
    );
    assert!(
        said.contains(&format!("{}/data/0/5.json", web.url())),
        "{said}"
    );
}

// Two workers: the web server runs on the test's runtime while the server process starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlistable_dataset_one_directory_too_high_says_so_on_every_missing_read() {
    let web = FaultyHttpServer::start(HashMap::from([(
        "data/collated-activations/0/0.json".to_string(),
        Bytes::from_static(REAL_NEURON),
    )]));
    let uri = format!("{}/data?layers=1&neurons=2", web.url());
    let server = ServerProcess::start(&["--dataset".into(), format!("w={uri}")]);
    let base = format!("{}/data", web.url());
    for (neuron, which) in [
        (
            "1",
            format!("the declared shape's first neuron is missing too, {base}/0/0.json"),
        ),
        ("0", "it is the declared shape's first neuron".to_string()),
    ] {
        let (result, _) = activations(&["--server", &server.url, "get", "0", neuron]).await;
        let said = result.expect_err("nothing is there").to_string();
        assert!(
            said.contains(&format!(
                "{base}/0/{neuron}.json ({which}: the dataset's root or layout is most likely wrong"
            )),
            "{said}"
        );
    }
}
