#!/usr/bin/env bash
# Fuzzes the decoders of untrusted input for a bounded time each:
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     # default 120 seconds, every target
#
# The targets (fuzz/fuzz_targets/): parse_neuron_record (the neuron-file loader),
# decode_cursor (StreamNeuronSplits cursors) and decode_page_token (ListNeurons page tokens).
#
# Installs cargo-fuzz into .tools/cargo if it is missing (from crates.io), builds each target's
# seed corpus in fuzz/corpus/TARGET (the committed seeds in fuzz/seeds/TARGET; the loader's
# also gets the public file of data/), and runs libFuzzer, with the dictionary
# fuzz/TARGET.dict where there is one. The corpus grows across runs. A crash is written to
# fuzz/artifacts/TARGET/ and the script exits non-zero; `cargo fuzz run TARGET FILE` replays
# it.
#
# cargo fuzz passes nightly-only flags to rustc (-Zsanitizer, ...); RUSTC_BOOTSTRAP=1 lets a
# stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-120}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(parse_neuron_record decode_cursor decode_page_token)
fi
tools=$PWD/.tools/cargo
export PATH=$tools/bin:$PATH
export RUSTC_BOOTSTRAP=1

if ! command -v cargo-fuzz >/dev/null; then
  cargo install cargo-fuzz --locked --root "$tools"
fi

for target in "${targets[@]}"; do
  corpus=fuzz/corpus/$target
  mkdir -p "$corpus"
  cp fuzz/seeds/"$target"/* "$corpus/"
  options=()
  if [ "$target" = parse_neuron_record ]; then
    cp data/gpt2-xl-sample/collated-activations/1/1.json "$corpus/public-gpt2-xl-1-1.json"
  fi
  if [ -f fuzz/"$target".dict ]; then
    options+=(-dict=fuzz/"$target".dict)
  fi
  echo "== $target, ${seconds}s"
  # No sanitizer by default (FUZZ_SANITIZER=address to have one): the workspace forbids unsafe
  # code, so AddressSanitizer would mostly cost speed; debug assertions (overflow checks) stay
  # on. -max_len admits the 236 KB public file whole; -rss_limit_mb bounds a runaway
  # allocation.
  cargo fuzz run --fuzz-dir fuzz --sanitizer "${FUZZ_SANITIZER:-none}" --debug-assertions "$target" "$corpus" -- \
    "${options[@]}" \
    -max_total_time="$seconds" \
    -max_len=262144 \
    -rss_limit_mb=2048 \
    -timeout=10 \
    -print_final_stats=1
done
