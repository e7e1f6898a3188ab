//! A neuron's address, and the facts the service derives from its record.

use std::fmt;

use activations_proto::{encoded::EncodedRecord, pb, python_max, wire};

/// Which neuron: a layer index and a neuron index within that layer.
///
/// The wire type `wire::NeuronId` is a prost message (not `Copy`, not `Hash`); this is the key the
/// server passes around and caches by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NeuronKey {
    pub layer: u32,
    pub neuron: u32,
}

impl NeuronKey {
    pub fn new(layer: u32, neuron: u32) -> Self {
        NeuronKey { layer, neuron }
    }
}

impl fmt::Display for NeuronKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "layer {} neuron {}", self.layer, self.neuron)
    }
}

impl From<&wire::NeuronId> for NeuronKey {
    fn from(id: &wire::NeuronId) -> Self {
        NeuronKey::new(id.layer_index, id.neuron_index)
    }
}

impl From<NeuronKey> for wire::NeuronId {
    fn from(key: NeuronKey) -> Self {
        wire::NeuronId {
            layer_index: key.layer,
            neuron_index: key.neuron,
        }
    }
}

impl From<&pb::NeuronId> for NeuronKey {
    fn from(id: &pb::NeuronId) -> Self {
        NeuronKey::new(id.layer_index, id.neuron_index)
    }
}

impl From<NeuronKey> for pb::NeuronId {
    fn from(key: NeuronKey) -> Self {
        pb::NeuronId {
            layer_index: key.layer,
            neuron_index: key.neuron,
        }
    }
}

/// `NeuronRecord.max_activation`: `max(max(r.activations) for r in top)` with Python's `max`.
///
/// Python's `max` keeps the first item and replaces it only by a strictly greater one, so a NaN
/// in first place wins and a later NaN is skipped; this follows that order exactly. Python
/// raises where there are no top-activating records (or an empty one); this answers `None` for
/// no records and skips empty ones.
pub fn max_activation(top: &[EncodedRecord]) -> Option<f32> {
    python_max(top.iter().filter_map(EncodedRecord::max_activation))
}

/// Every activation record of a neuron: the top-activating ones, the random sample, then the
/// quantile samples bucket by bucket.
pub fn activation_records(record: &wire::NeuronRecord) -> impl Iterator<Item = &EncodedRecord> {
    record
        .most_positive_activation_records
        .iter()
        .chain(&record.random_sample)
        .chain(
            record
                .random_sample_by_quantile
                .iter()
                .flat_map(|q| &q.quantiles)
                .flat_map(|bucket| &bucket.records),
        )
}

/// Everything about a neuron except its records.
pub fn summary(record: &wire::NeuronRecord) -> wire::NeuronSummary {
    wire::NeuronSummary {
        neuron_id: record.neuron_id,
        mean: record.mean,
        variance: record.variance,
        skewness: record.skewness,
        kurtosis: record.kurtosis,
        quantile_boundaries: record.quantile_boundaries.clone(),
        max_activation: max_activation(&record.most_positive_activation_records),
        most_positive_activation_record_count: count(record.most_positive_activation_records.len()),
        random_sample_count: count(record.random_sample.len()),
        random_sample_by_quantile_counts: record
            .random_sample_by_quantile
            .iter()
            .flat_map(|q| &q.quantiles)
            .map(|bucket| count(bucket.records.len()))
            .collect(),
        token_count: activation_records(record)
            .map(|r| u64::from(r.token_count()))
            .sum(),
    }
}

fn count(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(activations: &[f32]) -> EncodedRecord {
        EncodedRecord::from_record(&pb::ActivationRecord {
            tokens: activations.iter().map(|a| a.to_string()).collect(),
            activations: activations.to_vec(),
            ..Default::default()
        })
    }

    #[test]
    fn max_activation_is_the_raw_maximum_without_relu() {
        let top = [record(&[-3.0, -2.5]), record(&[-1.25, -4.0])];
        assert_eq!(max_activation(&top), Some(-1.25));
    }

    #[test]
    fn max_activation_is_absent_without_top_records() {
        assert_eq!(max_activation(&[]), None);
        assert_eq!(max_activation(&[record(&[])]), None);
    }

    #[test]
    fn max_activation_follows_python_max_with_nan() {
        // max([nan, 1.0]) is nan in Python; max([1.0, nan]) is 1.0.
        assert!(
            max_activation(&[record(&[f32::NAN, 1.0])])
                .unwrap()
                .is_nan()
        );
        assert_eq!(max_activation(&[record(&[1.0, f32::NAN])]), Some(1.0));
    }

    #[test]
    fn summary_counts_records_and_tokens() {
        let neuron = wire::NeuronRecord {
            neuron_id: Some(NeuronKey::new(3, 7).into()),
            most_positive_activation_records: vec![record(&[1.0, 2.0]), record(&[0.5])],
            random_sample: vec![record(&[0.0, 0.0, 0.0])],
            random_sample_by_quantile: Some(wire::RandomSampleByQuantile {
                quantiles: vec![
                    wire::ActivationRecordList {
                        records: vec![record(&[1.0])],
                    },
                    wire::ActivationRecordList { records: vec![] },
                ],
            }),
            mean: Some(f64::NAN),
            ..Default::default()
        };
        let summary = summary(&neuron);
        assert_eq!(summary.neuron_id, neuron.neuron_id);
        assert_eq!(summary.most_positive_activation_record_count, 2);
        assert_eq!(summary.random_sample_count, 1);
        assert_eq!(summary.random_sample_by_quantile_counts, vec![1, 0]);
        assert_eq!(summary.token_count, 2 + 1 + 3 + 1);
        assert_eq!(summary.max_activation, Some(2.0));
        assert!(summary.mean.unwrap().is_nan());
        assert_eq!(summary.variance, None);
    }
}
