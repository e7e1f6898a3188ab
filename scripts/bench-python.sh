#!/usr/bin/env bash
# Times the reference Python loader on a local dataset, as a Python job would read it: each
# neuron through `load_neuron` over HTTP, then its four splits (n_examples_per_split=5).
# Runs bench/python_reference.py twice, one neuron after the other and then with a thread pool
# of THREADS (default 8), each printing its JSON result on one line.
#
# Usage: scripts/bench-python.sh DATASET_DIR [N]
#   DATASET_DIR  a flat-layout dataset (LAYER/NEURON.json), served by python -m http.server
#   N            how many neurons, in (layer, neuron) order (default 100)
# Installs the loader into .venv/ first (scripts/tools.sh, idempotent).
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  sed -n '2,10p' "$0" >&2
  exit 2
fi
dataset=$1
neurons=${2:-100}
threads=${THREADS:-8}

root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/tools.sh"
python="$root/.venv/bin/python"

"$python" "$root/bench/python_reference.py" "$dataset" --neurons "$neurons" --threads 1
"$python" "$root/bench/python_reference.py" "$dataset" --neurons "$neurons" --threads "$threads"
