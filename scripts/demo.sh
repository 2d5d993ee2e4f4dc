#!/usr/bin/env bash
# Sets everything up (idempotent), then runs the main demo end to end on the iris example.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
echo "==> cargo build --release"
cargo build --release --quiet --bin soma
soma=target/release/soma
export SOMA_LOG=${SOMA_LOG:-warn}

echo
echo "==> soma validate examples/iris/cortex.yaml"
"$soma" validate examples/iris/cortex.yaml

echo
echo "==> soma predict (latest version = 10, numerically highest)"
"$soma" predict examples/iris/cortex.yaml --input '{"x": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}'

echo
echo "==> soma predict --version 9"
"$soma" predict examples/iris/cortex.yaml --version 9 --input '{"x": [[5.1, 3.5, 1.4, 0.2]]}'

echo
echo "==> a bad request gets a precise error (exit code 1)"
if "$soma" predict examples/iris/cortex.yaml --input '{"x": [5.1, 3.5, 1.4, 0.2]}'; then
  echo "expected an error" >&2
  exit 1
fi
echo
echo "demo finished"
