//! Neuron files for the tests: the real public file, and deterministic synthetic ones that
//! exercise what the real one does not (other record counts, NaN, null, no `dataclass_name`).

use std::path::{Path, PathBuf};

use activations_format::neuron_json;
use activations_proto::pb;

/// The public GPT-2 XL file of layer 1, neuron 1, byte for byte.
pub const REAL_NEURON: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../data/gpt2-xl-sample/collated-activations/1/1.json"
));

/// Writes `bytes` as neuron `layer`/`neuron` below `root` in the flat layout (or below
/// `root/neurons` when `neurons_layout`).
pub fn write_neuron(
    root: &Path,
    neurons_layout: bool,
    layer: u32,
    neuron: u32,
    bytes: &[u8],
) -> PathBuf {
    let dir = if neurons_layout {
        root.join("neurons")
    } else {
        root.to_path_buf()
    }
    .join(layer.to_string());
    std::fs::create_dir_all(&dir).expect("create layer dir");
    let path = dir.join(format!("{neuron}.json"));
    std::fs::write(&path, bytes).expect("write neuron file");
    path
}

/// A small deterministic generator (xorshift), so failures reproduce.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

const TOKENS: &[&str] = &[
    "<|endoftext|>",
    " the",
    "\n",
    "\"",
    "\\",
    " café",
    "日本",
    " 🙂",
    "\t",
    "{",
    "}",
    ",",
    " NaN",
];

/// One record of `len` tokens with 4-decimal activations (like the public files).
pub fn record(rng: &mut Rng, len: usize) -> pb::ActivationRecord {
    let tokens = (0..len)
        .map(|_| TOKENS[rng.below(TOKENS.len() as u64) as usize].to_string())
        .collect();
    let activations = (0..len)
        .map(|_| {
            let tenths_of_milli = rng.below(80_000) as i64 - 10_000;
            (tenths_of_milli as f64 / 10_000.0) as f32
        })
        .collect();
    pb::ActivationRecord {
        tokens,
        activations,
        ..Default::default()
    }
}

/// A neuron record with `top` top-activating and `random` random records of up to 64 tokens.
pub fn neuron(seed: u64, layer: u32, neuron: u32, top: usize, random: usize) -> pb::NeuronRecord {
    let mut rng = Rng::new(seed);
    let mut records = |count: usize| -> Vec<pb::ActivationRecord> {
        (0..count)
            .map(|_| {
                let len = 1 + rng.below(64) as usize;
                record(&mut rng, len)
            })
            .collect()
    };
    let most_positive_activation_records = records(top);
    let random_sample = records(random);
    let quantiles = (0..2)
        .map(|_| pb::ActivationRecordList {
            records: records(2),
        })
        .collect();
    pb::NeuronRecord {
        neuron_id: Some(pb::NeuronId {
            layer_index: layer,
            neuron_index: neuron,
        }),
        random_sample,
        random_sample_by_quantile: Some(pb::RandomSampleByQuantile { quantiles }),
        quantile_boundaries: Some(pb::QuantileBoundaries {
            boundaries: [None, Some(0.25), Some(1.5), None]
                .into_iter()
                .map(|value| pb::NullableDouble { value })
                .collect(),
        }),
        mean: Some(0.125),
        variance: Some(f64::NAN),
        skewness: None,
        kurtosis: Some(f64::INFINITY),
        most_positive_activation_records,
    }
}

/// The record in the public file format.
pub fn to_json(record: &pb::NeuronRecord) -> Vec<u8> {
    neuron_json::write_neuron_record(record).into_bytes()
}
