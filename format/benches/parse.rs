//! Parsing one real neuron file: the work of every cache miss.
//!
//! Each parser is called through one small function, so another parse path benches by adding a
//! function and a line to `parse`. `serde_json` into `IgnoredAny` only validates the JSON and
//! builds nothing: a floor for any parser that reads every byte (the fixture holds no `NaN`
//! literal, which `serde_json` would refuse).

use activations_format::neuron_json::{parse_neuron, parse_neuron_record};
use activations_proto::{pb, wire};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::de::IgnoredAny;
use std::hint::black_box;

/// The public GPT-2 XL file of layer 1, neuron 1: the bytes the server bundles as its sample.
const FIXTURE: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../data/gpt2-xl-sample/collated-activations/1/1.json"
));

/// The service's parser, straight into the encoded records it serves and caches.
fn parse_service(bytes: &[u8]) -> wire::NeuronRecord {
    parse_neuron(bytes).expect("the fixture parses")
}

/// The same, then decoded into typed messages (a `String` per token), as tools use it.
fn parse_typed(bytes: &[u8]) -> pb::NeuronRecord {
    parse_neuron_record(bytes).expect("the fixture parses")
}

/// Validation only, no values kept.
fn scan_serde_json(bytes: &[u8]) -> IgnoredAny {
    serde_json::from_slice(bytes).expect("the fixture is standard JSON")
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Bytes(FIXTURE.len() as u64));
    group.bench_function("service", |b| b.iter(|| parse_service(black_box(FIXTURE))));
    group.bench_function("typed", |b| b.iter(|| parse_typed(black_box(FIXTURE))));
    group.bench_function("serde_json_ignored_any", |b| {
        b.iter(|| scan_serde_json(black_box(FIXTURE)))
    });
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
