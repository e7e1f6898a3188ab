//! What the split and encode benchmarks share: the real neuron file, and the response messages
//! the service builds from it.

use activations_proto::pb;
use activations_server::{
    neuron_json::parse_neuron_record,
    splits::{Source, Split, SplitPlan},
};

/// The public GPT-2 XL file of layer 1, neuron 1 (235,924 bytes, 200 records): the same bytes
/// the server bundles as its sample dataset.
pub const FIXTURE: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../data/gpt2-xl-sample/collated-activations/1/1.json"
));

/// The parsed fixture, as the service's cache holds it.
pub fn record() -> pb::NeuronRecord {
    parse_neuron_record(FIXTURE).expect("the bundled neuron file parses")
}

/// The messages `StreamActivationRecords` sends for one split, built as the service builds
/// them: plan the split, then clone each record out of the shared neuron.
pub fn split_messages(
    record: &pb::NeuronRecord,
    split: Split,
    n: Option<u32>,
) -> Vec<pb::SplitActivationRecord> {
    let plan = SplitPlan::new(
        split,
        n,
        record.most_positive_activation_records.len(),
        record.random_sample.len(),
    )
    .expect("the fixture holds 50 top and 50 random records, enough for n <= 12");
    plan.entries()
        .map(|(source, index)| {
            let list = match source {
                Source::TopActivating => &record.most_positive_activation_records,
                Source::Random => &record.random_sample,
            };
            pb::SplitActivationRecord {
                record: Some(list[index].clone()),
                source: pb::RecordSource::from(source).into(),
                source_index: index as u32,
            }
        })
        .collect()
}

/// The message `StreamNeuronSplits` sends for one neuron whose splits fit in one message
/// (1 MiB by default, far more than four splits of this neuron take).
pub fn neuron_splits(
    record: &pb::NeuronRecord,
    splits: &[Split],
    n: Option<u32>,
) -> pb::NeuronSplits {
    pb::NeuronSplits {
        neuron_id: record.neuron_id,
        splits: splits
            .iter()
            .map(|&split| pb::SplitRecords {
                split: pb::Split::from(split).into(),
                records: split_messages(record, split, n),
            })
            .collect(),
        error: None,
        continues: false,
        // As long as the cursors the service issues (base64 of about 26 bytes).
        cursor: "YzEKMDEyMzQ1Njc4OWFiY2RlZgoxCjEKMQ".to_string(),
    }
}
