//! Cutting a cached neuron into a split's response messages, as `StreamActivationRecords` and
//! `StreamNeuronSplits` do for every request: each message shares an encoded record of the
//! cached neuron.

mod support;

use activations_format::splits::Split;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn splits(c: &mut Criterion) {
    let record = support::record();
    let mut group = c.benchmark_group("splits");
    for n in [None, Some(5)] {
        let n_label = n.map_or("n=None".to_string(), |n| format!("n={n}"));
        for split in Split::ALL {
            let records = support::split_messages(&record, split, n).len();
            group.throughput(Throughput::Elements(records as u64));
            group.bench_function(BenchmarkId::new(split.name(), &n_label), |b| {
                b.iter(|| support::split_messages(black_box(&record), split, n))
            });
        }
    }
    // The bulk stream's message for one neuron: all four splits with n=5 (35 records).
    group.throughput(Throughput::Elements(35));
    group.bench_function(BenchmarkId::new("neuron_splits", "all n=5"), |b| {
        b.iter(|| support::neuron_splits(black_box(&record), &Split::ALL, Some(5)))
    });
    group.finish();
}

criterion_group!(benches, splits);
criterion_main!(benches);
