#!/usr/bin/env bash
# Sets everything up (idempotent) and runs the whole test suite: formatting, lints, unit and
# integration tests against the real TensorFlow runtime and a real S3-compatible server.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh --no-build

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "==> cargo test"
# Integration tests start their own servers (moto_server) on free loopback ports.
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
cargo test --workspace --no-fail-fast
