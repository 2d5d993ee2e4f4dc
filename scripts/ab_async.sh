#!/usr/bin/env bash
# Alternating A/B of soma builds on the async API (BENCHMARKS.md §3): for each round and
# worker count, each build gets a fresh `soma serve examples/iris/cortex.yaml` and one
# `soma-bench async` run, so the machine's slow phases fall on both builds alike.
#
# Usage: BINS="old:/tmp/old/soma new:target/release/soma" bash scripts/ab_async.sh
# Environment: WORKERS (default "1 8"), ROUNDS (3), N (workloads, 8000), FLAGS (extra
# `soma serve` flags, e.g. "--prefetch 2").
# Needs `bash scripts/setup.sh` done.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${BINS:?set BINS=\"name:path ...\"}"
cargo build --release --quiet --bin soma-bench
export TF_CPP_MIN_LOG_LEVEL=2 SOMA_LOG=warn
SOMA_TENSORFLOW_LIB=$(ls -d "$PWD"/.venv/lib/python3*/site-packages/tensorflow)
export SOMA_TENSORFLOW_LIB
port=18888
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
# shellcheck source=scripts/bench_lib.sh
source scripts/bench_lib.sh
for round in $(seq 1 "${ROUNDS:-3}"); do
  for workers in ${WORKERS:-1 8}; do
    for build in $BINS; do
      name=${build%%:*} bin=${build#*:}
      data=$(mktemp -d -p "$tmp")
      require_free "$port"
      # shellcheck disable=SC2086 # flags are words
      "$bin" serve examples/iris/cortex.yaml --listen "127.0.0.1:$port" --data-dir "$data" \
        --workers "$workers" ${FLAGS:-} >"$tmp/$name.log" 2>&1 &
      pid=$!
      for _ in $(seq 1 300); do
        curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
        sleep 0.1
      done
      out=$(target/release/soma-bench async "127.0.0.1:$port" /iris examples/iris/sample.json "${N:-8000}" 8)
      p50=$(grep -o 'p50 [0-9.]* ms' <<<"$out" | head -1)
      rate=$(grep -o '[0-9]* workloads/s' <<<"$out" | tail -1)
      printf 'round %s  %s worker(s)  %-8s light-load %s  sustained %s\n' "$round" "$workers" "$name" "$p50" "$rate"
      kill "$pid"
      wait "$pid" 2>/dev/null || true
    done
  done
done
