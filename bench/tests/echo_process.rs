//! The echo ceiling as the load generator runs it: the `activations-echo` binary, fed the
//! captured messages on stdin, answering the SDK.

use activations_bench::{echo::EchoService, launcher::Launcher};
use activations_client::{ActivationsClient, Split, neuron_id, pb};

fn records() -> Vec<pb::SplitActivationRecord> {
    (0..4)
        .map(|i| pb::SplitActivationRecord {
            record: Some(pb::ActivationRecord {
                tokens: vec![format!("tok{i}"), "é".to_string()],
                activations: vec![i as f32, -0.5],
                ..Default::default()
            }),
            source: pb::RecordSource::TopActivating.into(),
            source_index: i,
        })
        .collect()
}

#[tokio::test]
async fn the_echo_process_replays_the_messages_it_was_given() {
    let launcher = Launcher::External {
        url: "http://127.0.0.1:1".to_string(),
        pid: None,
        echo_binary: env!("CARGO_BIN_EXE_activations-echo").into(),
    };
    let records = records();
    let echo = launcher
        .start_echo(EchoService::new(&records))
        .await
        .unwrap();
    assert!(echo.pid.is_some(), "a process of its own");
    let client = ActivationsClient::connect(echo.url.clone()).await.unwrap();
    let want: Vec<_> = records.iter().filter_map(|r| r.record.clone()).collect();
    for _ in 0..2 {
        let got = client
            .activation_records(neuron_id(3, 7), Split::Train, None)
            .await
            .unwrap();
        assert_eq!(got, want);
    }
}

#[tokio::test]
async fn an_echo_binary_that_cannot_start_is_an_error_naming_it() {
    let launcher = Launcher::External {
        url: "http://127.0.0.1:1".to_string(),
        pid: None,
        echo_binary: "/nonexistent/activations-echo".into(),
    };
    let error = launcher
        .start_echo(EchoService::new(&records()))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("/nonexistent/activations-echo"),
        "{error}"
    );
}
