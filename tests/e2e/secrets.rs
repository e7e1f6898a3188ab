//! Secrets stay secret: a real server with tokens and datasets whose URIs carry credentials of
//! each kind shows none of them in any answer, error, log line (at the most verbose level),
//! metric or CLI output; and callers without a token cannot grow the metrics.

use std::collections::HashMap;

use activations_cli::{self as cli, Cli};
use activations_client::{Code, pb};
use activations_e2e::{
    fixtures::REAL_NEURON,
    grpc_raw::{frame, raw_call},
    process::ServerProcess,
    scrape::Scrape,
};
use activations_webstore::FaultyHttpServer;
use bytes::Bytes;
use clap::Parser;
use pb::activation_service_client::ActivationServiceClient;
use tonic::{metadata::MetadataValue, transport::Channel};

const TOKEN: &str = "tok-5e1c7a9b3d";

/// The credentials the datasets' URIs carry: none may be shown anywhere.
const SECRETS: [&str; 6] = [
    "WEBPASSWORD77",
    "webuser77",
    "S3SECRETKEY77",
    "S3ACCESSKEYID77",
    "AZSASSIG77",
    "GCSKEY77",
];

fn assert_hidden(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} shows {secret}:\n{text}");
    }
}

/// A call with the token.
fn authorized<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {TOKEN}").parse().unwrap();
    request.metadata_mut().insert("authorization", value);
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_dataset_uris_never_show_and_unknown_paths_do_not_grow_the_metrics() {
    let web = FaultyHttpServer::start(HashMap::from([(
        "data/1/1.json".to_string(),
        Bytes::from_static(REAL_NEURON),
    )]));
    let web_host = web.url().trim_start_matches("http://").to_string();
    let datasets = [
        // A web server with user info, and no shape: listing it fails naming its location.
        format!("web=http://webuser77:WEBPASSWORD77@{web_host}/data"),
        // S3 with an access key and a secret in the URI, and a declared shape.
        "s3=s3://bucket/p?endpoint=http://127.0.0.1:9&region=us-east-1&access_key_id=\
         S3ACCESSKEYID77&secret_access_key=S3SECRETKEY77&layers=1&neurons=2&layout=flat"
            .to_string(),
        // Azure with a SAS token.
        "az=az://devstoreaccount1/c/p?sas_key=sv%3D2022%26sig%3DAZSASSIG77&layers=1&neurons=2&layout=flat"
            .to_string(),
        // GCS with a bearer token.
        "gcs=gs://bucket/p?bearer_token=GCSKEY77&layers=1&neurons=2&layout=flat".to_string(),
    ];
    let mut args = vec![
        "--auth-tokens".to_string(),
        TOKEN.to_string(),
        "--log".to_string(),
        "trace".to_string(),
        "--metrics-listen".to_string(),
        "127.0.0.1:0".to_string(),
    ];
    for dataset in &datasets {
        args.extend(["--dataset".to_string(), dataset.clone()]);
    }
    let server = ServerProcess::start(&args);
    let channel = Channel::from_shared(server.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ActivationServiceClient::new(channel.clone());

    // The datasets as listed: recognisable, without their credentials.
    let listed = client
        .list_datasets(authorized(pb::ListDatasetsRequest {}))
        .await
        .unwrap()
        .into_inner();
    let uris: Vec<String> = listed.datasets.iter().map(|d| d.uri.clone()).collect();
    assert_hidden("ListDatasets", &uris.join("\n"));
    assert!(
        uris[0].contains(&web_host) && uris[0].contains("***@"),
        "{uris:?}"
    );
    assert!(uris[2].contains("sas_key=***"), "{uris:?}");

    // Every answer and error of every dataset.
    for dataset in ["web", "s3", "az", "gcs"] {
        let layers = client
            .list_layers(authorized(pb::ListLayersRequest {
                dataset: dataset.to_string(),
            }))
            .await;
        let neuron = client
            .get_neuron_summary(authorized(pb::GetNeuronSummaryRequest {
                dataset: dataset.to_string(),
                neuron_id: Some(activations_client::neuron_id(0, 1)),
            }))
            .await;
        for (what, text) in [
            ("ListLayers", format!("{layers:?}")),
            ("GetNeuronSummary", format!("{neuron:?}")),
        ] {
            assert_hidden(&format!("{what} of {dataset}"), &text);
        }
        if dataset == "web" {
            // The location is in the message and in ErrorInfo, redacted.
            let refused = layers.unwrap_err();
            assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
            let details = String::from_utf8_lossy(refused.details()).to_string();
            assert!(
                refused.message().contains(&web_host),
                "{}",
                refused.message()
            );
            assert_hidden("ErrorInfo of web", &details);
        }
    }

    // The CLI's listing of the datasets.
    let mut out = Vec::new();
    cli::run(
        Cli::parse_from([
            "activations",
            "--server",
            &server.url,
            "--token",
            TOKEN,
            "datasets",
        ]),
        &mut out,
    )
    .await
    .unwrap();
    let printed = String::from_utf8(out).unwrap();
    assert!(printed.contains("s3://bucket/p"), "{printed}");
    assert_hidden("the CLI's datasets", &printed);

    // Thousands of made-up paths without a token: refused, and the metrics stay as they were.
    let metrics = server.metrics_url.clone().unwrap();
    let probe = |i: usize| format!("/made.up.Service{i}/AnyMethod{i}");
    for i in 0..10 {
        raw_call(&channel, &probe(i), &[], frame(0, 0, &[])).await;
    }
    let before = Scrape::fetch(&metrics).await;
    for i in 10..3000 {
        let status = raw_call(&channel, &probe(i), &[], frame(0, 0, &[])).await;
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    let after = Scrape::fetch(&metrics).await;
    let series = |scrape: &Scrape| scrape.text.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(
        series(&after),
        series(&before),
        "unknown paths added series"
    );
    assert!(
        !after.text.contains("made.up"),
        "a made-up path became a label"
    );
    assert_hidden("the metrics page", &after.text);

    // The log at its most verbose level.
    assert_hidden("the log", &server.log());
    assert!(
        server.log().contains("s3://bucket/p"),
        "the log names the datasets"
    );
}

#[tokio::test]
async fn a_refused_uri_is_reported_without_its_secret() {
    // Each stops the server at startup: a setting Azure does not know (a SAS URL pasted
    // whole), a setting a web server's URI cannot have, a GCS key that is not one.
    for (dataset, named) in [
        (
            "az=https://acct.blob.core.windows.net/c/p?sv=2022&sig=AZSASSIG77",
            "\"sv\"",
        ),
        (
            "web=http://webuser77:WEBPASSWORD77@127.0.0.1:9/data?layers=1&neurons=1&token=S3SECRETKEY77",
            "\"token\"",
        ),
        (
            "gcs=gs://bucket/p?service_account_key=GCSKEY77&layers=1&neurons=1&layout=flat",
            "service account",
        ),
    ] {
        let output = std::process::Command::new(activations_e2e::tools::server_binary())
            .args([
                "--listen",
                "127.0.0.1:0",
                "--log",
                "trace",
                "--dataset",
                dataset,
            ])
            .output()
            .unwrap();
        assert!(!output.status.success(), "{dataset} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(named), "the refusal says why: {stderr}");
        assert_hidden("the startup error", &stderr);
        assert_hidden(
            "the startup output",
            &String::from_utf8_lossy(&output.stdout),
        );
    }
}
