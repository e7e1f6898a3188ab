//! Realistic neuron files, generated: datasets of any size shaped like the public GPT-2 XL data.
//!
//! Each neuron looks like the public file of layer 1, neuron 1 (bundled with the server): 50
//! top-activating records, 50 random-sample records, 5 quantile buckets of 20 records, 64 tokens
//! per record (a few shorter ones starting at `<|endoftext|>`), moments and quantile boundaries,
//! about 230 KB of JSON. Tokens are drawn from the bundled file's tokens (so their lengths,
//! escapes and non-ASCII text are those of real data); activations are float16 values rounded to
//! 4 decimals like the real ones: mostly small negatives (GELU's floor), a few positive bursts,
//! and the largest in the top-activating records, mostly sorted.
//!
//! A neuron's content depends only on `(seed, layer, neuron)`, so a dataset can be generated in
//! parallel, in any order, and regenerated identically. Files are written by the server's own
//! writer ([`write_neuron_record`]), so they are formatted exactly as Python wrote the public
//! files.

use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use activations_format::{
    layout::Layout,
    neuron_json::{parse_neuron_record, write_neuron_record},
    shape::{MANIFEST_FILE, Shape},
};
use activations_proto::pb;

/// Records in `most_positive_activation_records` and in `random_sample`.
pub const RECORDS_PER_SOURCE: usize = 50;
/// Buckets of `random_sample_by_quantile`.
pub const QUANTILE_BUCKETS: usize = 5;
/// Records per quantile bucket.
pub const RECORDS_PER_BUCKET: usize = 20;
/// Tokens of a full record.
pub const TOKENS_PER_RECORD: usize = 64;

const END_OF_TEXT: &str = "<|endoftext|>";
/// GELU's minimum is about -0.17: the floor of most activations.
const GELU_FLOOR: f64 = -0.165;

/// The public file whose shape generated neurons copy, and whose tokens they are made of.
const SAMPLE: &[u8] = include_bytes!("../../data/gpt2-xl-sample/collated-activations/1/1.json");

/// What to generate: `layers` x `neurons` files from `seed`, in `layout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatasetSpec {
    pub layers: u32,
    pub neurons: u32,
    pub seed: u64,
    pub layout: Layout,
}

/// What [`write_dataset`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Neuron files.
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
}

/// The neuron `(layer, neuron)` of the dataset generated from `seed`.
pub fn neuron_record(seed: u64, layer: u32, neuron: u32) -> pb::NeuronRecord {
    let mut rng = SplitMix64::new(seed ^ mix((u64::from(layer) << 32) | u64::from(neuron)));
    let vocabulary = vocabulary();

    // The neuron's largest activation, and the boundaries of its quantile buckets as fractions
    // of it (the public file: -0.0032, 0.5005, 1.5146, 2.3789 under a maximum of 3.26).
    let max = 2.0 + 2.5 * rng.unit();
    let boundaries = [
        -0.001 - 0.004 * rng.unit(),
        max * (0.12 + 0.06 * rng.unit()),
        max * (0.42 + 0.08 * rng.unit()),
        max * (0.70 + 0.06 * rng.unit()),
    ]
    .map(|b| round_4_decimals(round_to_f16(b)));

    // Peaks fall from the maximum to about 70% of it, with a little noise: mostly sorted.
    let top = (0..RECORDS_PER_SOURCE)
        .map(|k| {
            let fall = (k as f64 / (RECORDS_PER_SOURCE - 1) as f64).powf(0.7);
            let peak = max * (1.0 - 0.3 * fall) * (1.0 + 0.01 * (rng.unit() - 0.5));
            activation_record(&mut rng, vocabulary, Some(peak))
        })
        .collect();
    let random: Vec<_> = (0..RECORDS_PER_SOURCE)
        .map(|_| activation_record(&mut rng, vocabulary, None))
        .collect();
    let quantiles = (0..QUANTILE_BUCKETS)
        .map(|bucket| {
            let low = if bucket == 0 {
                -0.02
            } else {
                boundaries[bucket - 1]
            };
            let high = boundaries.get(bucket).copied().unwrap_or(max * 0.95);
            let mut peaks: Vec<f64> = (0..RECORDS_PER_BUCKET)
                .map(|_| low + (high - low) * rng.unit())
                .collect();
            peaks.sort_by(f64::total_cmp);
            let records = peaks
                .into_iter()
                .map(|peak| activation_record(&mut rng, vocabulary, Some(peak)))
                .collect();
            pb::ActivationRecordList { records }
        })
        .collect();

    let moments = Moments::of(random.iter().flat_map(|r| r.activations.iter()));
    let boundary = |value| pb::NullableDouble { value };
    let quantile_boundaries = std::iter::once(boundary(None))
        .chain(boundaries.map(|b| boundary(Some(b))))
        .chain(std::iter::once(boundary(None)))
        .collect();
    pb::NeuronRecord {
        neuron_id: Some(pb::NeuronId {
            layer_index: layer,
            neuron_index: neuron,
        }),
        random_sample: random,
        random_sample_by_quantile: Some(pb::RandomSampleByQuantile { quantiles }),
        quantile_boundaries: Some(pb::QuantileBoundaries {
            boundaries: quantile_boundaries,
        }),
        mean: Some(round_4_decimals(moments.mean)),
        variance: Some(round_4_decimals(moments.variance)),
        skewness: Some(round_4_decimals(moments.skewness)),
        kurtosis: Some(round_4_decimals(moments.kurtosis)),
        most_positive_activation_records: top,
    }
}

/// The neuron's file, as the public data would hold it.
pub fn neuron_file(seed: u64, layer: u32, neuron: u32) -> String {
    write_neuron_record(&neuron_record(seed, layer, neuron))
}

/// Where `layout` keeps the file of `(layer, neuron)`, relative to the dataset's root.
pub fn neuron_path(layout: Layout, layer: u32, neuron: u32) -> PathBuf {
    let file = PathBuf::from(layer.to_string()).join(format!("{neuron}.json"));
    match layout {
        Layout::Flat => file,
        Layout::Neurons => Path::new("neurons").join(file),
    }
}

/// Writes the dataset of `spec` under `dir` on `threads` threads, plus its `manifest.json`.
///
/// # Errors
///
/// The first I/O error met; files written before it stay.
pub fn write_dataset(dir: &Path, spec: &DatasetSpec, threads: usize) -> io::Result<Written> {
    let shape = Shape::uniform(spec.layers, spec.neurons)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    for layer in 0..spec.layers {
        let layer_dir = dir.join(neuron_path(spec.layout, layer, 0));
        fs::create_dir_all(layer_dir.parent().expect("a neuron path has a directory"))?;
    }
    let total = u64::from(spec.layers) * u64::from(spec.neurons);
    let next = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| -> io::Result<()> {
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= total {
                            return Ok(());
                        }
                        let layer = (index / u64::from(spec.neurons)) as u32;
                        let neuron = (index % u64::from(spec.neurons)) as u32;
                        let json = neuron_file(spec.seed, layer, neuron);
                        fs::write(dir.join(neuron_path(spec.layout, layer, neuron)), &json)?;
                        bytes.fetch_add(json.len() as u64, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|worker| worker.join().expect("a generator thread panicked"))
    })?;
    fs::write(
        dir.join(MANIFEST_FILE),
        shape.to_manifest(Some(spec.layout)),
    )?;
    Ok(Written {
        files: total,
        bytes: bytes.into_inner(),
    })
}

/// One record of 64 tokens (rarely fewer, starting at `<|endoftext|>`) whose largest activation
/// is `peak`, or, without a peak, a random excerpt: small negatives with a few positive bursts.
fn activation_record(
    rng: &mut SplitMix64,
    vocabulary: &[String],
    peak: Option<f64>,
) -> pb::ActivationRecord {
    let len = if rng.unit() < 0.015 {
        TOKENS_PER_RECORD / 2 + rng.below(TOKENS_PER_RECORD / 2)
    } else {
        TOKENS_PER_RECORD
    };
    let mut tokens: Vec<String> = (0..len)
        .map(|_| vocabulary[rng.below(vocabulary.len())].clone())
        .collect();
    if len < TOKENS_PER_RECORD {
        tokens[0] = END_OF_TEXT.to_string();
    }
    let mut activations: Vec<f64> = (0..len)
        .map(|_| {
            // About 40% of random excerpts hold a positive burst, as in the public file.
            if rng.unit() < 0.008 {
                -0.3 * (1.0 - rng.unit()).ln()
            } else {
                GELU_FLOOR * rng.unit().powf(1.2)
            }
        })
        .collect();
    if let Some(peak) = peak {
        for activation in &mut activations {
            if *activation > peak {
                *activation = if peak > 0.0 {
                    peak * rng.unit()
                } else {
                    peak - (peak - GELU_FLOOR).max(0.0) * rng.unit()
                };
            }
        }
        if peak > 0.0 {
            // A burst of related tokens around the strongest one.
            for _ in 0..rng.below(8) {
                activations[rng.below(len)] = peak * (0.05 + 0.85 * rng.unit());
            }
        }
        activations[rng.below(len)] = peak;
    }
    pb::ActivationRecord {
        tokens,
        activations: activations.into_iter().map(stored_activation).collect(),
        dfa_values: Vec::new(),
        dfa_target_index: None,
    }
}

/// The tokens of the bundled public file, with their frequencies (one entry per occurrence).
fn vocabulary() -> &'static [String] {
    static VOCABULARY: OnceLock<Vec<String>> = OnceLock::new();
    VOCABULARY.get_or_init(|| {
        let sample = parse_neuron_record(SAMPLE).expect("the bundled sample parses");
        let quantiles = sample
            .random_sample_by_quantile
            .iter()
            .flat_map(|q| &q.quantiles)
            .flat_map(|bucket| &bucket.records);
        sample
            .most_positive_activation_records
            .iter()
            .chain(&sample.random_sample)
            .chain(quantiles)
            .flat_map(|record| &record.tokens)
            .filter(|token| *token != END_OF_TEXT)
            .cloned()
            .collect()
    })
}

/// An activation as the public files store it: a float16, printed with 4 decimals.
fn stored_activation(value: f64) -> f32 {
    round_4_decimals(round_to_f16(value)) as f32
}

/// The nearest float16 value (ignoring overflow, which activations never reach).
fn round_to_f16(value: f64) -> f64 {
    if value == 0.0 {
        return 0.0;
    }
    // 10 mantissa bits; below 2^-14 the quantum stays 2^-24 (subnormals).
    let exponent = value.abs().log2().floor().max(-14.0);
    let quantum = (exponent - 10.0).exp2();
    (value / quantum).round() * quantum
}

/// Rounds to 4 decimals; `+ 0.0` turns a rounded `-0.0` into `0.0`.
fn round_4_decimals(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0 + 0.0
}

/// Mean, variance, skewness and (excess) kurtosis of a sample.
#[derive(Debug, Clone, Copy)]
struct Moments {
    mean: f64,
    variance: f64,
    skewness: f64,
    kurtosis: f64,
}

impl Moments {
    fn of<'a>(values: impl Iterator<Item = &'a f32> + Clone) -> Moments {
        let (count, sum) = values
            .clone()
            .fold((0.0, 0.0), |(n, s), &v| (n + 1.0, s + f64::from(v)));
        let mean = sum / count;
        let [m2, m3, m4] = values.fold([0.0; 3], |[m2, m3, m4], &v| {
            let d = f64::from(v) - mean;
            [m2 + d * d, m3 + d * d * d, m4 + d * d * d * d]
        });
        let variance = m2 / count;
        Moments {
            mean,
            variance,
            skewness: m3 / count / variance.powf(1.5),
            kurtosis: m4 / count / (variance * variance) - 3.0,
        }
    }
}

/// SplitMix64: a tiny, fast, well-mixed generator; plenty for synthetic data, and stable
/// across platforms and versions, which keeps generated datasets reproducible.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }
}

/// SplitMix64's finaliser: a bijective hash of 64 bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_and_neuron_give_the_same_bytes() {
        assert_eq!(neuron_file(7, 3, 11), neuron_file(7, 3, 11));
        assert_ne!(neuron_file(7, 3, 11), neuron_file(8, 3, 11));
        assert_ne!(neuron_file(7, 3, 11), neuron_file(7, 3, 12));
        assert_ne!(neuron_file(7, 3, 11), neuron_file(7, 4, 11));
    }

    #[test]
    fn generated_file_parses_with_the_public_counts() {
        let json = neuron_file(1, 2, 3);
        let record = parse_neuron_record(json.as_bytes()).expect("a generated file parses");
        assert_eq!(
            record.neuron_id,
            Some(pb::NeuronId {
                layer_index: 2,
                neuron_index: 3
            })
        );
        assert_eq!(record.most_positive_activation_records.len(), 50);
        assert_eq!(record.random_sample.len(), 50);
        let buckets = &record.random_sample_by_quantile.as_ref().unwrap().quantiles;
        assert_eq!(buckets.len(), 5);
        assert!(buckets.iter().all(|bucket| bucket.records.len() == 20));
        let boundaries = &record.quantile_boundaries.as_ref().unwrap().boundaries;
        assert_eq!(boundaries.len(), 6);
        assert!(boundaries[0].value.is_none() && boundaries[5].value.is_none());
        for moment in [
            record.mean,
            record.variance,
            record.skewness,
            record.kurtosis,
        ] {
            assert!(moment.is_some_and(f64::is_finite));
        }
        // Re-writing the parsed record reproduces the file: the format is the public one.
        assert_eq!(write_neuron_record(&record), json);
        assert!(json.starts_with(r#"{"dataclass_name": "NeuronRecord", "neuron_id": {"dataclass_name": "NeuronId", "layer_index": 2, "neuron_index": 3}, "random_sample": [{"dataclass_name": "ActivationRecord", "tokens": ["#));
    }

    #[test]
    fn generated_file_is_about_as_large_as_a_public_one() {
        for neuron in 0..5 {
            let len = neuron_file(0, 0, neuron).len();
            assert!((200_000..=260_000).contains(&len), "{len} bytes");
        }
    }

    #[test]
    fn top_records_hold_the_largest_activations() {
        let record = neuron_record(5, 0, 0);
        let peak =
            |r: &pb::ActivationRecord| r.activations.iter().copied().fold(f32::MIN, f32::max);
        let top: Vec<f32> = record
            .most_positive_activation_records
            .iter()
            .map(peak)
            .collect();
        let random_max = record
            .random_sample
            .iter()
            .map(peak)
            .fold(f32::MIN, f32::max);
        assert!(
            top.iter().all(|&p| p > random_max),
            "{top:?} vs {random_max}"
        );
        assert!(top[0] > top[49]);
        assert!(record.random_sample.iter().all(|r| r.tokens.len() <= 64));
    }

    #[test]
    fn activations_are_float16_values_with_4_decimals() {
        for value in [-0.07623, 3.26171875, 0.50048, -0.0031999, 1e-7] {
            let stored = f64::from(stored_activation(value));
            let text = format!("{}", stored as f32);
            let decimals = text.split('.').nth(1).map_or(0, str::len);
            assert!(decimals <= 4, "{value} -> {text}");
        }
        assert_eq!(round_to_f16(2.37890625), 2.37890625);
        assert_eq!(round_to_f16(1.0 + 1.0 / 4096.0), 1.0);
        assert_eq!(round_4_decimals(-0.00001), 0.0);
        assert!(round_4_decimals(-0.00001).is_sign_positive());
    }

    #[test]
    fn dataset_is_written_in_either_layout_with_its_manifest() {
        for layout in [Layout::Flat, Layout::Neurons] {
            let dir = tempfile::tempdir().unwrap();
            let spec = DatasetSpec {
                layers: 2,
                neurons: 3,
                seed: 9,
                layout,
            };
            let written = write_dataset(dir.path(), &spec, 2).unwrap();
            assert_eq!(written.files, 6);
            let file = fs::read_to_string(dir.path().join(neuron_path(layout, 1, 2))).unwrap();
            assert_eq!(file, neuron_file(9, 1, 2));
            let manifest = fs::read(dir.path().join(MANIFEST_FILE)).unwrap();
            let (shape, manifest_layout) = Shape::from_manifest(&manifest).unwrap();
            assert_eq!(shape, Shape::uniform(2, 3).unwrap());
            assert_eq!(manifest_layout, Some(layout));
        }
    }
}
