#!/usr/bin/env bash
# Set up and run FlowLens's main job on the embedded default (minimal mode: PostgreSQL only):
# `flowlens run` brings the stack up, migrates, starts ingest, the generator and Dagster.
# Until flowlens_dagster/run.py exists it does the foundation part: stack up, migrate, Dagster UI.
# Arguments go to `flowlens run`. Stop with Ctrl-C (or SIGTERM); `flowlens stack down` stops the stack.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup.sh
source scripts/setup.sh
if [ -f flowlens_dagster/run.py ]; then
  exec .venv/bin/flowlens run "$@"
fi
.venv/bin/flowlens stack up --mode minimal
.venv/bin/flowlens migrate
exec .venv/bin/flowlens dagster --mode minimal
