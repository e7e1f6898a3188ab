//! The Python package (`python/`, `neuron_activations`) against the Rust SDK: both route every
//! neuron to the same replica. The package's own tests (pytest, against real servers and the
//! reference loader) are run by `scripts/test.sh`.

use std::process::Command;

use activations_client::routing::{RouteKey, owner};
use activations_e2e::tools::{python, workspace_root};

#[test]
#[ignore = "needs the project's Python (.venv): run scripts/test.sh"]
fn python_and_rust_route_ten_thousand_neurons_to_the_same_replica() {
    let servers = [
        "10.0.0.5:50051",
        "10.0.0.6:50051",
        "10.0.0.7:50051",
        "[fd00::8]:50051",
        "replica-4.activations-headless:50051",
    ];
    // Keys over several datasets (the default's empty name included), layers and neurons.
    let keys: Vec<(String, u32, u32)> = (0..10_000u32)
        .map(|i| {
            let dataset = ["", "gpt2-xl", "gpt2-small"][(i % 3) as usize].to_string();
            (dataset, i % 48, (i * 7919) % 6400)
        })
        .collect();
    let script = r#"
import json, sys
from neuron_activations.routing import owner
servers, keys = json.load(sys.stdin)
print(json.dumps([owner(servers, d, l, n) for d, l, n in keys]))
"#;
    let mut child = Command::new(python())
        .args(["-c", script])
        .env("PYTHONPATH", workspace_root().join("python"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("running the project's Python");
    let input = serde_json::to_vec(&(servers, &keys)).unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &input).unwrap();
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let from_python: Vec<String> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(from_python.len(), keys.len());
    let mut differ = 0;
    for ((dataset, layer, neuron), python_owner) in keys.iter().zip(&from_python) {
        let key = RouteKey {
            dataset,
            layer_index: *layer,
            neuron_index: *neuron,
        };
        if owner(servers, &key) != Some(python_owner.as_str()) {
            differ += 1;
        }
    }
    assert_eq!(differ, 0, "{differ} of 10,000 keys routed differently");
    // Every server owns some of them: the keys do spread.
    for server in servers {
        assert!(
            from_python.iter().any(|o| o == server),
            "{server} owns nothing"
        );
    }
}
