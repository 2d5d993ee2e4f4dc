#!/usr/bin/env bash
# The async API benchmarks of BENCHMARKS.md §3 and §6, in one run on this machine:
# `soma serve` on the iris example with 1, 4 and 8 workers, then 8 workers with server-side
# batching off, fixed (2 ms) and auto, and the in-process floor.
# Usage: bash scripts/bench_async.sh [workloads] [clients]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
workloads=${1:-4000}
clients=${2:-8}
cargo build --release --quiet --bin soma --bin soma-bench
export TF_CPP_MIN_LOG_LEVEL=2 SOMA_LOG=warn
port=18888
# shellcheck source=scripts/bench_lib.sh
source scripts/bench_lib.sh # (the script has cd'd to the repository root)
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT

run() { # <label> <cortex.yaml> <workers>
  local data
  data=$(mktemp -d -p "$tmp")
  require_free "$port"
  target/release/soma serve "$2" --listen "127.0.0.1:$port" --data-dir "$data" --workers "$3" >"$tmp/soma.log" 2>&1 &
  local server=$!
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
    sleep 0.1
  done
  if ! kill -0 "$server" 2>/dev/null; then
    echo "error: soma serve exited; its log:" >&2
    cat "$tmp/soma.log" >&2
    exit 1
  fi
  echo "== $1"
  target/release/soma-bench async "127.0.0.1:$port" /iris examples/iris/sample.json "$workloads" "$clients"
  curl -s "http://127.0.0.1:$port/metrics" | grep -E '^soma_batch_size_(sum|count)' || true
  kill "$server"
  wait "$server" 2>/dev/null || true
}

with_batching() { # <interval> -> path of a copy of the iris cortex.yaml with batching on
  local file=examples/iris/.bench-$1.yaml
  cp examples/iris/cortex.yaml "$file"
  printf '    server_side_batching:\n      max_batch_size: 32\n      batch_interval: %s\n' "$1" >>"$file"
  echo "$file"
}

echo "machine: $(nproc) cores, $(uname -r); $(date -u +%FT%TZ)"
for workers in 1 4 8; do
  run "$workers worker(s)" examples/iris/cortex.yaml "$workers"
done
for interval in 2ms auto; do
  file=$(with_batching "$interval")
  run "8 workers, batching $interval" "$file" 8
  rm -f "$file"
done
echo "== floor"
# As many calls as workloads, so the floor is measured over as long a stretch as the runs.
target/release/soma-bench async-floor examples/iris/cortex.yaml examples/iris/sample.json "$workloads"
