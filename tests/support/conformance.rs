//! The storage conformance suite: one small dataset, written in either layout, and one check
//! that a server reading it from any backend answers exactly as a server reading it from
//! local disk does (local disk itself is checked against the Python reference loader).

use std::path::Path;

use activations_client::{ActivationsClient, Code, Split, neuron_id, pb};
use futures::TryStreamExt;
use prost::Message;

use crate::fixtures::{self, REAL_NEURON};

/// Layers of the conformance dataset: `0..LAYERS`.
pub const LAYERS: u32 = 2;
/// Neurons of each layer: `0..NEURONS`.
pub const NEURONS: u32 = 3;
/// The neuron whose file is not a neuron record.
pub const CORRUPT: (u32, u32) = (0, 2);
/// The neuron that is the real public file.
pub const REAL: (u32, u32) = (1, 1);
/// The shape declaration matching the dataset.
pub const SHAPE_QUERY: &str = "layers=2&neurons=3";

/// Writes the dataset below `root`: layers `0..2`, neurons `0..3`; (1, 1) is the real public
/// file, (0, 2) a truncated one, the rest synthetic.
pub fn write_dataset(root: &Path, neurons_layout: bool) {
    for layer in 0..LAYERS {
        for neuron in 0..NEURONS {
            let bytes = match (layer, neuron) {
                REAL => REAL_NEURON.to_vec(),
                CORRUPT => REAL_NEURON[..REAL_NEURON.len() / 2].to_vec(),
                _ => fixtures::to_json(&fixtures::neuron(
                    u64::from(layer * 100 + neuron),
                    layer,
                    neuron,
                    40,
                    30,
                )),
            };
            fixtures::write_neuron(root, neurons_layout, layer, neuron, &bytes);
        }
    }
}

fn code(error: &activations_client::Error) -> Code {
    error
        .code()
        .unwrap_or_else(|| panic!("expected a status, got {error}"))
}

async fn split_bytes(
    client: &ActivationsClient,
    layer: u32,
    neuron: u32,
    split: Split,
    n: Option<u32>,
) -> Vec<Vec<u8>> {
    let records: Vec<pb::SplitActivationRecord> = client
        .stream_activation_records(neuron_id(layer, neuron), split, n)
        .await
        .unwrap_or_else(|e| panic!("{layer}/{neuron} {split:?} n={n:?}: {e}"))
        .try_collect()
        .await
        .unwrap_or_else(|e| panic!("{layer}/{neuron} {split:?} n={n:?}: {e}"));
    records.iter().map(Message::encode_to_vec).collect()
}

/// Checks that `client` (a dataset on some backend) answers every call on the conformance
/// dataset exactly as `reference` (the same files on local disk) does. `label` names the
/// backend in failures. With `listable == false` the listings are not compared (the dataset
/// has no shape declared); [`assert_unlistable`] covers that case.
pub async fn assert_conforms(
    label: &str,
    client: &ActivationsClient,
    reference: &ActivationsClient,
    listable: bool,
) {
    if listable {
        let layers = client
            .sorted_layers()
            .await
            .unwrap_or_else(|e| panic!("{label}: layers: {e}"));
        assert_eq!(layers, (0..LAYERS).collect::<Vec<_>>(), "{label}: layers");
        for layer in 0..LAYERS {
            let neurons: Vec<u32> = client
                .sorted_neuron_indices(layer)
                .try_collect()
                .await
                .unwrap_or_else(|e| panic!("{label}: neurons of {layer}: {e}"));
            assert_eq!(
                neurons,
                (0..NEURONS).collect::<Vec<_>>(),
                "{label}: layer {layer}"
            );
        }
    }
    for layer in 0..LAYERS {
        for neuron in 0..NEURONS {
            let at = format!("{label}: neuron {layer}/{neuron}");
            assert!(
                client
                    .neuron_exists(neuron_id(layer, neuron))
                    .await
                    .unwrap(),
                "{at} exists"
            );
            if (layer, neuron) == CORRUPT {
                let err = client.load_neuron(layer, neuron).await.unwrap_err();
                assert_eq!(code(&err), Code::DataLoss, "{at}: {err}");
                continue;
            }
            let record = client
                .load_neuron(layer, neuron)
                .await
                .unwrap_or_else(|e| panic!("{at}: {e}"));
            let expected = reference.load_neuron(layer, neuron).await.unwrap();
            assert_eq!(
                record.encode_to_vec(),
                expected.encode_to_vec(),
                "{at}: record"
            );
            for split in [Split::Train, Split::Calibration, Split::Valid, Split::Test] {
                for n in [None, Some(1), Some(5)] {
                    assert_eq!(
                        split_bytes(client, layer, neuron, split, n).await,
                        split_bytes(reference, layer, neuron, split, n).await,
                        "{at}: {split:?} n={n:?}"
                    );
                }
            }
            let summary = client
                .neuron_summary(neuron_id(layer, neuron))
                .await
                .unwrap();
            let expected = reference
                .neuron_summary(neuron_id(layer, neuron))
                .await
                .unwrap();
            assert_eq!(
                summary.encode_to_vec(),
                expected.encode_to_vec(),
                "{at}: summary"
            );
        }
    }
    for (layer, neuron) in [(0, NEURONS), (LAYERS, 0)] {
        let at = format!("{label}: missing neuron {layer}/{neuron}");
        assert!(
            !client
                .neuron_exists(neuron_id(layer, neuron))
                .await
                .unwrap(),
            "{at}"
        );
        let err = client.load_neuron(layer, neuron).await.unwrap_err();
        assert_eq!(code(&err), Code::NotFound, "{at}: {err}");
    }
}

/// Checks that a dataset on a store that cannot be listed, with no shape declared, still
/// reads neurons but answers the listings with FAILED_PRECONDITION saying how to declare one.
pub async fn assert_unlistable(label: &str, client: &ActivationsClient) {
    let err = client.sorted_layers().await.unwrap_err();
    assert_eq!(code(&err), Code::FailedPrecondition, "{label}: {err}");
    let message = err.to_string();
    for hint in ["layers=", "manifest.json"] {
        assert!(
            message.contains(hint),
            "{label}: {hint} missing from {message}"
        );
    }
    let record = client.load_neuron(REAL.0, REAL.1).await.unwrap();
    assert_eq!(record.random_sample.len(), 50, "{label}");
}
