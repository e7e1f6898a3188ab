//! Parses the public GPT-2 XL file of layer 1, neuron 1 (235,924 bytes) with each parser, then
//! prints a table of the median time per parse and the throughput.
//!
//! `simd-json` parses in place: each of its iterations gets a fresh copy of the file, made
//! outside the timed part.

use std::{hint::black_box, path::PathBuf, time::SystemTime};

use criterion::{BatchSize, Criterion, Throughput};
use parser_bench as parsers;

/// The bytes the server bundles as its sample dataset.
const FIXTURE: &[u8] = include_bytes!("../../../data/gpt2-xl-sample/collated-activations/1/1.json");

/// Not `parse`, the group of the server's own bench, so the two never share criterion's history.
const GROUP: &str = "parsers";
/// Bench names, as the table lists them.
const PARSERS: [&str; 6] = [
    "service",
    "service_typed",
    "serde_json_typed",
    "serde_json_ignored_any",
    "sonic_rs_typed",
    "simd_json_typed",
];

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group(GROUP);
    group.throughput(Throughput::Bytes(FIXTURE.len() as u64));
    group.bench_function(PARSERS[0], |b| {
        b.iter(|| parsers::service(black_box(FIXTURE)))
    });
    group.bench_function(PARSERS[1], |b| {
        b.iter(|| parsers::service_typed(black_box(FIXTURE)))
    });
    group.bench_function(PARSERS[2], |b| {
        b.iter(|| parsers::serde_json_typed(black_box(FIXTURE)))
    });
    group.bench_function(PARSERS[3], |b| {
        b.iter(|| parsers::serde_json_ignored_any(black_box(FIXTURE)))
    });
    group.bench_function(PARSERS[4], |b| {
        b.iter(|| parsers::sonic_rs_typed(black_box(FIXTURE)))
    });
    group.bench_function(PARSERS[5], |b| {
        b.iter_batched_ref(
            || FIXTURE.to_vec(),
            |bytes| parsers::simd_json_typed(black_box(bytes)),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// Where criterion saved its results: `$CRITERION_HOME`, else `criterion/` in the target
/// directory (this executable is `TARGET/release/deps/parsers-HASH`).
fn criterion_home() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Some(home.into());
    }
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::current_exe()
            .ok()?
            .ancestors()
            .nth(3)?
            .to_path_buf(),
    };
    Some(target.join("criterion"))
}

/// The median of a bench in nanoseconds, from criterion's `estimates.json`, if this run (since
/// `start`) measured it.
fn median_ns(name: &str, start: SystemTime) -> Option<f64> {
    let path = criterion_home()?
        .join(GROUP)
        .join(name)
        .join("new/estimates.json");
    if std::fs::metadata(&path).ok()?.modified().ok()? < start {
        return None;
    }
    let estimates: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    estimates["median"]["point_estimate"].as_f64()
}

fn print_table(start: SystemTime) {
    let rows: Vec<_> = PARSERS
        .iter()
        .filter_map(|&name| Some((name, median_ns(name, start)?)))
        .collect();
    if rows.is_empty() {
        return;
    }
    println!("\n{} bytes per parse", FIXTURE.len());
    println!("{:<24} {:>12} {:>8}", "parser", "median", "MB/s");
    for (name, ns) in rows {
        let mb_per_s = FIXTURE.len() as f64 / ns * 1e3;
        println!("{name:<24} {:>9.1} µs {mb_per_s:>8.0}", ns / 1e3);
    }
}

fn main() {
    let start = SystemTime::now();
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
    print_table(start);
}
