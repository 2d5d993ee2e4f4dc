#!/usr/bin/env bash
# Alternating A/B of soma builds (or of one build's flags) on REST predictions (wrk): for each
# round, each build gets a fresh `soma tfserving` and every load, so the machine's slow
# phases fall on both builds alike (BENCHMARKS.md §4). The REST twin of scripts/ab_grpc.sh.
#
# Usage: BINS="old:/tmp/old/soma new:target/release/soma" bash scripts/ab_rest.sh
# Environment: CONNS (default "1 8 64": wrk connections), ROUNDS (3), D (seconds measured, 5,
# after 2 of warm-up), BATCHING ("auto", the default, or "off"), FLAGS (extra `soma tfserving`
# flags, e.g. "--rest_api_io_threads 1"), FLAGS_<name> (flags for the build of that name
# only), MODEL (the fixture model served and its body in crates/bench/data: iris, the
# default, or mlp1024).
# Prints per build and load: req/s, and the server's CPU (user + system) per request.
# Needs Debian's wrk, bc, and `bash scripts/setup.sh` done.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${BINS:?set BINS=\"name:path ...\"}"
export TF_CPP_MIN_LOG_LEVEL=2 SOMA_LOG=warn
SOMA_TENSORFLOW_LIB=$(ls -d "$PWD"/.venv/lib/python3*/site-packages/tensorflow)
export SOMA_TENSORFLOW_LIB
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
# shellcheck source=scripts/bench_lib.sh
source scripts/bench_lib.sh
printf 'max_batch_size { value: 64 }\nbatch_timeout_micros: auto\n' >"$tmp/auto.txt"
flags=${FLAGS:-}
if [ "${BATCHING:-auto}" = auto ]; then
  flags="--enable_batching --batching_parameters_file $tmp/auto.txt $flags"
fi
model=${MODEL:-iris}
body=$(tr -d '\n' <"crates/bench/data/$model.json" | sed 's/"/\\"/g')
cat >"$tmp/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = "$body"
LUA
url=http://127.0.0.1:18501/v1/models/$model:predict
for round in $(seq 1 "${ROUNDS:-3}"); do
  for build in $BINS; do
    name=${build%%:*} bin=${build#*:}
    own="FLAGS_$name"
    # shellcheck disable=SC2086 # flags are words
    start_model_tfserving "$model" "$bin" "$tmp/$name.log" $flags ${!own:-}
    for c in ${CONNS:-1 8 64}; do
      wrk -t1 -c"$c" -d2s -s "$tmp/post.lua" "$url" >/dev/null
      t0=$(cpu_ticks "$server_pid")
      out=$(wrk -t1 -c"$c" -d"${D:-5}s" -s "$tmp/post.lua" "$url")
      t1=$(cpu_ticks "$server_pid")
      if grep -q "Non-2xx" <<<"$out"; then echo "$out" >&2; exit 1; fi
      n=$(awk '/requests in/ {print $1}' <<<"$out")
      rate=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
      us=$(us_per_request "$t0" "$t1" "$n")
      printf 'r%s %-8s c%-4s %10s req/s  server %.2f us/req\n' "$round" "$name" "$c" "$rate" "$us"
    done
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
  done
done
