#!/usr/bin/env bash
# Sets everything up (idempotent), then runs the main demo end to end on the iris example.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
echo "==> cargo build --release"
cargo build --release --quiet --bin soma
soma=target/release/soma
export SOMA_LOG=${SOMA_LOG:-warn}
# TensorFlow's own C++ logs (model loading details) are noise in a demo.
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

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
echo "==> soma serve examples/iris/cortex.yaml (the async API, as Cortex ran it)"
port=${SOMA_DEMO_PORT:-8888}
data=$(mktemp -d)
"$soma" serve examples/iris/cortex.yaml --listen "127.0.0.1:$port" --data-dir "$data" &
server=$!
trap 'kill -TERM $server 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 1 300); do
  if curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; then break; fi
  sleep 0.2
done
curl -sf "http://127.0.0.1:$port/readyz"; echo

echo
echo "==> curl -X POST /iris -H 'Content-Type: application/json' -d @examples/iris/sample.json"
response=$(curl -sf -X POST "http://127.0.0.1:$port/iris" -H "Content-Type: application/json" -d @examples/iris/sample.json)
echo "$response"
id=$(echo "$response" | sed -E 's/.*"id":"([^"]+)".*/\1/')

echo
echo "==> curl /iris/$id (polling until completed)"
for _ in $(seq 1 100); do
  status=$(curl -sf "http://127.0.0.1:$port/iris/$id")
  case "$status" in *'"completed"'*|*'"failed"'*) break ;; esac
  sleep 0.1
done
echo "$status"
case "$status" in *'"completed"'*) ;; *) echo "the workload did not complete" >&2; exit 1 ;; esac

echo
echo "==> the same model, synchronously, on TF Serving's REST API: POST /v1/models/iris:predict"
curl -sf -X POST "http://127.0.0.1:$port/v1/models/iris:predict" -d '{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
echo

kill -TERM $server
wait $server || true
trap - EXIT
rm -rf "$data"
echo
echo "demo finished"
