#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs the external tools the tests drive,
# checks formatting and lints, then runs every test, including those plain `cargo test` skips
# because they need those tools (grpcurl, the Python reference loader).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/tools.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked --no-fail-fast -- --include-ignored
