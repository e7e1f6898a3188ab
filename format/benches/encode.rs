//! Encoding the response messages of a split to protobuf, as tonic does for every message it
//! streams (the server's messages hold their records encoded already), and decoding them into
//! the typed messages, as the client does.
//!
//! Throughput is the encoded size. `encode_to_vec` allocates a buffer per message; `encode`
//! writes into one reused buffer, as tonic's encoder does.

mod support;

use activations_format::splits::Split;
use activations_proto::pb;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use std::hint::black_box;

fn encode(c: &mut Criterion) {
    let record = support::record();
    let mut group = c.benchmark_group("encode");
    // StreamActivationRecords: one message per record.
    for (name, n) in [("valid n=None", None), ("valid n=5", Some(5))] {
        let messages = support::split_messages(&record, Split::Valid, n);
        bench_messages::<_, pb::SplitActivationRecord>(
            &mut group,
            &format!("split_records {name}"),
            &messages,
        );
    }
    // StreamNeuronSplits: one message holding the four splits.
    let neuron = support::neuron_splits(&record, &Split::ALL, Some(5));
    bench_messages::<_, pb::NeuronSplits>(
        &mut group,
        "neuron_splits all n=5",
        std::slice::from_ref(&neuron),
    );
    group.finish();
}

/// Benches encoding `messages` (each on its own, as a stream sends them) and decoding them as
/// `D`, the client's type of the same message.
fn bench_messages<M: Message, D: Message + Default>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    messages: &[M],
) {
    let encoded: Vec<Vec<u8>> = messages.iter().map(Message::encode_to_vec).collect();
    let bytes = encoded.iter().map(Vec::len).sum::<usize>();
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function(format!("{name} encode_to_vec"), |b| {
        b.iter(|| {
            for message in black_box(messages) {
                black_box(message.encode_to_vec());
            }
        })
    });
    let mut buffer = Vec::with_capacity(encoded.iter().map(Vec::len).max().unwrap_or(0));
    group.bench_function(format!("{name} encode"), |b| {
        b.iter(|| {
            for message in black_box(messages) {
                buffer.clear();
                message
                    .encode(&mut buffer)
                    .expect("the buffer grows as needed");
                black_box(&buffer);
            }
        })
    });
    group.bench_function(format!("{name} decode"), |b| {
        b.iter(|| {
            for bytes in black_box(&encoded) {
                black_box(D::decode(bytes.as_slice()).expect("the bytes were just encoded"));
            }
        })
    });
}

criterion_group!(benches, encode);
criterion_main!(benches);
