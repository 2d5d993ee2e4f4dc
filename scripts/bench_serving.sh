#!/usr/bin/env bash
# The synchronous serving benchmarks of BENCHMARKS.md §4 and §5, in one run on this machine:
#
# §4: iris and mlp1024 at 1, 8 and 64 connections: soma tfserving REST and gRPC (one
#     connection per request in flight, and at 8 and 64 also all on one channel), the floor
#     (Servable::predict in a loop in-process from as many threads) and the FastAPI + uvicorn
#     + TensorFlow peer (scripts/bench_fastapi.py) with 1 and 2 workers; on iris also the
#     null server (soma-bench null-server: soma's HTTP stacks answering soma's answer, fixed,
#     with no model: the most any server built on them could do here) and null+TF (the same
#     running iris once per request: the stacks plus TensorFlow, without soma's own work);
#     then soma REST and gRPC again with `auto` server-side batching (on iris it batches in
#     place on the async threads).
# §4c: iris and mlp1024 at 1, 8 and 64 connections again, with load generators written in C
#     (wrk for REST, h2load for gRPC, at 8 and 64 also on one connection; Debian's wrk and
#     nghttp2-client), which leave more of the shared cores to the server than soma-bench's
#     clients do, soma with `auto` batching under them too (and, on iris, with one REST and
#     one gRPC serving thread: its best setting on this machine), and null and null+TF on iris;
#     skipped if they are missing; then the iris floor again (the machine's speed drifts).
# §4d (BENCH_SECTIONS=4d, not in the default run): what an HTTP server reaches on this machine
#     at all: nginx (Debian's nginx-light, 1 and 2 worker processes) answering soma's answer
#     to iris, fixed, beside soma's null server (the same answer on soma's own HTTP stack)
#     and soma REST (batching auto), each as it serves by default (a thread per core, busy
#     polling), with one thread (soma) and with one thread that does not poll, as nginx's
#     workers serve; and the iris
#     floor, under wrk at 1, 8 and 64 connections; three rounds, alternating.
# §5: REST at 64 and 1 connections with server-side batching off, fixed (max_batch_size 64,
#     batch_timeout_micros 1000) and auto, the FastAPI peer beside them.
#
# Usage: bash scripts/bench_serving.sh [seconds per measurement, default 8]
# Environment: BENCH_SECTIONS (default "4 4c 5") picks the sections to run; §5 measures its own
# FastAPI rows, so it stands alone (the machine's speed drifts within a long run).
# Prints one markdown row per measurement (server CPU: user + system time of the server's
# processes per request), and the mean batch size of every batching run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds=${1:-8}
sections=${BENCH_SECTIONS:-4 4c 5}
cargo build --release --quiet --bin soma --bin soma-bench
export TF_CPP_MIN_LOG_LEVEL=2 SOMA_LOG=warn
bench=target/release/soma-bench
data=crates/bench/data
models=(iris mlp1024)
levels=(1 8 64)
grpc_port=18500 rest_port=18501 fastapi_port=18601
tmp=$(mktemp -d)
server=
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT

cat >"$tmp/models.config" <<EOF
model_config_list {
  config { name: "iris" base_path: "$PWD/fixtures/models/iris" model_platform: "tensorflow" }
  config { name: "mlp1024" base_path: "$PWD/fixtures/models/mlp1024" model_platform: "tensorflow" }
}
EOF
# Fixed window: a batch closes when 64 rows (every client of the 64-connection run) are in
# or 1 ms after its first request, about the cost of one mlp1024 call here, so waiting
# for a full batch never costs more than running one more batch would.
printf 'max_batch_size { value: 64 }\nbatch_timeout_micros { value: 1000 }\n' >"$tmp/fixed.txt"
printf 'max_batch_size { value: 64 }\nbatch_timeout_micros: auto\n' >"$tmp/auto.txt"

# shellcheck source=scripts/bench_lib.sh
source scripts/bench_lib.sh # (the script has cd'd to the repository root)

alive() { # <pid> <name>: the server we started is the one that answered
  kill -0 "$1" 2>/dev/null && return 0
  echo "error: $2 exited; its log:" >&2
  cat "$tmp/$2.log" >&2
  exit 1
}

wait_for() { # <url> [method]: until it answers 200
  for _ in $(seq 1 600); do
    curl -sf -o /dev/null "$1" && return 0
    sleep 0.1
  done
  echo "error: $1 never answered" >&2
  exit 1
}

start_soma() { # [extra flags...]: soma tfserving on both models; sets $server
  require_free "$grpc_port" "$rest_port"
  target/release/soma tfserving --port "$grpc_port" --rest_api_port "$rest_port" \
    --model_config_file "$tmp/models.config" "$@" >"$tmp/soma.log" 2>&1 &
  server=$!
  wait_for "http://127.0.0.1:$rest_port/v2/health/ready"
  alive "$server" soma
}

start_fastapi() { # <workers>: sets $server
  require_free "$fastapi_port"
  .venv/bin/python scripts/bench_fastapi.py --port "$fastapi_port" --workers "$1" \
    iris=fixtures/models/iris mlp1024=fixtures/models/mlp1024 >"$tmp/fastapi.log" 2>&1 &
  server=$!
  for _ in $(seq 1 600); do
    curl -sf -o /dev/null -H 'Content-Type: application/json' -d @"$data/iris.json" \
      "http://127.0.0.1:$fastapi_port/v1/models/iris:predict" && alive "$server" fastapi && return 0
    sleep 0.1
  done
  echo "error: FastAPI never answered" >&2
  cat "$tmp/fastapi.log" >&2
  exit 1
}

start_null() { # [model dir ("": none)] [null-server flags...]: soma-bench null-server on
  # soma's ports; sets $server
  require_free "$grpc_port" "$rest_port"
  "$bench" null-server --rest "127.0.0.1:$rest_port" --grpc "127.0.0.1:$grpc_port" \
    ${1:+--model "$1"} "${@:2}" >"$tmp/null.log" 2>&1 &
  server=$!
  wait_for "http://127.0.0.1:$rest_port/v2/health/ready"
  alive "$server" null
}

start_nginx() { # <worker processes>: nginx answering soma's iris answer on the REST port
  require_free "$rest_port"
  mkdir -p "$tmp/nginx"
  cat >"$tmp/nginx/nginx.conf" <<EOF
worker_processes $1;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
daemon off;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 600s;
  client_body_temp_path $tmp/nginx/body;
  server {
    listen 127.0.0.1:$rest_port;
    location / {
      default_type application/json;
      return 200 '{\n    "predictions": [[0.972686529, 0.0245849229, 0.00272860541]\n    ]\n}';
    }
  }
}
EOF
  nginx -c "$tmp/nginx/nginx.conf" >"$tmp/nginx.log" 2>&1 &
  server=$!
  for _ in $(seq 1 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$rest_port/" && alive "$server" nginx && return 0
    sleep 0.1
  done
  echo "error: nginx never answered" >&2
  exit 1
}

start_setting() { # <off|auto|one-thread|quiet>: soma tfserving in that setting; sets $who
  case $1 in
  off) start_soma; who=soma ;;
  auto)
    start_soma --enable_batching --batching_parameters_file "$tmp/auto.txt"
    who="soma, batching auto," ;;
  one-thread) # one REST and one gRPC serving thread
    start_soma --enable_batching --batching_parameters_file "$tmp/auto.txt" \
      --rest_api_io_threads 1 --grpc_io_threads 1
    who="soma, batching auto, 1 thread," ;;
  quiet) # the same without busy polling, as nginx's workers serve
    start_soma --enable_batching --batching_parameters_file "$tmp/auto.txt" \
      --rest_api_io_threads 1 --grpc_io_threads 1 --rest_api_busy_poll_micros 0
    who="soma, batching auto, 1 thread, no polling," ;;
  esac
}

stop() {
  kill "$server"
  wait "$server" 2>/dev/null || true
  server=
}

cpu_ticks() { # CPU time (user + system, in clock ticks) of $server and its children
  local p total=0
  for p in "$server" $(pgrep -P "$server" || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}

measure() { # <section> <server label> <model> <soma-bench args...>
  local out before=0 after=0
  [ -n "$server" ] && before=$(cpu_ticks)
  if ! out=$("$bench" "${@:4}" --seconds "$seconds" 2>"$tmp/bench.err"); then
    cat "$tmp/bench.err" >&2
    exit 1
  fi
  [ -n "$server" ] && after=$(cpu_ticks)
  # "rest iris c=8: 1234 req/s  p50 0.123 ms  p99 0.456 ms  errors 0 of 1234"
  echo "$out" | awk -v s="$1" -v l="$2" -v m="$3" -v ticks=$((after - before)) \
    -v hz="$(getconf CLK_TCK)" -v span="$((seconds + 1))" -v measured="${server:+1}" '
    / c=[0-9]+: / {
      # The label before "c=N:" may be several words ("grpc iris channels=1").
      for (i = 1; $i !~ /^c=[0-9]+:$/; i++) {}
      c = $i; sub(/^c=/, "", c); sub(/:$/, "", c)
      rate = $(i + 1)
      # Server CPU per request over warm-up + measurement (the warm-up second counted at
      # the measured rate).
      cpu = (measured && rate > 0) ? sprintf("%.0f", ticks / hz * 1e6 / (rate * span)) : "-"
      printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", s, m, c, l, rate, $(i + 4), \
        $(i + 7), cpu, $(i + 10) " of " $(i + 12)
    }'
  echo "$out" | grep -v ' c=[0-9]*: ' | sed 's/^/    /' || true
}

# Runs "$@" (wrk or h2load) after a warm-up run; its output goes to $tmp/c.out, its CPU time
# (user + system seconds) to $tmp/c.time, the server's CPU ticks over the run to $tmp/c.ticks.
run_c() { # <command...>
  local before after
  "${@/__SECONDS__/1}" >/dev/null
  # h2load appends to its --log-file: only the measured run's requests may be in it.
  rm -f "$tmp/h2.log"
  before=$(cpu_ticks)
  { TIMEFORMAT='%U %S'; time "${@/__SECONDS__/$seconds}" >"$tmp/c.out"; } 2>"$tmp/c.time"
  after=$(cpu_ticks)
  echo $((after - before)) >"$tmp/c.ticks"
}

c_row() { # <label> <model> <conns> <req/s> <p50 ms> <p99 ms> <requests> <errors>
  awk -v l="$1" -v m="$2" -v c="$3" -v rate="$4" -v p50="$5" -v p99="$6" -v n="$7" -v e="$8" \
    -v ticks="$(cat "$tmp/c.ticks")" -v hz="$(getconf CLK_TCK)" -v client="$(cat "$tmp/c.time")" \
    -v s="$c_section" '
    BEGIN {
      split(client, t, " ")
      printf "| %s | %s | %s | %s | %.0f | %s | %s | %.0f | %d of %d |\n", s, m, c, l, rate, p50, p99, \
        ticks / hz * 1e6 / n, e, n + e
      printf "    (load generator CPU: %.0f µs per request)\n", (t[1] + t[2]) * 1e6 / n
    }'
}

who=soma       # the server under test, for the row labels of wrk and h2load
c_section=4c   # and the section they are in

measure_wrk() { # <model> <conns>
  cat >"$tmp/wrk.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open("$data/$1.json", "rb")); wrk.body = f:read("*a"); f:close()
done = function(s, latency)
  local e = s.errors.connect + s.errors.read + s.errors.write + s.errors.timeout + s.errors.status
  io.write(string.format("RESULT %.1f %.3f %.3f %d %d\n", s.requests / (s.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, s.requests - s.errors.status, e))
end
EOF
  run_c wrk -t1 -c"$2" -d__SECONDS__s -s "$tmp/wrk.lua" "http://127.0.0.1:$rest_port/v1/models/$1:predict"
  read -r _ rate p50 p99 n e < <(grep '^RESULT' "$tmp/c.out")
  c_row "$who REST (wrk)" "$1" "$2" "$rate" "$p50" "$p99" "$n" "$e"
}

# <model> <requests in flight> [connections]: by default one HTTP/2 connection per request in
# flight (one stream at a time each); with fewer connections, their streams run concurrently.
measure_h2load() {
  local conns=${3:-$2} label="$who gRPC (h2load)"
  [ "$conns" = "$2" ] || label="$who gRPC (h2load), $conns conn."
  run_c h2load -t1 -c"$conns" -m$(($2 / conns)) -D__SECONDS__ -d "$tmp/$1.grpc" --log-file="$tmp/h2.log" \
    -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://127.0.0.1:$grpc_port/tensorflow.serving.PredictionService/Predict"
  # The per-request log: start µs, HTTP status, duration µs.
  read -r p50 p99 < <(awk '$2 == 200 { print $3 }' "$tmp/h2.log" | sort -n | awk '
    { d[NR] = $1 } END { printf "%.3f %.3f\n", d[int(NR * 0.5)] / 1000, d[int(NR * 0.99)] / 1000 }')
  read -r rate n e < <(awk '
    /^finished in/ { rate = $4 }
    /^requests:/ { ok = $8; bad = $10 + $12 + $14 }
    END { print rate, ok, bad }' "$tmp/c.out")
  c_row "$label" "$1" "$2" "$rate" "$p50" "$p99" "$n" "$e"
}

batch_totals() { # <model>: "rows runs" so far of its batching histogram, from /metrics
  curl -s "http://127.0.0.1:$rest_port/metrics" | awk -v m="model_name=\"$1\"" '
    index($0, m) && /^soma_batch_size_sum/ { sum = $NF }
    index($0, m) && /^soma_batch_size_count/ { n = $NF }
    END { printf "%d %d\n", sum, n }'
}

echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(uname -r); $(date -u +%FT%TZ); ${seconds} s per measurement after 1 s warm-up"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| § | model | conns | server | req/s | p50 ms | p99 ms | server CPU µs/req | errors |"
echo "|---|---|---|---|---|---|---|---|---|"

section() { [[ " $sections " == *" $1 "* ]]; }

if section 4; then
# §4 soma REST and gRPC, batching off (TF Serving's default) and `auto`.
for mode in off auto; do
  suffix=
  if [ "$mode" = off ]; then start_soma; else
    start_soma --enable_batching --batching_parameters_file "$tmp/auto.txt"
    suffix=", batching auto"
  fi
  for m in "${models[@]}"; do
    for c in "${levels[@]}"; do
      measure 4 "soma REST$suffix" "$m" rest "127.0.0.1:$rest_port" "$m" "$data/$m.json" --connections "$c"
      measure 4 "soma gRPC$suffix" "$m" grpc "127.0.0.1:$grpc_port" "$m" "$data/$m.json" --connections "$c"
      # gRPC as its clients usually run: every request in flight on one shared channel.
      [ "$c" = 1 ] || measure 4 "soma gRPC, 1 channel$suffix" "$m" grpc "127.0.0.1:$grpc_port" "$m" \
        "$data/$m.json" --connections "$c" --channels 1
    done
  done
  stop
done

# §4 the null server: what soma's HTTP stacks cost with no model behind them (null), and
# with iris run once per request (null+TF).
for who in null null+TF; do
  if [ "$who" = null ]; then start_null; else start_null fixtures/models/iris; fi
  for c in "${levels[@]}"; do
    measure 4 "$who REST" iris rest "127.0.0.1:$rest_port" iris "$data/iris.json" --connections "$c"
    measure 4 "$who gRPC" iris grpc "127.0.0.1:$grpc_port" iris "$data/iris.json" --connections "$c"
    [ "$c" = 1 ] || measure 4 "$who gRPC, 1 channel" iris grpc "127.0.0.1:$grpc_port" iris \
      "$data/iris.json" --connections "$c" --channels 1
  done
  stop
done
who=soma

# §4 the floor.
for m in "${models[@]}"; do
  for c in "${levels[@]}"; do
    measure 4 "floor" "$m" floor "fixtures/models/$m" --body "$data/$m.json" --threads "$c"
  done
done

# §4 and §5 FastAPI, 1 and 2 workers.
for workers in 1 2; do
  start_fastapi "$workers"
  for m in "${models[@]}"; do
    for c in "${levels[@]}"; do
      measure 4 "FastAPI ${workers}w" "$m" rest "127.0.0.1:$fastapi_port" "$m" "$data/$m.json" --connections "$c"
    done
  done
  stop
done
fi

if section 4c; then
if command -v wrk >/dev/null && command -v h2load >/dev/null; then
  # h2load sees HTTP/2 statuses only (a gRPC error arrives with HTTP 200): grpc-body checks
  # the request with a real Predict first, and the soma-bench rows above count gRPC errors.
  # "one thread": soma's best setting on this machine, where the load generator shares the
  # two cores (FastAPI gets its best worker setting too): one REST and one gRPC serving
  # thread, so that the server's threads and the client do not keep waking each other.
  for mode in off auto one-thread; do
    start_setting "$mode"
    mode_models=("${models[@]}")
    [ "$mode" != one-thread ] || mode_models=(iris)
    for m in "${mode_models[@]}"; do
      "$bench" grpc-body "127.0.0.1:$grpc_port" "$m" "$data/$m.json" "$tmp/$m.grpc"
      for c in "${levels[@]}"; do
        measure_wrk "$m" "$c"
        measure_h2load "$m" "$c"
        [ "$c" = 1 ] || measure_h2load "$m" "$c" 1
      done
    done
    stop
  done
  for who in null null+TF; do
    if [ "$who" = null ]; then start_null; else start_null fixtures/models/iris; fi
    for c in "${levels[@]}"; do
      measure_wrk iris "$c"
      measure_h2load iris "$c"
      [ "$c" = 1 ] || measure_h2load iris "$c" 1
    done
    stop
  done
  who=soma
else
  echo "(§4c skipped: wrk and h2load not installed; apt-get install wrk nghttp2-client)"
fi
# The iris floor again, at the end: this machine has slow phases minutes long, and a ratio to
# a floor measured in one would flatter soma. BENCHMARKS.md reads against the higher floor.
for c in "${levels[@]}"; do
  measure 4c "floor, again" iris floor fixtures/models/iris --body "$data/iris.json" --threads "$c"
done
fi

if section 4d; then
if command -v wrk >/dev/null && command -v nginx >/dev/null; then
  c_section=4d
  for round in 1 2 3; do
    echo "    (round $round)"
    for c in "${levels[@]}"; do
      measure 4d "floor" iris floor fixtures/models/iris --body "$data/iris.json" --threads "$c"
    done
    # "1 thread, no polling": one REST thread that sleeps as soon as it has nothing to do,
    # as nginx's workers do; the default is a thread per core and 30 µs of busy polling.
    for setting in nginx-1 nginx-2 null null-quiet auto one-thread quiet; do
      case $setting in
      nginx-*) start_nginx "${setting#nginx-}"; who="nginx, ${setting#nginx-} worker(s), fixed answer," ;;
      null) start_null; who=null ;;
      null-quiet)
        start_null "" --threads 1 --busy-poll-micros 0
        who="null, 1 thread, no polling," ;;
      *) start_setting "$setting" ;;
      esac
      for c in "${levels[@]}"; do
        measure_wrk iris "$c"
      done
      stop
    done
  done
  who=soma
else
  echo "(§4d skipped: wrk or nginx not installed; apt-get install wrk nginx-light)"
fi
fi

if section 5; then
# §5 the FastAPI peer (2 workers, its best in §4), then REST with batching off, fixed and
# auto, at 64 then 1 connections.
start_fastapi 2
for m in "${models[@]}"; do
  for c in 64 1; do
    measure 5 "FastAPI 2w" "$m" rest "127.0.0.1:$fastapi_port" "$m" "$data/$m.json" --connections "$c"
  done
done
stop
for mode in off fixed auto; do
  case $mode in
  off) start_soma ;;
  *) start_soma --enable_batching --batching_parameters_file "$tmp/$mode.txt" ;;
  esac
  for m in "${models[@]}"; do
    for c in 64 1; do
      read -r rows runs < <(batch_totals "$m")
      measure 5 "REST batching $mode" "$m" rest "127.0.0.1:$rest_port" "$m" "$data/$m.json" --connections "$c"
      read -r rows2 runs2 < <(batch_totals "$m")
      [ "$mode" = off ] || [ "$runs2" -le "$runs" ] ||
        awk -v r=$((rows2 - rows)) -v n=$((runs2 - runs)) \
          'BEGIN { printf "    (mean batch %.1f rows over %d TensorFlow runs)\n", r / n, n }'
    done
  done
  stop
done
fi
echo
echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
