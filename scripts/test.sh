#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs the external tools the tests drive,
# starts the storage emulators (Azurite for Azure Blob, moto for S3; stopped on exit), checks
# formatting and lints, then runs every test, including those plain `cargo test` skips because
# they need those tools (grpcurl, the Python reference loader and gRPC client, the emulators).
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
awk '/^test result:/ { passed += $4; failed += $6; ignored += $8 }
     END { printf "tests: %d passed, %d failed, %d skipped\n", passed, failed, ignored }' "$log"
exit "$status"
