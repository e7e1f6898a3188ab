#!/usr/bin/env bash
# Runs the soak (see BENCHMARKS.md, "Soak"): builds the release server and activations-soak,
# then serves a generated dataset (target/soak-data, 2 layers x 512 neurons, made on the first
# run) through a web store that fails 5% of its requests, to 300 concurrent checked callers for
# SECONDS (default 180). Exits non-zero on any wrong, lost or duplicated answer, any error other
# than UNAVAILABLE/RESOURCE_EXHAUSTED/DEADLINE_EXCEEDED, or a leak. Not part of scripts/test.sh.
#
# Usage: scripts/soak.sh [SECONDS] [activations-soak options...], e.g.
#   scripts/soak.sh 600 --fault-rate 0.1 --callers 500
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir=${CARGO_TARGET_DIR:-target}
seconds=180
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then
  seconds=$1
  shift
fi

cargo build --release --locked -p activations-server -p activations-bench

exec "$target_dir/release/activations-soak" "$seconds" \
  --server-bin "$target_dir/release/activations-server" \
  --dataset-dir "${SOAK_DATA:-target/soak-data}" \
  "$@"
