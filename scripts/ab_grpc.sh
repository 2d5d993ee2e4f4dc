#!/usr/bin/env bash
# Alternating A/B of soma builds on iris gRPC (h2load) with `auto` batching: for each round,
# each build gets a fresh `soma tfserving` and every load, so the machine's slow phases fall
# on both builds alike (BENCHMARKS.md §4).
#
# Usage: BINS="old:/tmp/old/soma new:target/release/soma" bash scripts/ab_grpc.sh
# Environment: LOADS (default "c64m1 c8m1 c1m1 c1m8 c1m64": C connections of M streams each),
# ROUNDS (3), D (seconds measured, 6, after 2 of warm-up), FLAGS (extra `soma tfserving` flags).
# Prints per build and load: req/s, and the server's CPU (user + system) per request.
# Needs Debian's nghttp2-client (h2load), bc, and `bash scripts/setup.sh` done.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${BINS:?set BINS=\"name:path ...\"}"
cargo build --release --quiet --bin soma-bench
export TF_CPP_MIN_LOG_LEVEL=2 SOMA_LOG=warn
SOMA_TENSORFLOW_LIB=$(ls -d "$PWD"/.venv/lib/python3*/site-packages/tensorflow)
export SOMA_TENSORFLOW_LIB
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
# shellcheck source=scripts/bench_lib.sh
source scripts/bench_lib.sh
printf 'max_batch_size { value: 64 }\nbatch_timeout_micros: auto\n' >"$tmp/auto.txt"
flags="--enable_batching --batching_parameters_file $tmp/auto.txt ${FLAGS:-}"
url=http://127.0.0.1:18500/tensorflow.serving.PredictionService/Predict
body_made=
for round in $(seq 1 "${ROUNDS:-3}"); do
  for build in $BINS; do
    name=${build%%:*} bin=${build#*:}
    # shellcheck disable=SC2086 # flags are words
    start_model_tfserving iris "$bin" "$tmp/$name.log" $flags
    if [ -z "$body_made" ]; then
      target/release/soma-bench grpc-body 127.0.0.1:18500 iris crates/bench/data/iris.json \
        "$tmp/iris.grpc" >/dev/null
      body_made=1
    fi
    for load in ${LOADS:-c64m1 c8m1 c1m1 c1m8 c1m64}; do
      c=${load#c} m=${load#*m}
      c=${c%m*}
      h2() {
        h2load -t1 -c"$c" -m"$m" -D"$1" -d "$tmp/iris.grpc" -H 'content-type: application/grpc' \
          -H 'te: trailers' "$url"
      }
      h2 2 >/dev/null
      t0=$(cpu_ticks "$server_pid")
      out=$(h2 "${D:-6}")
      t1=$(cpu_ticks "$server_pid")
      n=$(awk '/^requests:/ {print $8}' <<<"$out")
      rate=$(awk '/finished in/ {print $4}' <<<"$out")
      us=$(us_per_request "$t0" "$t1" "$n")
      printf 'r%s %-8s %-6s %10s req/s  server %.2f us/req\n' "$round" "$name" "$load" "$rate" "$us"
    done
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
  done
done
