//! Fuzzes the neuron-file loader: any bytes either fail with a `ParseError` inside the input,
//! or decode into a record whose activation records pair every token with an activation and
//! that survives writing it back and reading it again.

#![no_main]

use activations_proto::pb;
use activations_format::neuron_json::{ParseError, parse_neuron_record, write_neuron_record};
use libfuzzer_sys::fuzz_target;

/// The loader under test, in one place: a new entry point of the loader is fuzzed by
/// pointing this at it.
fn load(data: &[u8]) -> Result<pb::NeuronRecord, ParseError> {
    parse_neuron_record(data)
}

fn all_records(record: &pb::NeuronRecord) -> impl Iterator<Item = &pb::ActivationRecord> {
    let by_quantile = record
        .random_sample_by_quantile
        .iter()
        .flat_map(|by_quantile| &by_quantile.quantiles)
        .flat_map(|bucket| &bucket.records);
    record
        .random_sample
        .iter()
        .chain(by_quantile)
        .chain(&record.most_positive_activation_records)
}

/// Debug output prints every NaN as `NaN` and tells all other floats apart (shortest
/// round-trip digits, `-0.0`), so equal Debug strings mean equal records with NaN == NaN.
fn nan_aware(record: &pb::NeuronRecord) -> String {
    format!("{record:?}")
}

fuzz_target!(|data: &[u8]| {
    let record = match load(data) {
        Ok(record) => record,
        Err(error) => {
            assert!(
                error.offset <= data.len(),
                "error offset {} past the input's {} bytes: {error}",
                error.offset,
                data.len()
            );
            return;
        }
    };
    for (i, ar) in all_records(&record).enumerate() {
        assert_eq!(
            ar.tokens.len(),
            ar.activations.len(),
            "record {i}: tokens and activations differ in length"
        );
    }
    let written = write_neuron_record(&record);
    let again = load(written.as_bytes())
        .unwrap_or_else(|error| panic!("the written record does not parse: {error}\n{written}"));
    assert_eq!(
        nan_aware(&again),
        nan_aware(&record),
        "the written record parses into a different one"
    );
});
