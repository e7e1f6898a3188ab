#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs the external tools the tests drive,
# starts the storage emulators (Azurite for Azure Blob, moto for S3; stopped on exit), checks
# formatting and lints, then runs every test, including those plain `cargo test` skips because
# they need those tools (grpcurl, the Python reference loader and gRPC client, the emulators),
# then checks and tests the Python package (python/).
# Ends with one line totalling every test binary and doc-test run.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/tools.sh

log=$(mktemp)
cleanup() {
  rm -f "$log"
  if [ -n "${AZURITE_STATE_DIR:-}" ]; then scripts/emulator.sh azurite stop; fi
  if [ -n "${S3_EMULATOR_STATE_DIR:-}" ]; then scripts/emulator.sh s3 stop; fi
}
trap cleanup EXIT
# Each prints the exports of its URL and state directory (an assignment, so a failed start
# stops this script).
azurite_env=$(scripts/emulator.sh azurite start)
eval "$azurite_env"
s3_env=$(scripts/emulator.sh s3 start)
eval "$s3_env"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

status=0
cargo test --workspace --locked --no-fail-fast -- --include-ignored 2>&1 | tee "$log" || status=$?

# The Python package: its generated code is what python/generate.sh makes, it installs into a
# fresh virtual environment from the package registry alone (and imports there without the
# reference loader), mypy --strict passes, and its tests pass against real servers (the debug
# binary `cargo test` built) and the reference loader.
python/generate.sh --check || status=1
fresh=$(mktemp -d)
if python3 -m venv "$fresh" && "$fresh/bin/pip" install --quiet --disable-pip-version-check ./python \
  && "$fresh/bin/python" -c "import neuron_activations as n; assert not n.USING_NEURON_EXPLAINER"; then
  echo "python: pip install ./python into a fresh environment: ok"
else
  echo "python: pip install ./python into a fresh environment failed" >&2
  status=1
fi
rm -rf "$fresh" python/build python/*.egg-info
(cd python && ../.venv/bin/python -m mypy neuron_activations) || status=1
ACTIVATIONS_SERVER_BIN="$PWD/target/debug/activations-server" \
  .venv/bin/python -m pytest python/tests -q -p no:cacheprovider 2>&1 | tee -a "$log" || status=$?

awk '/^test result:/ { passed += $4; failed += $6; ignored += $8 }
     /^[0-9]+ passed/ { passed += $1; for (i = 2; i <= NF; i++) if ($i ~ /^failed/) failed += $(i-1) }
     /^[0-9]+ failed/ { failed += $1; for (i = 2; i <= NF; i++) if ($i ~ /^passed/) passed += $(i-1) }
     END { printf "tests: %d passed, %d failed, %d skipped\n", passed, failed, ignored }' "$log"
exit "$status"
