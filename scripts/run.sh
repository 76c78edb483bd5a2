#!/usr/bin/env bash
# Set up and run FlowLens's main job on the embedded default (minimal mode: PostgreSQL only):
# setup (Debian packages, .venv), then `flowlens run`: the stack, migrations, the ingest daemon, an
# hour of generated traffic from the recent past (sent at 60x), Dagster with the watermark sensor,
# and a summary of what landed in PostgreSQL. The Dagster UI stays up until Ctrl-C (or SIGTERM),
# which stops everything `flowlens run` started. Running it again only processes what is new.
# Arguments go to `flowlens run` (e.g. --exit, --minutes 30, --port 2056; see `flowlens run --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup.sh
source scripts/setup.sh
exec .venv/bin/flowlens run "$@"
