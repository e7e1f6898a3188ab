//! What the service must answer, computed from the dataset's files with the server's parser and
//! split arithmetic, independently of any server.
//!
//! Holding every parsed neuron would take ~800 KB each, more than the server under test is
//! allowed; instead each record is kept as a 64-bit digest of its protobuf encoding (tokens,
//! activation bits, the optional fields), which any wrong token or activation bit changes.

use activations_proto::python_max;
use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hasher},
    path::Path,
};

use activations_client::pb;
use activations_format::{
    layout::Layout,
    neuron_json::parse_neuron_record,
    splits::{Source, Split, SplitPlan},
};
use prost::Message;

use crate::datagen::neuron_path;

/// The expected answers about one neuron.
#[derive(Debug, Clone)]
pub struct NeuronTruth {
    /// Digest of each `most_positive_activation_records` entry.
    pub top: Vec<u64>,
    /// Digest of each `random_sample` entry.
    pub random: Vec<u64>,
    /// The expected `GetNeuronSummary` answer, encoded.
    pub summary: Vec<u8>,
}

/// One record of a split as the service must send it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedRecord {
    pub source: pb::RecordSource,
    pub source_index: u32,
    pub digest: u64,
}

/// The expected answers about every neuron of a `layers x neurons` dataset.
#[derive(Debug)]
pub struct Truth {
    pub layers: u32,
    pub neurons: u32,
    by_neuron: HashMap<(u32, u32), NeuronTruth>,
}

impl Truth {
    /// Reads and parses every neuron file of the flat dataset in `dir`, on `threads` threads.
    ///
    /// # Errors
    ///
    /// A file cannot be read or is not a neuron record.
    pub fn load(dir: &Path, layers: u32, neurons: u32, threads: usize) -> Result<Truth, String> {
        let keys: Vec<(u32, u32)> = (0..layers)
            .flat_map(|l| (0..neurons).map(move |n| (l, n)))
            .collect();
        let chunk = keys.len().div_ceil(threads.max(1)).max(1);
        let parts = std::thread::scope(|scope| {
            let handles: Vec<_> = keys
                .chunks(chunk)
                .map(|keys| {
                    scope.spawn(move || {
                        keys.iter()
                            .map(|&(layer, neuron)| {
                                let path = dir.join(neuron_path(Layout::Flat, layer, neuron));
                                let bytes = std::fs::read(&path)
                                    .map_err(|e| format!("{}: {e}", path.display()))?;
                                let record = parse_neuron_record(&bytes)
                                    .map_err(|e| format!("{}: {e}", path.display()))?;
                                Ok(((layer, neuron), NeuronTruth::of(&record)))
                            })
                            .collect::<Result<Vec<_>, String>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("truth thread"))
                .collect::<Vec<_>>()
        });
        let mut by_neuron = HashMap::with_capacity(keys.len());
        for part in parts {
            by_neuron.extend(part?);
        }
        Ok(Truth {
            layers,
            neurons,
            by_neuron,
        })
    }

    /// The truth about neuron `layer/neuron`.
    pub fn neuron(&self, layer: u32, neuron: u32) -> Option<&NeuronTruth> {
        self.by_neuron.get(&(layer, neuron))
    }
}

impl NeuronTruth {
    /// The expected answers about `record`.
    pub fn of(record: &pb::NeuronRecord) -> NeuronTruth {
        NeuronTruth {
            top: record
                .most_positive_activation_records
                .iter()
                .map(digest)
                .collect(),
            random: record.random_sample.iter().map(digest).collect(),
            summary: expected_summary(record).encode_to_vec(),
        }
    }

    /// The records of `split` with `n` examples per split, in the Python order; `None` where
    /// the neuron has too few records (the service then answers `FAILED_PRECONDITION`).
    pub fn split(&self, split: Split, n: Option<u32>) -> Option<Vec<ExpectedRecord>> {
        let plan = SplitPlan::new(split, n, self.top.len(), self.random.len()).ok()?;
        Some(
            plan.entries()
                .map(|(source, index)| match source {
                    Source::TopActivating => ExpectedRecord {
                        source: pb::RecordSource::TopActivating,
                        source_index: index as u32,
                        digest: self.top[index],
                    },
                    Source::Random => ExpectedRecord {
                        source: pb::RecordSource::Random,
                        source_index: index as u32,
                        digest: self.random[index],
                    },
                })
                .collect(),
        )
    }
}

/// A received record as an [`ExpectedRecord`], to compare.
pub fn received(record: &pb::SplitActivationRecord) -> ExpectedRecord {
    ExpectedRecord {
        source: record.source(),
        source_index: record.source_index,
        digest: record.record.as_ref().map_or(0, digest),
    }
}

/// 64 bits of SipHash over the record's protobuf encoding.
pub fn digest(record: &pb::ActivationRecord) -> u64 {
    let mut hasher = DefaultHasher::new();
    hasher.write(&record.encode_to_vec());
    hasher.finish()
}

/// `GetNeuronSummary` of `record`, computed here rather than by the server's code: the moments
/// and boundaries as stored, Python's `max` over the top records, the counts.
fn expected_summary(record: &pb::NeuronRecord) -> pb::NeuronSummary {
    let buckets: &[pb::ActivationRecordList] = record
        .random_sample_by_quantile
        .as_ref()
        .map_or(&[], |q| &q.quantiles);
    let token_count = record
        .most_positive_activation_records
        .iter()
        .chain(&record.random_sample)
        .chain(buckets.iter().flat_map(|b| &b.records))
        .map(|r| r.tokens.len() as u64)
        .sum();
    pb::NeuronSummary {
        neuron_id: record.neuron_id,
        mean: record.mean,
        variance: record.variance,
        skewness: record.skewness,
        kurtosis: record.kurtosis,
        quantile_boundaries: record.quantile_boundaries.clone(),
        max_activation: python_max(
            record
                .most_positive_activation_records
                .iter()
                .filter_map(|r| python_max(r.activations.iter().copied())),
        ),
        most_positive_activation_record_count: record.most_positive_activation_records.len() as u32,
        random_sample_count: record.random_sample.len() as u32,
        random_sample_by_quantile_counts: buckets.iter().map(|b| b.records.len() as u32).collect(),
        token_count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datagen::neuron_record;

    #[test]
    fn valid_split_is_top_then_random_slices_with_their_digests() {
        let record = neuron_record(0, 1, 2);
        let truth = NeuronTruth::of(&record);
        let valid = truth.split(Split::Valid, Some(3)).unwrap();
        let sources: Vec<_> = valid.iter().map(|r| (r.source, r.source_index)).collect();
        use pb::RecordSource::{Random, TopActivating};
        assert_eq!(
            sources,
            [
                (TopActivating, 2),
                (TopActivating, 6),
                (TopActivating, 10),
                (Random, 1),
                (Random, 4),
                (Random, 7)
            ]
        );
        assert_eq!(
            valid[0].digest,
            digest(&record.most_positive_activation_records[2])
        );
        assert!(truth.split(Split::Train, Some(1000)).is_none());
    }

    #[test]
    fn one_flipped_activation_bit_changes_the_digest() {
        let record = neuron_record(0, 0, 0);
        let mut changed = record.random_sample[0].clone();
        changed.activations[5] = f32::from_bits(changed.activations[5].to_bits() ^ 1);
        assert_ne!(digest(&record.random_sample[0]), digest(&changed));
    }
}
