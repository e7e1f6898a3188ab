#!/usr/bin/env bash
# The side-by-side comparison: the reference Python loader against the service, on the same
# synthetic dataset (target/bench-data, made by scripts/bench.sh), with the same work per neuron
# (load it, cut its four splits with n_examples_per_split=5).
#
# Python: scripts/bench-python.sh, one neuron after another and with a thread pool, over a local
# HTTP server of the dataset, three times (the median run of each is compared). The service: the
# cold scenario of activations-load (every neuron read from storage and parsed; one
# StreamNeuronSplits call per neuron, all four splits) and its bulk stream, from
# target/bench-report/results.json, which scripts/bench.sh writes; it is run first if that file
# is missing or BENCH_RERUN=1. Prints both and the ratio.
#
# Usage: scripts/bench-compare.sh [N]   (N: neurons the Python loader reads, default 200)
set -euo pipefail
cd "$(dirname "$0")/.."

neurons=${1:-200}
data_dir=${BENCH_DATA:-target/bench-data}
report=target/bench-report/results.json

if [ ! -f "$report" ] || [ "${BENCH_RERUN:-0}" = 1 ]; then
  scripts/bench.sh >&2
fi
# Three runs of the Python loader; the median per thread count is compared, as the service's
# figures are medians of three runs too.
python_runs=$(for _ in 1 2 3; do scripts/bench-python.sh "$data_dir" "$neurons" | grep '^{'; done)

python3 - "$report" "$python_runs" <<'PY'
import json, sys

report = json.load(open(sys.argv[1]))
all_runs = [json.loads(line) for line in sys.argv[2].splitlines()]
runs = []
for threads in sorted({run["threads"] for run in all_runs}):
    same = sorted((r for r in all_runs if r["threads"] == threads), key=lambda r: r["neurons_per_s"])
    runs.append(same[len(same) // 2])
best = max(runs, key=lambda run: run["neurons_per_s"])
cold = report["results"]["cold"]
ceiling = report["results"]["cold_ceiling"]
service = cold["neurons_per_second"]
print("| reader | neurons/s |")
print("| --- | --- |")
for run in runs:
    print(f"| Python reference loader, {run['threads']} thread(s), median of 3 | {run['neurons_per_s']:.1f} |")
print(f"| service, cold (c={cold['concurrency']}) | {service:.1f} |")
bulk = report["results"]["bulk"][0]["figures"]["neurons_per_second"]
print(f"| service, one bulk stream, cold cache | {bulk:.1f} |")
print(f"| in-process read + parse (ceiling) | {ceiling['neurons_per_second']:.1f} |")
print()
print(f"service / best Python: {service / best['neurons_per_s']:.1f}x (bulk stream: {bulk / best['neurons_per_s']:.1f}x)")
print(f"service / in-process ceiling: {100 * service / ceiling['neurons_per_second']:.0f}%")
PY
