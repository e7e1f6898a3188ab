//! Every error path of a real `activations-server` process, swept: each failed call, whether
//! the service or tonic beneath it refused it, carries the code the contract gives it, an
//! `ErrorInfo` with its reason, and a message and details of bounded size.

use std::io::Write as _;

use activations_client::{Code, ErrorReason, StatusError, neuron_id, pb};
use activations_e2e::{
    fixtures::REAL_NEURON,
    grpc_raw::{frame, raw_call},
    process::ServerProcess,
};
use bytes::Bytes;
use futures::StreamExt;
use pb::activation_service_client::ActivationServiceClient;
use prost::Message;
use tonic::{Status, transport::Channel};

const SERVICE: &str = "/neuron_explainer.activations.v1.ActivationService";

/// Checks that `status` has `code` and an `ErrorInfo` with `reason`, and that its message and
/// details stay small.
fn assert_explained(probe: &str, status: &Status, code: Code, reason: ErrorReason) {
    assert_eq!(status.code(), code, "{probe}: {status:?}");
    let error = StatusError::from(status.clone());
    assert_eq!(error.error_reason(), Some(reason), "{probe}: {status:?}");
    let size = status.message().len() + status.details().len();
    assert!(size < 2048, "{probe}: {size} bytes of message and details");
}

/// A raw request, and the status it must end with.
struct Probe<'a> {
    what: &'a str,
    path: &'a str,
    headers: Vec<(&'static str, &'a str)>,
    body: Bytes,
    code: Code,
    reason: ErrorReason,
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_carries_its_code_reason_and_a_bounded_message() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("0")).unwrap();
    std::fs::write(dir.path().join("0/1.json"), REAL_NEURON).unwrap();
    std::fs::write(dir.path().join("0/2.json"), b"{\"dataset\": ").unwrap();
    std::fs::create_dir(dir.path().join("0/3.json")).unwrap();
    let server = ServerProcess::start(&[
        "--dataset".to_string(),
        format!("local={}", dir.path().display()),
        "--max-request-bytes".to_string(),
        "64KiB".to_string(),
        // Between the size of neuron 0/1's splits message (about 64 KiB) and its gzipped size
        // (about 35 KiB).
        "--max-response-bytes".to_string(),
        "48KiB".to_string(),
    ]);
    let channel = Channel::from_shared(server.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();

    // What tonic refuses before the service sees the call.
    let get = format!("{SERVICE}/GetNeuronRecord");
    let valid = pb::GetNeuronRecordRequest {
        dataset: String::new(),
        neuron_id: Some(neuron_id(0, 1)),
    }
    .encode_to_vec();
    // Field 1 (dataset, a string) sent as a varint: not a GetNeuronRecordRequest.
    let wrong_type = [0x08, 0x96, 0x01];
    let no_such_method = format!("{SERVICE}/GetNeuronRecords");
    let large = vec![b'x'; 128 << 10];
    let bomb = gzip(
        &pb::GetNeuronRecordRequest {
            dataset: "x".repeat(1 << 20),
            neuron_id: None,
        }
        .encode_to_vec(),
    );
    let probes = [
        Probe {
            what: "bytes of another message",
            path: &get,
            headers: vec![],
            body: frame(0, wrong_type.len(), &wrong_type),
            code: Code::InvalidArgument,
            reason: ErrorReason::MalformedRequest,
        },
        Probe {
            what: "a frame cut short",
            path: &get,
            headers: vec![],
            body: frame(0, 100, &valid),
            code: Code::InvalidArgument,
            reason: ErrorReason::MalformedRequest,
        },
        Probe {
            what: "no message at all",
            path: &get,
            headers: vec![],
            body: Bytes::new(),
            code: Code::InvalidArgument,
            reason: ErrorReason::MalformedRequest,
        },
        Probe {
            what: "a compression flag that is neither 0 nor 1",
            path: &get,
            headers: vec![],
            body: frame(7, valid.len(), &valid),
            code: Code::InvalidArgument,
            reason: ErrorReason::MalformedRequest,
        },
        Probe {
            what: "compressed, without saying how",
            path: &get,
            headers: vec![],
            body: frame(1, valid.len(), &valid),
            code: Code::InvalidArgument,
            reason: ErrorReason::MalformedRequest,
        },
        Probe {
            what: "gzip that is not gzip",
            path: &get,
            headers: vec![("grpc-encoding", "gzip")],
            body: frame(1, valid.len(), &valid),
            code: Code::InvalidArgument,
            reason: ErrorReason::MalformedRequest,
        },
        Probe {
            what: "a compression the server does not take",
            path: &get,
            headers: vec![("grpc-encoding", "br")],
            body: frame(1, valid.len(), &valid),
            code: Code::Unimplemented,
            reason: ErrorReason::MalformedRequest,
        },
        Probe {
            what: "a message above the request limit",
            path: &get,
            headers: vec![],
            body: frame(0, large.len(), &large),
            code: Code::ResourceExhausted,
            reason: ErrorReason::RequestTooLarge,
        },
        Probe {
            what: "a small gzip that decompresses above the request limit",
            path: &get,
            headers: vec![("grpc-encoding", "gzip")],
            body: frame(1, bomb.len(), &bomb),
            code: Code::ResourceExhausted,
            reason: ErrorReason::RequestTooLarge,
        },
        Probe {
            what: "a method the service does not have",
            path: &no_such_method,
            headers: vec![],
            body: frame(0, valid.len(), &valid),
            code: Code::Unimplemented,
            reason: ErrorReason::UnknownMethod,
        },
        Probe {
            what: "a service the server does not have",
            path: "/made.up.Service/AnyMethod",
            headers: vec![],
            body: frame(0, valid.len(), &valid),
            code: Code::Unimplemented,
            reason: ErrorReason::UnknownMethod,
        },
    ];
    for probe in probes {
        let status = raw_call(&channel, probe.path, &probe.headers, probe.body).await;
        assert_explained(probe.what, &status, probe.code, probe.reason);
    }
    let compressed = raw_call(
        &channel,
        &get,
        &[("grpc-encoding", "br")],
        frame(1, valid.len(), &valid),
    )
    .await;
    let accepted = compressed.metadata().get("grpc-accept-encoding");
    assert!(accepted.is_some(), "{compressed:?}");
    let unknown = raw_call(
        &channel,
        &format!("/{}/Method", "m".repeat(10_000)),
        &[],
        Bytes::new(),
    )
    .await;
    assert!(unknown.message().contains(SERVICE.trim_start_matches('/')));

    // What the service refuses.
    let mut client = ActivationServiceClient::new(channel.clone());
    let neuron = |layer, neuron| pb::GetNeuronSummaryRequest {
        dataset: String::new(),
        neuron_id: Some(neuron_id(layer, neuron)),
    };
    let summary_of = |request| {
        let mut client = client.clone();
        async move { client.get_neuron_summary(request).await.unwrap_err() }
    };
    let cases = [
        (
            "an unknown dataset",
            summary_of(pb::GetNeuronSummaryRequest {
                dataset: "elsewhere".to_string(),
                neuron_id: Some(neuron_id(0, 1)),
            })
            .await,
            Code::NotFound,
            ErrorReason::UnknownDataset,
        ),
        (
            "no neuron id",
            summary_of(pb::GetNeuronSummaryRequest::default()).await,
            Code::InvalidArgument,
            ErrorReason::InvalidArgument,
        ),
        (
            "a neuron without a file",
            summary_of(neuron(0, 9)).await,
            Code::NotFound,
            ErrorReason::NeuronNotFound,
        ),
        (
            "a corrupt file",
            summary_of(neuron(0, 2)).await,
            Code::DataLoss,
            ErrorReason::CorruptNeuronFile,
        ),
        (
            "a directory at a neuron's path",
            summary_of(neuron(0, 3)).await,
            Code::FailedPrecondition,
            ErrorReason::UnreadableNeuronFile,
        ),
        (
            "a record above the response limit",
            client
                .get_neuron_record(pb::GetNeuronRecordRequest {
                    dataset: String::new(),
                    neuron_id: Some(neuron_id(0, 1)),
                })
                .await
                .unwrap_err(),
            Code::OutOfRange,
            ErrorReason::ResponseTooLarge,
        ),
        (
            "a layer without neurons",
            client
                .list_neurons(pb::ListNeuronsRequest {
                    layer_index: 7,
                    ..Default::default()
                })
                .await
                .unwrap_err(),
            Code::NotFound,
            ErrorReason::LayerNotFound,
        ),
    ];
    for (probe, status, code, reason) in &cases {
        assert_explained(probe, status, *code, *reason);
    }

    // Refusals inside a stream: more records than the neuron has, and a deadline.
    let mut records = client
        .stream_activation_records(pb::StreamActivationRecordsRequest {
            dataset: String::new(),
            neuron_id: Some(neuron_id(0, 1)),
            split: pb::Split::Train as i32,
            slice_params: Some(pb::ActivationRecordSliceParams {
                n_examples_per_split: Some(10_000),
            }),
        })
        .await
        .map(tonic::Response::into_inner);
    let too_many = match records {
        Err(status) => status,
        Ok(ref mut stream) => loop {
            match stream.next().await {
                Some(Ok(_)) => {}
                Some(Err(status)) => break status,
                None => panic!("10,000 records of a neuron with fewer were served"),
            }
        },
    };
    assert_explained(
        "too many records",
        &too_many,
        Code::FailedPrecondition,
        ErrorReason::NotEnoughRecords,
    );
    // A neuron's splits in one message above the response limit, though not once gzipped:
    // the limit is on the message the server builds.
    let mut whole = client
        .clone()
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .stream_neuron_splits(pb::StreamNeuronSplitsRequest {
            selection: Some(pb::NeuronSelection {
                selection: Some(pb::neuron_selection::Selection::Neurons(pb::NeuronIdList {
                    neuron_ids: vec![neuron_id(0, 1)],
                })),
            }),
            splits: [
                pb::Split::Train,
                pb::Split::Calibration,
                pb::Split::Valid,
                pb::Split::Test,
            ]
            .map(|split| split as i32)
            .to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let oversized = loop {
        match whole.next().await {
            Some(Ok(message)) => assert!(message.encoded_len() <= 48 << 10),
            Some(Err(status)) => break status,
            None => panic!("a message above the response limit was sent"),
        }
    };
    assert_explained(
        "a stream message above the response limit",
        &oversized,
        Code::OutOfRange,
        ErrorReason::ResponseTooLarge,
    );
    let mut request = tonic::Request::new(pb::StreamNeuronSplitsRequest {
        selection: Some(pb::NeuronSelection {
            selection: Some(pb::neuron_selection::Selection::Neurons(pb::NeuronIdList {
                // More than 100 ms of messages, under the request limit of this server.
                neuron_ids: vec![neuron_id(0, 1); 5_000],
            })),
        }),
        splits: vec![pb::Split::Valid as i32],
        slice_params: Some(pb::ActivationRecordSliceParams {
            n_examples_per_split: Some(1),
        }),
        ..Default::default()
    });
    request.set_timeout(std::time::Duration::from_millis(100));
    let late = match client.stream_neuron_splits(request).await {
        Err(status) => status,
        Ok(response) => {
            let mut stream = response.into_inner();
            loop {
                match stream.next().await {
                    Some(Ok(_)) => {}
                    Some(Err(status)) => break status,
                    None => panic!("5,000 neurons within 100 ms"),
                }
            }
        }
    };
    assert_explained(
        "a deadline",
        &late,
        Code::DeadlineExceeded,
        ErrorReason::DeadlineExceeded,
    );
}
