#!/usr/bin/env bash
# The side-by-side comparison: the reference Python loader against the service, on the same
# synthetic dataset (target/bench-data, generated first if missing, as scripts/bench.sh does),
# with the same work per neuron (load it, cut its four splits with n_examples_per_split=5).
#
# The two are measured in paired rounds (ROUNDS, default 5), so that a machine that speeds up or
# slows down between measurements moves both sides of each ratio:
# - Python: scripts/bench-python.sh, one neuron after another and with a thread pool, over a
#   local HTTP server of the dataset; the faster of the two counts.
# - The service: `activations-load --cold-only --repeat 1`, the cold scenario (a fresh server,
#   every neuron read from storage and parsed, one StreamNeuronSplits call per neuron, all four
#   splits) and its in-process ceiling.
# The order alternates between rounds (Python first in odd rounds, the service first in even
# ones). Prints every round and the median of the rounds' ratios.
#
# Usage: scripts/bench-compare.sh [N]   (N: neurons the Python loader reads, default 200)
set -euo pipefail
cd "$(dirname "$0")/.."

neurons=${1:-200}
rounds=${ROUNDS:-5}
target_dir=${CARGO_TARGET_DIR:-target}
data_dir=${BENCH_DATA:-target/bench-data}

cargo build --release --locked -p activations-server -p activations-bench
if [ ! -f "$data_dir/manifest.json" ]; then
  "$target_dir/release/activations-datagen" --out "$data_dir" \
    --layers "${BENCH_LAYERS:-4}" --neurons "${BENCH_NEURONS:-1024}"
fi

# Each measurement is its own assignment, so that a failed one stops the script (set -e).
python_round() {
  python=$(scripts/bench-python.sh "$data_dir" "$neurons" | grep '^{')
  measured+="$(sed "s/^/$round python /" <<<"$python")"$'\n'
}
service_round() {
  service=$("$target_dir/release/activations-load" \
    --server-bin "$target_dir/release/activations-server" \
    --dataset-dir "$data_dir" --cold-only --repeat 1)
  measured+="$round service $service"$'\n'
}

measured=""
for round in $(seq "$rounds"); do
  echo "round $round of $rounds" >&2
  if [ $((round % 2)) = 1 ]; then
    python_round
    service_round
  else
    service_round
    python_round
  fi
done

python3 - "$measured" <<'PY'
import json, statistics, sys

rounds = {}
for line in sys.argv[1].splitlines():
    if not line.strip():
        continue
    number, kind, text = line.split(" ", 2)
    entry = rounds.setdefault(int(number), {"python": []})
    if kind == "python":
        entry["python"].append(json.loads(text))
    else:
        entry["service"] = json.loads(text)

thread_counts = sorted({run["threads"] for entry in rounds.values() for run in entry["python"]})
python_columns = " | ".join(f"Python, {n} thread{'s' if n > 1 else ''}" for n in thread_counts)
print(f"| round | {python_columns} | best Python | service cold | ceiling | service / best Python | service / ceiling |")
print("| --- | " + "---: | " * (len(thread_counts) + 5))
ratios, pythons, services, ceiling_shares = [], [], [], []
for number in sorted(rounds):
    entry = rounds[number]
    by_threads = sorted(entry["python"], key=lambda run: run["threads"])
    best = max(run["neurons_per_s"] for run in by_threads)
    service = entry["service"]["cold"]["neurons_per_second"]
    ceiling = entry["service"]["cold_ceiling"]["neurons_per_second"]
    ratios.append(service / best)
    pythons.append(best)
    services.append(service)
    ceiling_shares.append(service / ceiling)
    cells = " | ".join(f"{run['neurons_per_s']:.1f}" for run in by_threads)
    print(f"| {number} | {cells} | {best:.1f} | {service:.0f} | {ceiling:.0f} | {service / best:.1f}x | {100 * service / ceiling:.0f}% |")
print()
print(f"median of {len(ratios)} rounds: service cold {statistics.median(services):.0f} neurons/s, "
      f"best Python {statistics.median(pythons):.1f} neurons/s")
print(f"service / best Python: median {statistics.median(ratios):.1f}x "
      f"(rounds {min(ratios):.1f}x to {max(ratios):.1f}x)")
print(f"service / in-process ceiling: median {100 * statistics.median(ceiling_shares):.0f}%")
PY
