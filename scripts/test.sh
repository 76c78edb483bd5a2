#!/usr/bin/env bash
# The whole test suite on a fresh machine: setup, then pytest. The fixtures in tests/conftest.py
# start the local stack (PostgreSQL, Redis, Kafka) through `flowlens stack up --mode full` and
# stop what they started. Extra arguments go to pytest (e.g. scripts/test.sh tests/ingest -x).
# Exit status: pytest's, except that "no tests collected" (5) is a failure too.
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup.sh
source scripts/setup.sh || exit 1
set +e
export GX_ANALYTICS_ENABLED=false
.venv/bin/pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "scripts/test.sh: pytest collected no tests; treating that as a failure" >&2
  exit 1
fi
exit "$rc"
