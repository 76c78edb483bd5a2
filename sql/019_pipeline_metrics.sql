-- 019: the pipeline's Prometheus counters. Dagster runs each step in its own process (and, scaled
-- out, on other hosts), so counters live here: each step adds what it counted since its last flush
-- (assets/metrics.py) and `flowlens metrics` serves the sums over HTTP. Idempotent.

CREATE TABLE IF NOT EXISTS flowlens.pipeline_metrics (
    sample      text             NOT NULL,  -- exposition name: flowlens_pg_writes_total, ..._bucket
    labels      jsonb            NOT NULL DEFAULT '{}',
    family      text             NOT NULL,  -- metric family: flowlens_pg_writes, flowlens_pg_write_latency_seconds
    kind        text             NOT NULL CHECK (kind IN ('counter', 'histogram')),
    value       double precision NOT NULL,
    updated_at  timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (sample, labels)
);
