//! JSON parsers compared on a neuron-explainer `NeuronRecord` file.
//!
//! The general-purpose parsers decode into the same typed target, [`NeuronRecord`], which mirrors
//! the file the way the Python dataclasses do (`dataclass_name` keys are skipped as unknown
//! fields). The service's parser decodes into its protobuf messages instead, which hold the same
//! values. Each parser is one function here, so the benchmark and the tests call the same code.
//!
//! Python writes `NaN`, `Infinity` and `-Infinity` as bare literals. `serde_json`, `sonic-rs`
//! and `simd-json` reject them (see the tests), so on a file that holds one only the service's
//! parser works; the benchmark's fixture holds none.

use activations_proto::{pb, wire};
use serde::{Deserialize, de::IgnoredAny};

/// One neuron file, typed as `neuron_explainer.activations.activations.NeuronRecord`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct NeuronRecord {
    pub neuron_id: NeuronId,
    #[serde(default)]
    pub random_sample: Vec<ActivationRecord>,
    #[serde(default)]
    pub random_sample_by_quantile: Option<Vec<Vec<ActivationRecord>>>,
    #[serde(default)]
    pub quantile_boundaries: Option<Vec<Option<f64>>>,
    pub mean: Option<f64>,
    pub variance: Option<f64>,
    pub skewness: Option<f64>,
    pub kurtosis: Option<f64>,
    #[serde(default)]
    pub most_positive_activation_records: Vec<ActivationRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct NeuronId {
    pub layer_index: u32,
    pub neuron_index: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ActivationRecord {
    pub tokens: Vec<String>,
    pub activations: Vec<f32>,
}

/// The service's own parser (`NaN` literals and all), into the form it serves and caches:
/// each record's protobuf encoding, in one buffer per neuron.
pub fn service(bytes: &[u8]) -> wire::NeuronRecord {
    activations_format::neuron_json::parse_neuron(bytes).expect("the service parses it")
}

/// The service's parser, then decoded into typed messages (a `String` per token, as the
/// structs of the other parsers hold them).
pub fn service_typed(bytes: &[u8]) -> pb::NeuronRecord {
    activations_format::neuron_json::parse_neuron_record(bytes).expect("the service parses it")
}

/// `serde_json` into the typed record.
pub fn serde_json_typed(bytes: &[u8]) -> NeuronRecord {
    serde_json::from_slice(bytes).expect("serde_json parses it")
}

/// `serde_json` validating only, building nothing: a floor for a parser that reads every byte.
pub fn serde_json_ignored_any(bytes: &[u8]) -> IgnoredAny {
    serde_json::from_slice(bytes).expect("serde_json parses it")
}

/// `sonic-rs` (SIMD) into the typed record, through its serde-compatible deserializer.
pub fn sonic_rs_typed(bytes: &[u8]) -> NeuronRecord {
    sonic_rs::from_slice(bytes).expect("sonic-rs parses it")
}

/// `simd-json` into the typed record, through its serde API. It parses in place, so it needs a
/// mutable copy of the input.
pub fn simd_json_typed(bytes: &mut [u8]) -> NeuronRecord {
    simd_json::serde::from_slice(bytes).expect("simd-json parses it")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &[u8] =
        include_bytes!("../../../data/gpt2-xl-sample/collated-activations/1/1.json");

    /// The service's record in the typed shape, to compare the parsers' answers.
    fn typed(record: &pb::NeuronRecord) -> NeuronRecord {
        let records = |list: &[pb::ActivationRecord]| -> Vec<ActivationRecord> {
            list.iter()
                .map(|r| ActivationRecord {
                    tokens: r.tokens.clone(),
                    activations: r.activations.clone(),
                })
                .collect()
        };
        let id = record.neuron_id.expect("the fixture has a neuron_id");
        NeuronRecord {
            neuron_id: NeuronId {
                layer_index: id.layer_index,
                neuron_index: id.neuron_index,
            },
            random_sample: records(&record.random_sample),
            random_sample_by_quantile: record
                .random_sample_by_quantile
                .as_ref()
                .map(|q| q.quantiles.iter().map(|l| records(&l.records)).collect()),
            quantile_boundaries: record
                .quantile_boundaries
                .as_ref()
                .map(|b| b.boundaries.iter().map(|v| v.value).collect()),
            mean: record.mean,
            variance: record.variance,
            skewness: record.skewness,
            kurtosis: record.kurtosis,
            most_positive_activation_records: records(&record.most_positive_activation_records),
        }
    }

    #[test]
    fn every_parser_reads_the_same_values() {
        let expected = typed(&service_typed(FIXTURE));
        assert_eq!(expected.most_positive_activation_records.len(), 50);
        assert_eq!(serde_json_typed(FIXTURE), expected);
        assert_eq!(sonic_rs_typed(FIXTURE), expected);
        assert_eq!(simd_json_typed(&mut FIXTURE.to_vec()), expected);
    }

    #[test]
    fn only_the_service_reads_nan_literals() {
        let text = std::str::from_utf8(FIXTURE).unwrap();
        let with_nan = text.replacen("\"mean\": -0.0499", "\"mean\": NaN", 1);
        assert_ne!(with_nan, text, "the fixture's mean is -0.0499");
        let bytes = with_nan.as_bytes();
        assert!(service(bytes).mean.unwrap().is_nan());
        assert!(serde_json::from_slice::<NeuronRecord>(bytes).is_err());
        assert!(sonic_rs::from_slice::<NeuronRecord>(bytes).is_err());
        assert!(simd_json::serde::from_slice::<NeuronRecord>(&mut bytes.to_vec()).is_err());
    }
}
