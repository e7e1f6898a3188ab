//! The oracle: the Python reference loader (`automated-interpretability` from PyPI) and this
//! service read the same files: every split for several n must be identical, record for record
//! and bit for bit, and so must the layer and neuron listings and existence checks. Run by
//! `scripts/test.sh`, which installs the Python package.

use std::{collections::BTreeMap, process::Command};

use activations_client::{Split, neuron_id, pb};
use activations_e2e::{
    fixtures::{self, REAL_NEURON},
    serve_dir,
    tools::{python, workspace_root},
};
use futures::TryStreamExt;
use serde_json::Value;
use tonic::Code;

const NS: &[Option<u32>] = &[
    None,
    Some(0),
    Some(1),
    Some(2),
    Some(5),
    Some(12),
    Some(13),
    Some(17),
];
const SPLITS: &[(Split, &str)] = &[
    (Split::Train, "train"),
    (Split::Calibration, "calibration"),
    (Split::Valid, "valid"),
    (Split::Test, "test"),
];

/// The neurons of the oracle dataset: the real file plus synthetic ones with record counts
/// around every multiple of 3 and 4, moments that are NaN, Infinity or null, and objects with
/// and without `dataclass_name`.
fn write_dataset(root: &std::path::Path) -> Vec<(u32, u32)> {
    let mut neurons = vec![(1, 1)];
    fixtures::write_neuron(root, false, 1, 1, REAL_NEURON);
    let counts = [
        (0, 0),
        (1, 2),
        (4, 3),
        (7, 5),
        (8, 6),
        (13, 11),
        (20, 15),
        (49, 37),
        (52, 51),
        (68, 52),
    ];
    for (i, &(top, random)) in counts.iter().enumerate() {
        let key = (2, i as u32);
        let record = fixtures::neuron(1000 + i as u64, key.0, key.1, top, random);
        let mut json = String::from_utf8(fixtures::to_json(&record)).unwrap();
        if i % 2 == 1 {
            // Older files name no classes; Python matches those objects by their keys.
            json = json.replace("\"dataclass_name\": \"ActivationRecord\", ", "");
            json = json.replace("\"dataclass_name\": \"NeuronId\", ", "");
        }
        fixtures::write_neuron(root, false, key.0, key.1, json.as_bytes());
        neurons.push(key);
    }
    neurons
}

/// Runs `tests/oracle/SCRIPT ARGS...` with the reference loader's Python; its JSON output.
fn run_reference(script: &str, args: &[String]) -> Value {
    let output = Command::new(python())
        .arg(workspace_root().join("tests/oracle").join(script))
        .args(args)
        .output()
        .expect("running the Python reference loader");
    assert!(
        output.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the script prints JSON")
}

fn records_as_json(records: &[pb::ActivationRecord]) -> Value {
    Value::Array(
        records
            .iter()
            .map(|r| {
                serde_json::json!({
                    "tokens": r.tokens,
                    "activations": r.activations.iter().map(|a| a.to_bits()).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Python reference loader in .venv; run by scripts/test.sh"]
async fn every_split_matches_the_python_reference_loader() {
    let dir = tempfile::tempdir().unwrap();
    let neurons = write_dataset(dir.path());
    let ns: Vec<String> = NS
        .iter()
        .map(|n| n.map_or("none".to_string(), |n| n.to_string()))
        .collect();
    let mut args = vec![dir.path().display().to_string(), ns.join(",")];
    args.extend(neurons.iter().map(|(l, n)| format!("{l}/{n}")));
    let reference: BTreeMap<String, Value> =
        serde_json::from_value(run_reference("reference_splits.py", &args)).unwrap();

    let server = serve_dir("oracle", dir.path()).await;
    let client = server.client().await;
    let mut compared = 0;
    for &(layer, neuron) in &neurons {
        let expected = &reference[&format!("{layer}/{neuron}")];
        let summary = client
            .neuron_summary(neuron_id(layer, neuron))
            .await
            .unwrap();
        match &expected["max_activation"] {
            Value::String(_) => assert_eq!(summary.max_activation, None, "{layer}/{neuron}"),
            bits => assert_eq!(
                summary.max_activation.map(|m| u64::from(m.to_bits())),
                bits.as_u64(),
                "max_activation of {layer}/{neuron}"
            ),
        }
        for (n, n_name) in NS.iter().zip(&ns) {
            for &(split, split_name) in SPLITS {
                let want = &expected[format!("n={n_name}")][split_name];
                let got = client
                    .activation_records(neuron_id(layer, neuron), split, *n)
                    .await;
                let context = format!("{layer}/{neuron} {split_name} n={n_name}");
                if want.get("error").is_some() {
                    let err = got.expect_err(&format!("Python fails {context}"));
                    assert_eq!(
                        err.code(),
                        Some(Code::FailedPrecondition),
                        "{context}: {err}"
                    );
                } else {
                    let got = got.unwrap_or_else(|e| panic!("{context}: {e}"));
                    assert_eq!(&records_as_json(&got), want, "{context}");
                }
                compared += 1;
            }
        }
    }
    assert_eq!(compared, neurons.len() * NS.len() * SPLITS.len());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Python reference loader in .venv; run by scripts/test.sh"]
async fn listing_and_existence_match_the_python_reference_loader() {
    let dir = tempfile::tempdir().unwrap();
    for (layer, neuron) in [(0, 0), (0, 2), (0, 10), (3, 7), (12, 1), (12, 100)] {
        fixtures::write_neuron(dir.path(), true, layer, neuron, REAL_NEURON);
    }
    // Names that are not layers or neurons, which both sides must skip.
    let neurons_dir = dir.path().join("neurons");
    std::fs::create_dir_all(neurons_dir.join("tmp")).unwrap();
    std::fs::write(neurons_dir.join("README"), "").unwrap();
    std::fs::write(neurons_dir.join("0/notes.txt"), "").unwrap();
    std::fs::create_dir_all(neurons_dir.join("0/drafts")).unwrap();
    let probes = ["0/0", "0/1", "0/10", "3/7", "12/100", "4/0"];

    let mut args = vec![dir.path().display().to_string()];
    args.extend(probes.iter().map(|p| p.to_string()));
    let reference = run_reference("reference_listing.py", &args);

    let server = serve_dir("listing", dir.path()).await;
    let client = server.client().await;
    let layers = client.sorted_layers().await.unwrap();
    assert_eq!(serde_json::json!(layers), reference["layers"]);
    for layer in layers {
        let neurons: Vec<u32> = client
            .sorted_neuron_indices(layer)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(
            serde_json::json!(neurons),
            reference["neurons"][layer.to_string()],
            "layer {layer}"
        );
    }
    for probe in probes {
        let (layer, neuron) = probe.split_once('/').unwrap();
        let exists = client
            .neuron_exists(neuron_id(layer.parse().unwrap(), neuron.parse().unwrap()))
            .await
            .unwrap();
        assert_eq!(Value::Bool(exists), reference["exists"][probe], "{probe}");
    }
    server.stop().await;
}
