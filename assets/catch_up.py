"""Catch-up runs: what a window run defers while the pipeline is behind.

When lag is above ``backpressure.kafka.pause_at_lag_seconds`` the watermark sensor requests
catch-up runs (several windows, one run) tagged :data:`CATCH_UP_TAG`. Such a run does only the
work the tables need: reverse DNS lookups are deferred (a later window looks the addresses up;
hostnames of the caught-up windows stay empty) and nothing is produced to ``flows.enriched``.
Everything written to PostgreSQL and the lake is the same as in a normal run.
"""

from __future__ import annotations

import dagster as dg

CATCH_UP_TAG = "flowlens/catch_up"


def catching_up(context: dg.AssetExecutionContext) -> bool:
    """Whether this run is a catch-up run (its non-blocking work is deferred)."""
    return context.run.tags.get(CATCH_UP_TAG) == "true"
