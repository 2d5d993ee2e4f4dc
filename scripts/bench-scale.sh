#!/usr/bin/env bash
# Async iris throughput: `soma serve` on the embedded backend vs 1 gateway + 1, 2, 4
# `soma worker` processes on Redis (redis-server, appendonly) + S3 (moto_server) vs Celery
# with 1, 2, 4 worker processes on the same Redis as broker (scripts/celery_iris.py), all on
# this machine. Needs `cargo build --release -p soma -p soma-bench`, redis-server, and celery +
# redis in the venv ($CELERY_VENV, default .venv; scripts/requirements.txt pins them).
# Usage: scripts/bench-scale.sh [workloads] [clients]
# Environment: SOMA_BIN (default target/release/soma) picks the soma binary, e.g. to compare two
# builds; BENCH_PARTS (default "embedded redis celery") picks the parts to run; BENCH_PROCS
# (default "1 2 4") the worker process counts.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

WORKLOADS="${1:-2000}"
CLIENTS="${2:-8}"
SOMA="${SOMA_BIN:-target/release/soma}"
PARTS="${BENCH_PARTS:-embedded redis celery}"
PROCS="${BENCH_PROCS:-1 2 4}"
BENCH=target/release/soma-bench
CONFIG=examples/iris/cortex.yaml
SAMPLE=examples/iris/sample.json
export TF_CPP_MIN_LOG_LEVEL=2 SOMA_LOG=warn
CELERY_VENV="$(cd "${CELERY_VENV:-.venv}" && pwd)"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 300); do curl -sf "http://$1$2" >/dev/null && return 0; sleep 0.1; done; echo "timeout: $1$2" >&2; exit 1; }

REDIS_PORT="$(free_port)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK" --appendonly yes \
  --appendfsync everysec --save '' >/dev/null &
PIDS+=($!)
MOTO_PORT="$(free_port)"
.venv/bin/moto_server -H 127.0.0.1 -p "$MOTO_PORT" >/dev/null 2>&1 &
PIDS+=($!)
wait_http "127.0.0.1:$MOTO_PORT" /
curl -sf -X PUT "http://127.0.0.1:$MOTO_PORT/bench" -H 'Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0' >/dev/null

export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
export SOMA_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" SOMA_S3_ENDPOINT="http://127.0.0.1:$MOTO_PORT"

if [[ " $PARTS " == *" embedded "* ]]; then
echo "== embedded: soma serve --workers $PROCS"
for n in $PROCS; do
  port="$(free_port)"
  "$SOMA" serve "$CONFIG" --listen "127.0.0.1:$port" --data-dir "$WORK/embedded-$n" --workers "$n" &
  pid=$!
  wait_http "127.0.0.1:$port" /readyz
  echo "-- $n worker(s)"
  "$BENCH" async "127.0.0.1:$port" /iris "$SAMPLE" "$WORKLOADS" "$CLIENTS"
  kill "$pid"; wait "$pid" || true
done
fi

if [[ " $PARTS " == *" redis "* ]]; then
echo "== redis + s3 ($SOMA): 1 soma gateway + N soma worker processes (--workers 1 each)"
for n in $PROCS; do
  export SOMA_BACKEND=redis SOMA_S3_URL="s3://bench/run-$n" SOMA_REDIS_KEY_PREFIX="run-$n"
  port="$(free_port)"
  "$SOMA" gateway "$CONFIG" --listen "127.0.0.1:$port" &
  gw=$!
  workers=()
  wports=()
  for i in $(seq "$n"); do
    wport="$(free_port)"
    "$SOMA" worker "$CONFIG" --listen "127.0.0.1:$wport" --workers 1 &
    workers+=($!)
    wports+=("$wport")
    wait_http "127.0.0.1:$wport" /readyz
  done
  wait_http "127.0.0.1:$port" /readyz
  echo "-- $n worker process(es)"
  [[ -n "${BENCH_REDIS_STATS:-}" ]] && redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
  "$BENCH" async "127.0.0.1:$port" /iris "$SAMPLE" "$WORKLOADS" "$CLIENTS"
  if [[ -n "${BENCH_REDIS_STATS:-}" ]]; then
    redis-cli -p "$REDIS_PORT" info commandstats | grep -E '^cmdstat' | sort -t= -k2 -n -r | head -20
    for wport in "${wports[@]}"; do
      curl -s "http://127.0.0.1:$wport/metrics" | grep -E '^soma_async_(processing|queue_wait)_seconds_(sum|count)' || true
    done
    for p in "$gw" "${workers[@]}" "${PIDS[0]}"; do
      echo "cpu seconds (user+system) of pid $p $(tr -d '\0' </proc/$p/cmdline | cut -c1-40): $(awk '{print ($14+$15)/100}' /proc/$p/stat)"
    done
  fi
  kill "$gw" "${workers[@]}"; wait "$gw" "${workers[@]}" || true
  unset SOMA_BACKEND
done
fi

if [[ " $PARTS " == *" celery "* ]]; then
echo "== celery 5.5 + redis broker/backend: celery worker -c N (prefork, acks_late, prefetch 1)"
for n in $PROCS; do
  export CELERY_BROKER="redis://127.0.0.1:$REDIS_PORT/1"
  (cd scripts && exec "$CELERY_VENV/bin/celery" -A celery_iris worker -c "$n" --pool prefork \
    --without-gossip --without-mingle --loglevel warning) &
  cw=$!
  # Ready once a ping task round-trips (every child has then loaded TensorFlow lazily or not).
  for _ in $(seq 300); do
    (cd scripts && "$CELERY_VENV/bin/celery" -A celery_iris inspect ping -t 1 >/dev/null 2>&1) && break
    sleep 0.2
  done
  echo "-- $n celery worker process(es)"
  (cd scripts && "$CELERY_VENV/bin/python" celery_iris.py "../$SAMPLE" "$WORKLOADS" "$CLIENTS")
  kill "$cw"; wait "$cw" || true
  redis-cli -p "$REDIS_PORT" -n 1 flushdb >/dev/null
done
fi
