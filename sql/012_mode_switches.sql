-- 012: auto mode's landing switches. Each receiving process of the ingest daemon records here every
-- switch between PostgreSQL (flow_raw) and Kafka (flows.raw), so the pipeline knows a window may
-- hold flows in both landings and shows the switches as metadata of the window.
-- Idempotent like every migration; default privileges (002) grant it to the roles.

CREATE TABLE IF NOT EXISTS flowlens.mode_switches (
    instance          text             NOT NULL,  -- ingest instance id (hostname:pid/wN)
    switched_at       timestamptz      NOT NULL,  -- on the window clock: newest receive_time landed
    from_landing      text             NOT NULL,  -- 'postgres' or 'kafka'
    to_landing        text             NOT NULL,
    rate_flows_per_s  double precision NOT NULL,  -- the measured rate that decided it (daemon-wide estimate)
    reason            text             NOT NULL,
    PRIMARY KEY (instance, switched_at)
);
CREATE INDEX IF NOT EXISTS mode_switches_at ON flowlens.mode_switches (switched_at);
