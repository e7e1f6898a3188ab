//! `activations-datagen`: writes a realistic synthetic dataset; see `--help`.

use std::{path::PathBuf, process::ExitCode, time::Instant};

use activations_bench::datagen::{DatasetSpec, write_dataset};
use activations_format::layout::{Layout, LayoutChoice};
use clap::Parser;

/// Writes LAYERS x NEURONS neuron files shaped like the public GPT-2 XL data (~230 KB each),
/// plus a `manifest.json`. A neuron's content depends only on the seed, its layer and its index.
#[derive(Debug, Parser)]
#[command(name = "activations-datagen", version)]
struct Args {
    /// Directory to write the dataset into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Layers `0..LAYERS`.
    #[arg(long)]
    layers: u32,
    /// Neurons `0..NEURONS` in each layer.
    #[arg(long)]
    neurons: u32,
    /// Seed of the generator.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// `flat` (`LAYER/NEURON.json`) or `neurons` (`neurons/LAYER/NEURON.json`).
    #[arg(long, default_value = "flat", value_parser = parse_layout)]
    layout: Layout,
    /// Writer threads; default: one per core.
    #[arg(long)]
    threads: Option<usize>,
}

fn parse_layout(text: &str) -> Result<Layout, String> {
    match text.parse::<LayoutChoice>()? {
        LayoutChoice::Fixed(layout) => Ok(layout),
        LayoutChoice::Auto => Err("expected flat or neurons".to_string()),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let spec = DatasetSpec {
        layers: args.layers,
        neurons: args.neurons,
        seed: args.seed,
        layout: args.layout,
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let started = Instant::now();
    match write_dataset(&args.out, &spec, threads) {
        Ok(written) => {
            println!(
                "wrote {} neurons ({:.1} MB) to {} in {:.1}s",
                written.files,
                written.bytes as f64 / 1e6,
                args.out.display(),
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: writing {}: {error}", args.out.display());
            ExitCode::FAILURE
        }
    }
}
