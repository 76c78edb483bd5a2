#!/usr/bin/env bash
# FlowLens setup on a fresh Debian machine (idempotent; fast when everything is already there):
#   1. Debian packages the stack and the tests use (only those missing; needs root or sudo),
#   2. .venv with the pinned dependencies (pip install -c requirements.lock -e ".[dev]"),
#      skipped when pyproject.toml and requirements.lock are unchanged since the last install,
#   3. the web console (console/: npm ci && npm run build) when its lockfile or sources changed.
# Kafka's jars come later, from Maven Central, on the first `flowlens stack up` in a Kafka mode.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "[setup] $*" >&2; }

# Debian package -> a file it installs (checked instead of dpkg, so a manual install also counts).
declare -A PACKAGES=(
  [postgresql-15]=/usr/lib/postgresql/15/bin/postgres
  [redis-server]=/usr/bin/redis-server
  [openjdk-17-jre-headless]=/usr/lib/jvm/java-17-openjdk-amd64/bin/java
  [maven]=/usr/bin/mvn
  [softflowd]=/usr/sbin/softflowd
  [nfdump]=/usr/bin/nfdump
  [tshark]=/usr/bin/tshark
  [faketime]=/usr/bin/faketime
  [prometheus]=/usr/bin/promtool
  [prometheus-alertmanager]=/usr/bin/prometheus-alertmanager
  [chromium]=/usr/bin/chromium
  [npm]=/usr/bin/npm
)
missing=()
for pkg in "${!PACKAGES[@]}"; do
  [ -e "${PACKAGES[$pkg]}" ] || missing+=("$pkg")
done
PYTHON="${PYTHON:-python3}"
# Debian's python3 needs python3-venv to create a virtualenv; other Pythons bring it along.
if [ ! -x .venv/bin/python ] && ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
  missing+=(python3-venv)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  log "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.flowlens-install-stamp
want="$(cat pyproject.toml requirements.lock | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! .venv/bin/python -c 'import flowlens_dagster' 2>/dev/null; then
  log "installing the pinned dependencies into .venv"
  .venv/bin/python -m pip install -q -c requirements.lock -e ".[dev]"
  echo "$want" >"$stamp"
fi
# numba compiles the sFlow kernel (ingest/decode/sflow_kernel.py) into its on-disk cache here, not
# on the ingest daemon's first sFlow call (a few seconds); a no-op when the cache is current.
.venv/bin/python -c 'from ingest.decode import sflow_kernel; sflow_kernel.warm()'

# The web console: JavaScript from npm through console/package-lock.json, bundled into the folder
# the API serves (flowlens_dagster/api/static/, not in git).
console_stamp=console/node_modules/.flowlens-build-stamp
console_want="$(cd console && cat package.json package-lock.json build.mjs src/* | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$console_stamp" 2>/dev/null)" != "$console_want" ] || [ ! -f flowlens_dagster/api/static/index.html ]; then
  log "building the web console (npm ci && npm run build in console/)"
  (cd console && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent)
  echo "$console_want" >"$console_stamp"
fi

# initdb runs as the `postgres` account when we are root: it must be able to reach the state dir.
if [ "$(id -u)" -eq 0 ] && [ -z "${FLOWLENS_STATE_DIR:-}" ] && id postgres >/dev/null 2>&1; then
  if ! runuser -u postgres -- test -x "$PWD"; then
    export FLOWLENS_STATE_DIR="/var/tmp/flowlens-$(echo "$PWD" | sha256sum | cut -c1-12)"
    log "$PWD is not reachable by the postgres account; state goes to $FLOWLENS_STATE_DIR"
  fi
fi
log "ready: $(.venv/bin/python --version), $(.venv/bin/flowlens --help | head -1 | cut -c1-40)..."
