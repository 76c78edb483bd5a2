-- 010: what the Dagster pipeline adds: window bookkeeping on assets/dependencies, hourly and daily
-- rollups of flow_stats (partitioned by day), and dropping old day partitions for retention.
-- Idempotent like every migration.

-- The 5-minute windows in which an asset / dependency was first and last seen. Change detection
-- compares windows (not flow timestamps, which a long flow can date before its window).
ALTER TABLE flowlens.assets ADD COLUMN IF NOT EXISTS first_window timestamptz;
ALTER TABLE flowlens.assets ADD COLUMN IF NOT EXISTS last_window timestamptz;
ALTER TABLE flowlens.dependencies ADD COLUMN IF NOT EXISTS first_window timestamptz;
ALTER TABLE flowlens.dependencies ADD COLUMN IF NOT EXISTS last_window timestamptz;
CREATE INDEX IF NOT EXISTS assets_first_window ON flowlens.assets (first_window);
CREATE INDEX IF NOT EXISTS dependencies_first_window ON flowlens.dependencies (first_window);

CREATE TABLE IF NOT EXISTS flowlens.flow_stats_hourly (
    hour_start    timestamptz NOT NULL,
    client_addr   inet        NOT NULL,
    server_addr   inet        NOT NULL,
    server_port   integer     NOT NULL,
    protocol      smallint    NOT NULL,
    bytes         bigint      NOT NULL,
    packets       bigint      NOT NULL,
    flows         bigint      NOT NULL,
    first_seen    timestamptz NOT NULL,
    last_seen     timestamptz NOT NULL,
    PRIMARY KEY (hour_start, client_addr, server_addr, server_port, protocol)
) PARTITION BY RANGE (hour_start);

CREATE TABLE IF NOT EXISTS flowlens.flow_stats_daily (
    day_start     timestamptz NOT NULL,
    client_addr   inet        NOT NULL,
    server_addr   inet        NOT NULL,
    server_port   integer     NOT NULL,
    protocol      smallint    NOT NULL,
    bytes         bigint      NOT NULL,
    packets       bigint      NOT NULL,
    flows         bigint      NOT NULL,
    first_seen    timestamptz NOT NULL,
    last_seen     timestamptz NOT NULL,
    PRIMARY KEY (day_start, client_addr, server_addr, server_port, protocol)
) PARTITION BY RANGE (day_start);

-- Retention: drop the day partitions (named <parent>_YYYYMMDD by ensure_day_partitions) of days
-- before `before`. Returns the dropped partition names.
CREATE OR REPLACE FUNCTION flowlens.drop_day_partitions_before(parent regclass, before date)
RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    part record;
BEGIN
    FOR part IN
        SELECT c.relname
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = parent
          AND c.relname ~ '_[0-9]{8}$'
          AND to_date(right(c.relname, 8), 'YYYYMMDD') < before
        ORDER BY c.relname
    LOOP
        EXECUTE format('DROP TABLE IF EXISTS flowlens.%I', part.relname);
        RETURN NEXT part.relname;
    END LOOP;
END $$;
