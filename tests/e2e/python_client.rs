//! Python against the service: the Python package's generated stubs
//! (`python/neuron_activations/_proto`) read every split of every neuron with
//! `StreamNeuronSplits`, which must match what the Python reference loader computes from the same
//! files (`tests/oracle/python_client.py`), and the example job (`examples/python/explain_job.py`,
//! on the package's `Client`) must report every neuron, the package resuming a stream that fails
//! with UNAVAILABLE. Run by `scripts/test.sh`, which installs grpcio, protobuf and the reference
//! loader into `.venv/`.

use activations_webstore::{Fault, FaultyHttpServer};
use std::{collections::HashMap, path::Path, process::Output, time::Duration};

use activations_e2e::{
    fixtures::{self, REAL_NEURON},
    serve_dir, serve_uris,
    tools::{python, workspace_root},
};
use activations_server::location::StorageOptions;
use bytes::Bytes;
use serde_json::Value;
use tokio::process::Command;

/// The block of neurons the comparison and the job read: `LAYERS` x `NEURONS`.
const LAYERS: (u32, u32) = (1, 4);
const NEURONS: (u32, u32) = (0, 7);

/// A neuron file of the dataset: layer, neuron, top-activating and random record counts.
type NeuronFile = (u32, u32, usize, usize);

/// The real file at 1/1 (50 top-activating, 48 random records), synthetic neurons in layer 2
/// with record counts too small for some n (2/3 has no file), one in layer 3 too large for one
/// message, so it arrives in parts; every other neuron of the block has no file. One synthetic
/// record holds a NaN activation and one a `null` one.
fn write_dataset(root: &Path) -> Vec<NeuronFile> {
    fixtures::write_neuron(root, false, 1, 1, REAL_NEURON);
    let mut files = vec![(1, 1, 50, 48)];
    let synthetic = [
        (2, 0, 0, 0),
        (2, 1, 3, 2),
        (2, 2, 8, 6),
        (2, 4, 13, 11),
        (2, 5, 20, 15),
        (2, 6, 52, 51),
        (3, 0, 4000, 1500),
    ];
    for (layer, neuron, top, random) in synthetic {
        let seed = 7000 + u64::from(layer * 100 + neuron);
        let mut record = fixtures::neuron(seed, layer, neuron, top, random);
        if (layer, neuron) == (2, 5) {
            record.most_positive_activation_records[3].activations[0] = f32::NAN;
            record.random_sample[4].activations[0] = f32::NAN;
        }
        let mut json = String::from_utf8(fixtures::to_json(&record)).unwrap();
        if (layer, neuron) == (2, 5) {
            // The first NaN activation becomes a JSON null, which Python reads as None.
            json = json.replacen(r#""activations": [NaN"#, r#""activations": [null"#, 1);
            assert!(json.contains(r#""activations": [null"#) && json.contains("[NaN"));
        }
        fixtures::write_neuron(root, false, layer, neuron, json.as_bytes());
        files.push((layer, neuron, top, random));
    }
    files
}

/// `python SCRIPT ARGS...` with the project's Python.
fn python_script(script: &str, args: &[&str]) -> Command {
    let mut command = Command::new(python());
    command.arg(workspace_root().join(script)).args(args);
    command
}

/// Runs the command to completion without blocking the runtime, which serves meanwhile.
async fn run(command: &mut Command) -> Output {
    command
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"))
}

/// The command's standard output, after checking it succeeded.
fn stdout(what: &str, output: &Output) -> String {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("UTF-8 output")
}

/// The lines of the job's report that are about `layer/neuron`.
fn lines_about(report: &str, layer: u32, neuron: u32) -> Vec<&str> {
    let prefix = format!("{layer}/{neuron}: ");
    report.lines().filter(|l| l.starts_with(&prefix)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs grpcio and the Python reference loader: run scripts/test.sh"]
async fn python_client_reads_every_split_as_the_reference_loader_computes_it() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_dataset(dir.path());
    let server = serve_dir("python", dir.path()).await;
    let addr = server.addr.to_string();
    let data = dir.path().to_str().expect("UTF-8 temp path");
    let layers = format!("{}..{}", LAYERS.0, LAYERS.1);
    let neurons = format!("{}..{}", NEURONS.0, NEURONS.1);

    let output = run(&mut python_script(
        "tests/oracle/python_client.py",
        &[
            "--server",
            &addr,
            "--data",
            data,
            "--layers",
            &layers,
            "--neurons",
            &neurons,
            "--n",
            "none,0,1,2,3,5,13,17",
        ],
    ))
    .await;
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "python_client.py printed no summary ({e}):\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert!(
        output.status.success() && summary["mismatches"] == 0,
        "the Python client and the reference loader disagree: {summary:#}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    println!("python_client.py: {summary:#}");
    let count = |key: &str| summary[key].as_u64().unwrap_or(0);
    let block = u64::from((LAYERS.1 - LAYERS.0) * (NEURONS.1 - NEURONS.0));
    assert_eq!(count("neurons"), block, "{summary:#}");
    // Two streams per n plus one resumed: every neuron of the block compared in each of 16.
    assert_eq!(count("neurons_compared"), 16 * block, "{summary:#}");
    assert!(count("records_compared") > 0, "{summary:#}");
    assert!(count("errors_compared") > 0, "{summary:#}");
    assert!(
        count("multi_part_neurons") > 0,
        "3/0 arrives in parts: {summary:#}"
    );
    assert!(count("resumed_neurons") > 0, "{summary:#}");

    // The job over the same block with n = 2: every neuron reported once, in order; those
    // without a file or with too few records (train and valid need 8 top-activating and 6
    // random records) as errors.
    let report = stdout(
        "explain_job.py",
        &run(&mut python_script(
            "examples/python/explain_job.py",
            &[
                "--server",
                &addr,
                "--layers",
                &layers,
                "--neurons",
                &neurons,
                "-n",
                "2",
            ],
        ))
        .await,
    );
    println!("explain_job.py -n 2:\n{report}");
    assert_eq!(report.lines().count() as u64, block, "{report}");
    for layer in LAYERS.0..LAYERS.1 {
        for neuron in NEURONS.0..NEURONS.1 {
            let lines = lines_about(&report, layer, neuron);
            assert_eq!(lines.len(), 1, "{layer}/{neuron} in:\n{report}");
            let line = lines[0];
            match files.iter().find(|f| (f.0, f.1) == (layer, neuron)) {
                None => assert!(line.contains("error NOT_FOUND"), "{line}"),
                Some(&(_, _, top, random)) if top < 8 || random < 6 => assert!(
                    line.contains("error FAILED_PRECONDITION")
                        && line.contains("NOT_ENOUGH_RECORDS"),
                    "{line}"
                ),
                Some(_) => assert!(
                    line.contains("2 train, 4 valid records; top train excerpt (max activation "),
                    "{line}"
                ),
            }
        }
    }

    // Without --neurons and n: the neurons each layer lists, every record of each split.
    let report = stdout(
        "explain_job.py",
        &run(&mut python_script(
            "examples/python/explain_job.py",
            &["--server", &addr, "--layers", &layers],
        ))
        .await,
    );
    let reported: Vec<&str> = report
        .lines()
        .map(|l| l.split(':').next().unwrap())
        .collect();
    let written: Vec<String> = files.iter().map(|f| format!("{}/{}", f.0, f.1)).collect();
    assert_eq!(reported, written, "{report}");
    for &(layer, neuron, top, random) in &files {
        let expected = format!(
            "{layer}/{neuron}: {} train, {} valid records",
            top / 4,
            top / 4 + random / 3
        );
        let lines = lines_about(&report, layer, neuron);
        assert!(lines[0].starts_with(&expected), "{expected}: {report}");
    }
    server.stop().await;
}

/// Short storage timeouts and budgets, so the injected failure ends the stream quickly.
const STORAGE: StorageOptions = StorageOptions {
    request_timeout: Duration::from_millis(800),
    connect_timeout: Duration::from_secs(1),
    max_retries: 3,
    retry_budget: Duration::from_secs(3),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs grpcio and the Python reference loader: run scripts/test.sh"]
async fn explain_job_resumes_a_stream_that_fails_unavailable() {
    let files: HashMap<String, Bytes> = (0..8)
        .map(|n| (format!("0/{n}.json"), Bytes::from_static(REAL_NEURON)))
        .collect();
    let web = FaultyHttpServer::start(files);
    // More failures than the server's attempts at one read: the first stream delivers 0/0..0/4,
    // then ends with UNAVAILABLE; the job resumes after 0/4 and reads 0/5 once it recovers.
    web.inject(
        "0/5.json",
        vec![Fault::Status(503); STORAGE.max_retries + 1],
    );
    let uri = format!("{}?layers=1&neurons=8&layout=flat", web.url());
    let server = serve_uris(&[("faulty", &uri)], STORAGE).await;

    let output = run(&mut python_script(
        "examples/python/explain_job.py",
        &[
            "--server",
            &server.addr.to_string(),
            "--layers",
            "0..1",
            "-n",
            "5",
        ],
    ))
    .await;
    let report = stdout("explain_job.py", &output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("explain_job.py:\n{report}{stderr}");
    let reported: Vec<&str> = report
        .lines()
        .map(|l| l.split(':').next().unwrap())
        .collect();
    let expected: Vec<String> = (0..8).map(|n| format!("0/{n}")).collect();
    assert_eq!(
        reported, expected,
        "each neuron once, in order:\n{report}\n{stderr}"
    );
    assert!(
        report
            .lines()
            .all(|l| l.contains(": 5 train, 10 valid records")),
        "{report}"
    );
    assert!(
        stderr.contains("stream failed (UNAVAILABLE") && stderr.contains("resuming"),
        "{stderr}"
    );
    assert!(web.requests("0/5.json") > STORAGE.max_retries + 1);
    server.stop().await;
}
