# Shared by the benchmark scripts (sourced, not run).

# A server left over on one of the fixed ports would answer in place of the one under test.
require_free() { # <port>...
  local port
  for port in "$@"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "error: port $port is already in use (a server left over from another run?)" >&2
      exit 1
    fi
  done
}

# Starts `soma tfserving` serving one fixture model (iris, mlp1024, ...) alone on the fixed
# ports 18500 (gRPC) and 18501 (REST) and waits until it is ready; sets `server_pid`. Its log
# and model config go beside <log>.
start_model_tfserving() { # <model> <soma binary> <log file> [flag...]
  local model=$1 bin=$2 log=$3 config
  shift 3
  config="$log.models.config"
  cat >"$config" <<CONFIG
model_config_list {
  config { name: "$model" base_path: "$PWD/fixtures/models/$model" model_platform: "tensorflow" }
}
CONFIG
  require_free 18500 18501
  "$bin" tfserving --port 18500 --rest_api_port 18501 --model_config_file "$config" "$@" \
    >"$log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 300); do
    curl -sf -o /dev/null http://127.0.0.1:18501/v2/health/ready && return 0
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$log" >&2
  exit 1
}

# CPU time (user + system, in clock ticks) that process <pid> has used so far.
cpu_ticks() { # <pid>
  awk '{print $14 + $15}' "/proc/$1/stat"
}

# Microseconds of CPU per request between two `cpu_ticks` readings.
us_per_request() { # <ticks before> <ticks after> <requests>
  echo "($2 - $1) * 1000000 / $(getconf CLK_TCK) / $3" | bc -l
}
