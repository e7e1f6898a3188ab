#!/usr/bin/env bash
# Fuzzes the neuron-file loader (fuzz/fuzz_targets/parse_neuron_record.rs) for a bounded time:
#
#   scripts/fuzz.sh [SECONDS]     # default 120
#
# Installs cargo-fuzz into .tools/cargo if it is missing (from crates.io), builds the seed
# corpus in fuzz/corpus/parse_neuron_record (the committed seeds in fuzz/seeds plus the public
# file of data/), and runs libFuzzer with the dictionary fuzz/parse_neuron_record.dict. The
# corpus grows across runs. A crash is written to fuzz/artifacts/parse_neuron_record/ and the
# script exits non-zero; `cargo fuzz run parse_neuron_record FILE` replays it.
#
# cargo fuzz passes nightly-only flags to rustc (-Zsanitizer, ...); RUSTC_BOOTSTRAP=1 lets a
# stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-120}
target=parse_neuron_record
tools=$PWD/.tools/cargo
export PATH=$tools/bin:$PATH
export RUSTC_BOOTSTRAP=1

if ! command -v cargo-fuzz >/dev/null; then
  cargo install cargo-fuzz --locked --root "$tools"
fi

corpus=fuzz/corpus/$target
mkdir -p "$corpus"
cp fuzz/seeds/$target/* "$corpus/"
cp data/gpt2-xl-sample/collated-activations/1/1.json "$corpus/public-gpt2-xl-1-1.json"

# No sanitizer by default (FUZZ_SANITIZER=address to have one): the workspace forbids unsafe
# code, so AddressSanitizer would mostly cost speed; debug assertions (overflow checks) stay on.
# -max_len admits the 236 KB public file whole; -rss_limit_mb bounds a runaway allocation.
cargo fuzz run --fuzz-dir fuzz --sanitizer "${FUZZ_SANITIZER:-none}" --debug-assertions "$target" "$corpus" -- \
  -dict=fuzz/$target.dict \
  -max_total_time="$seconds" \
  -max_len=262144 \
  -rss_limit_mb=2048 \
  -timeout=10 \
  -print_final_stats=1
