#!/usr/bin/env bash
# Runs the benchmark suite (see BENCHMARKS.md): builds the server and the benchmark tools in
# release mode, generates the synthetic dataset into target/bench-data if it is not there yet
# (4 layers x 1024 neurons, ~1 GB; BENCH_LAYERS and BENCH_NEURONS change that), then runs
# activations-load, which starts a release server per scenario and prints one markdown table.
# The table, results.json and latency.svg are written to target/bench-report/.
#
# Arguments are passed to activations-load, e.g. `scripts/bench.sh --warm-requests 20000`
# or `scripts/bench.sh --json`.
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir=${CARGO_TARGET_DIR:-target}
data_dir=${BENCH_DATA:-target/bench-data}

cargo build --release --locked -p activations-server -p activations-bench

if [ ! -f "$data_dir/manifest.json" ]; then
  "$target_dir/release/activations-datagen" --out "$data_dir" \
    --layers "${BENCH_LAYERS:-4}" --neurons "${BENCH_NEURONS:-1024}"
fi

"$target_dir/release/activations-load" \
  --server-bin "$target_dir/release/activations-server" \
  --dataset-dir "$data_dir" \
  --report target/bench-report \
  "$@"
