//! The `activations-server` binary with `--log-format json` and `--metrics-listen`: every log
//! line is a JSON object, each call's line carries its span (the method, dataset and neuron),
//! and the metrics port answers a plain HTTP scrape.

use std::{
    io::{BufRead, BufReader, Read, Write},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use activations_proto::pb::{
    self, GetNeuronRecordRequest, NeuronId, StreamActivationRecordsRequest,
    activation_service_client::ActivationServiceClient,
};
use serde_json::Value;

/// The server process, killed when dropped.
struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_activations-server"))
            .args(args)
            // The settings come from the flags alone.
            .env_remove("ACTIVATIONS_DATASETS")
            .env_remove("ACTIVATIONS_LOG")
            .env_remove("ACTIVATIONS_LOG_FORMAT")
            .env_remove("ACTIVATIONS_METRICS_LISTEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting activations-server");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Server { child, lines }
    }

    /// The next log line that `wanted` accepts, each line before it checked to be JSON.
    fn next_json(&self, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .expect("the awaited log line within 30 s");
            let json: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            if wanted(&json) {
                return json;
            }
        }
    }
}

fn message(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or_default()
}

/// `GET /metrics` over a plain TCP connection, as the simplest scraper would send it.
fn scrape(address: &str) -> String {
    let mut stream = std::net::TcpStream::connect(address).expect("connecting to metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

fn neuron(layer: u32, neuron: u32) -> Option<NeuronId> {
    Some(NeuronId {
        layer_index: layer,
        neuron_index: neuron,
    })
}

#[tokio::test]
async fn json_logs_carry_each_calls_span_and_metrics_answer_a_plain_scrape() {
    let server = Server::start(&[
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--log",
        "info,activations_server::requests=debug",
    ]);
    let metrics = server.next_json(|l| message(l).starts_with("serving metrics"));
    let metrics_address = metrics["fields"]["address"].as_str().unwrap().to_string();
    let listening = server.next_json(|l| message(l) == "listening");
    assert_eq!(listening["level"], "INFO");
    let address = listening["fields"]["address"].as_str().unwrap();

    let mut client = ActivationServiceClient::connect(format!("http://{address}"))
        .await
        .expect("connecting");
    let missing = client
        .get_neuron_record(GetNeuronRecordRequest {
            dataset: String::new(),
            neuron_id: neuron(1, 2),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let mut stream = client
        .stream_activation_records(StreamActivationRecordsRequest {
            neuron_id: neuron(1, 1),
            split: pb::Split::Valid as i32,
            slice_params: Some(pb::ActivationRecordSliceParams {
                n_examples_per_split: Some(5),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut records = 0;
    while stream.message().await.unwrap().is_some() {
        records += 1;
    }
    assert_eq!(records, 10);

    let ended =
        |rpc: &'static str| move |l: &Value| message(l) == "call ended" && l["span"]["rpc"] == rpc;
    let not_found = server.next_json(ended("GetNeuronRecord"));
    assert_eq!(not_found["level"], "DEBUG");
    assert_eq!(not_found["target"], "activations_server::requests");
    assert_eq!(not_found["fields"]["code"], "NOT_FOUND");
    assert!(not_found["fields"]["duration_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(not_found["span"]["name"], "rpc");
    assert_eq!(not_found["span"]["dataset"], "gpt2-xl-sample");
    assert_eq!(not_found["span"]["neuron"], "1/2");
    let streamed = server.next_json(ended("StreamActivationRecords"));
    assert_eq!(streamed["fields"]["code"], "OK");
    assert_eq!(streamed["span"]["neuron"], "1/1");
    assert!(streamed["fields"]["bytes"].as_u64().unwrap() > 1000);

    let text = scrape(&metrics_address);
    let service = "neuron_explainer.activations.v1.ActivationService";
    for line in [
        format!(
            r#"activations_rpc_requests_total{{service="{service}",rpc="GetNeuronRecord",code="NOT_FOUND"}} 1"#
        ),
        format!(
            r#"activations_records_streamed_total{{service="{service}",rpc="StreamActivationRecords"}} 10"#
        ),
        r#"activations_storage_reads_total{dataset="gpt2-xl-sample",operation="read"} 2"#
            .to_string(),
    ] {
        assert!(text.contains(&line), "{line} missing from:\n{text}");
    }
}

#[test]
fn text_is_the_default_log_format() {
    let server = Server::start(&["--listen", "127.0.0.1:0"]);
    let line = server
        .lines
        .recv_timeout(Duration::from_secs(30))
        .expect("a first log line");
    assert!(serde_json::from_str::<Value>(&line).is_err(), "{line}");
    assert!(line.contains("INFO"), "{line}");
}
