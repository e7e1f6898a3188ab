#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs the external tools the tests drive,
# starts the Azure Storage emulator Azurite (stopped on exit), checks formatting and lints, then
# runs every test, including those plain `cargo test` skips because they need those tools
# (grpcurl, the Python reference loader, Azurite). Ends with one line totalling every test
# binary and doc-test run.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/tools.sh
azurite_env=$(scripts/azurite.sh start)
eval "$azurite_env" # exports AZURITE_BLOB_STORAGE_URL and AZURITE_STATE_DIR
trap 'scripts/azurite.sh stop' EXIT
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

log=$(mktemp)
trap 'rm -f "$log"; scripts/azurite.sh stop' EXIT
status=0
cargo test --workspace --locked --no-fail-fast -- --include-ignored 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { passed += $4; failed += $6; ignored += $8 }
     END { printf "tests: %d passed, %d failed, %d skipped\n", passed, failed, ignored }' "$log"
exit "$status"
