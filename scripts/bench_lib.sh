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
