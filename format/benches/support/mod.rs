//! What the split and encode benchmarks share: the real neuron file, and the response messages
//! the service builds from it.

use activations_format::{
    neuron_json::parse_neuron,
    splits::{Split, SplitPlan, split_record},
};
use activations_proto::wire;

/// The public GPT-2 XL file of layer 1, neuron 1 (235,924 bytes, 200 records): the same bytes
/// the server bundles as its sample dataset.
pub const FIXTURE: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../data/gpt2-xl-sample/collated-activations/1/1.json"
));

/// The parsed fixture, as the service's cache holds it: records encoded, in one buffer.
pub fn record() -> wire::NeuronRecord {
    parse_neuron(FIXTURE).expect("the bundled neuron file parses")
}

/// The messages `StreamActivationRecords` sends for one split, built as the service builds
/// them: plan the split, then share each encoded record of the neuron (a reference count, no
/// copy).
pub fn split_messages(
    record: &wire::NeuronRecord,
    split: Split,
    n: Option<u32>,
) -> Vec<wire::SplitActivationRecord> {
    let plan = SplitPlan::for_record(split, n, record)
        .expect("the fixture holds 50 top and 50 random records, enough for n <= 12");
    plan.entries()
        .map(|(source, index)| split_record(record, source, index))
        .collect()
}

/// The message `StreamNeuronSplits` sends for one neuron whose splits fit in one message
/// (1 MiB by default, far more than four splits of this neuron take).
pub fn neuron_splits(
    record: &wire::NeuronRecord,
    splits: &[Split],
    n: Option<u32>,
) -> wire::NeuronSplits {
    wire::NeuronSplits {
        neuron_id: record.neuron_id,
        splits: splits
            .iter()
            .map(|&split| wire::SplitRecords {
                split: wire::Split::from(split).into(),
                records: split_messages(record, split, n),
            })
            .collect(),
        error: None,
        continues: false,
        // As long as the cursors the service issues (base64 of about 26 bytes).
        cursor: "YzEKMDEyMzQ1Njc4OWFiY2RlZgoxCjEKMQ".to_string(),
    }
}
