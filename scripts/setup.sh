#!/usr/bin/env bash
# Prepare the development environment: Python venv, test model fixtures, soma binary.
# Idempotent; each step is skipped when its inputs have not changed.
# `--no-build` skips the release build (scripts/test.sh builds what the tests need).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON_PREFERRED=/root/.pyenv/versions/3.11.7/bin/python3.11
VENV=.venv
REQ=scripts/requirements.txt
REQ_NODEPS=scripts/requirements-nodeps.txt
REQ_STAMP="$VENV/.soma-requirements.sha256"
GEN=scripts/make_models.py
MODELS=fixtures/models
MODELS_STAMP="$MODELS/.stamp"

sha() { sha256sum "$1" | cut -d' ' -f1; }

# Several checkouts/engineers may run this at once: serialise on a per-checkout lock.
if command -v flock >/dev/null 2>&1; then
  LOCK="${TMPDIR:-/tmp}/soma-setup-$(pwd -P | sha256sum | cut -c1-16).lock"
  exec 9>"$LOCK"
  flock 9
fi

# Debian packages the tests use: redis-server for the Redis + S3 backend tests
# (soma_testkit::RedisServer), openssl to make the TLS tests' certificates
# (soma_testkit::TestPki). Installed only when missing; needs root (CI machines) or sudo.
MISSING=""
for tool in redis-server openssl; do
  if command -v "$tool" >/dev/null 2>&1; then
    echo "==> $tool present"
  else
    MISSING="$MISSING $tool"
  fi
done
if [ -n "$MISSING" ]; then
  echo "==> installing$MISSING"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # shellcheck disable=SC2086 # one word per package
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $MISSING >/dev/null
fi

# An existing venv on another Python than 3.11 is rebuilt.
if [ -x "$VENV/bin/python" ] &&
  ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
  echo "==> $VENV is not Python 3.11: recreating it"
  rm -rf "$VENV"
fi

if [ ! -x "$VENV/bin/python" ]; then
  if [ -x "$PYTHON_PREFERRED" ]; then
    PY="$PYTHON_PREFERRED"
  elif command -v python3.11 >/dev/null 2>&1; then
    PY="$(command -v python3.11)"
  else
    echo "error: python3.11 not found (looked for $PYTHON_PREFERRED and python3.11 on PATH)" >&2
    exit 1
  fi
  echo "==> creating $VENV with $PY"
  "$PY" -m venv "$VENV"
fi

want="$(cat "$REQ" "$REQ_NODEPS" | sha256sum | cut -d' ' -f1)"
have="$(cat "$REQ_STAMP" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
  echo "==> installing Python requirements"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ"
  # Packages whose declared dependencies would pull a second TensorFlow (see the file).
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r "$REQ_NODEPS"
  echo "$want" > "$REQ_STAMP"
else
  echo "==> Python requirements up to date"
fi

want="$(sha "$GEN")"
have="$(cat "$MODELS_STAMP" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
  echo "==> generating model fixtures in $MODELS"
  # TensorFlow's start-up chatter goes to a log, shown only if generation fails.
  log="$(mktemp)"
  if ! TF_CPP_MIN_LOG_LEVEL=2 "$VENV/bin/python" "$GEN" "$MODELS" 2>"$log"; then
    cat "$log" >&2
    rm -f "$log"
    echo "error: $GEN failed" >&2
    exit 1
  fi
  rm -f "$log"
  echo "$want" > "$MODELS_STAMP"
else
  echo "==> model fixtures up to date"
fi

if [ "${1:-}" != "--no-build" ]; then
  echo "==> building soma (release)"
  cargo build --quiet --release --bin soma
fi
echo "==> set-up done"
