#!/usr/bin/env bash
# Generates the package's gRPC code from proto/ with grpcio-tools (no protoc needed), into
# python/neuron_activations/_proto/: the messages (`*_pb2.py`), their type stubs (`*_pb2.pyi`)
# and the service stub (`activations_pb2_grpc.py`) of the contract, and google.rpc's Status and
# error details, which the package decodes errors with.
#
# The files are committed. They are flattened into one private package whose modules import
# each other relatively, so that nothing is installed as `neuron_explainer` (the reference
# loader's name) or `google.rpc` (googleapis-common-protos' name).
#
#   python/generate.sh           # regenerate
#   python/generate.sh --check   # fail if the committed files differ from what it generates
#
# Python: $PYTHON, else the project venv's (.venv/bin/python, which scripts/tools.sh sets up
# with grpcio-tools).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
out="$root/python/neuron_activations/_proto"
check=false
if [ "${1:-}" = "--check" ]; then check=true; fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# grpc_tools.protoc adds the well-known types (google/protobuf/*.proto) to the include path.
"$python" -m grpc_tools.protoc -I "$root/proto" \
  --python_out="$tmp" --pyi_out="$tmp" --grpc_python_out="$tmp" \
  neuron_explainer/activations/v1/activations.proto google/rpc/status.proto \
  google/rpc/error_details.proto
flat="$tmp/flat"
mkdir -p "$flat"
cp "$tmp"/neuron_explainer/activations/v1/activations_pb2{.py,.pyi,_grpc.py} "$flat/"
cp "$tmp"/google/rpc/status_pb2{.py,.pyi} "$tmp"/google/rpc/error_details_pb2{.py,.pyi} "$flat/"
# The generated imports name the proto packages; inside this package they are siblings.
sed -i \
  -e 's/^from neuron_explainer\.activations\.v1 import activations_pb2/from . import activations_pb2/' \
  -e 's/^from google\.rpc import \(status_pb2\|error_details_pb2\)/from . import \1/' \
  "$flat"/*.py "$flat"/*.pyi
cat >"$flat/__init__.py" <<'INIT'
"""The service's generated messages and stub (python/generate.sh writes this package)."""
INIT
if grep -En '^(from|import) (neuron_explainer|google\.rpc)' "$flat"/*.py "$flat"/*.pyi; then
  echo "an import of a proto package is left in the generated code" >&2
  exit 1
fi

if $check; then
  if ! diff -r -x __pycache__ "$flat" "$out" >&2; then
    echo "python/neuron_activations/_proto differs from what python/generate.sh generates:" \
      "run python/generate.sh and commit the result" >&2
    exit 1
  fi
  echo "python/neuron_activations/_proto is up to date" >&2
else
  rm -rf "$out"
  cp -r "$flat" "$out"
  echo "generated into $out" >&2
fi
