-- 001: schema flowlens, landing, aggregates, topology, changes and the window-load control table.
-- Every statement is idempotent: the migration runner may apply this file to a database that has it.

CREATE SCHEMA IF NOT EXISTS flowlens;

-- Day partitions are created ahead of time by the code that writes (never by hand):
-- SELECT flowlens.ensure_day_partitions('flowlens.flow_raw', '2026-11-26', 2);
-- SECURITY DEFINER: writers (role flowlens_writer, see 002) do not own the parent tables, which
-- CREATE TABLE ... PARTITION OF requires; the function runs as the schema owner instead, and the
-- new partitions inherit the owner's default privileges. search_path is pinned so a caller cannot
-- redirect unqualified names.
CREATE OR REPLACE FUNCTION flowlens.ensure_day_partitions(parent regclass, first_day date, days integer)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d date;
    created integer := 0;
    parent_name text := (SELECT relname FROM pg_class WHERE oid = parent);
    part text;
BEGIN
    FOR i IN 0 .. GREATEST(days, 1) - 1 LOOP
        d := first_day + i;
        part := format('%s_%s', parent_name, to_char(d, 'YYYYMMDD'));
        IF to_regclass(format('flowlens.%I', part)) IS NULL THEN
            BEGIN
                EXECUTE format(
                    'CREATE TABLE flowlens.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                    part, parent, d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
                created := created + 1;
            EXCEPTION WHEN duplicate_table THEN
                NULL;  -- a concurrent writer created it first
            END;
        END IF;
    END LOOP;
    RETURN created;
END $$;

-- Minimal-mode landing: one row per decoded flow, exactly the normalized flow record.
CREATE TABLE IF NOT EXISTS flowlens.flow_raw (
    receive_time        timestamptz NOT NULL,
    exporter            inet        NOT NULL,
    observation_domain  bigint      NOT NULL,
    flow_version        smallint    NOT NULL,
    flow_start          timestamptz,
    flow_end            timestamptz,
    src_addr            inet        NOT NULL,
    dst_addr            inet        NOT NULL,
    src_port            integer     NOT NULL,
    dst_port            integer     NOT NULL,
    protocol            smallint    NOT NULL,
    tcp_flags           integer     NOT NULL,
    bytes               bigint      NOT NULL,
    packets             bigint      NOT NULL,
    sampling_rate       bigint      NOT NULL,
    input_if            bigint,
    output_if           bigint,
    src_as              bigint,
    dst_as              bigint,
    direction           smallint
) PARTITION BY RANGE (receive_time);
CREATE INDEX IF NOT EXISTS flow_raw_receive_time_brin ON flowlens.flow_raw USING brin (receive_time);

-- Each ingest instance says how far it has landed; the pipeline's sensor closes a window when every
-- live instance is past its end plus grace (Kafka mode publishes the same on flows.raw).
CREATE TABLE IF NOT EXISTS flowlens.ingest_watermarks (
    instance      text        PRIMARY KEY,
    landed_through timestamptz NOT NULL,
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    flows_landed  bigint      NOT NULL DEFAULT 0,
    started_at    timestamptz NOT NULL DEFAULT now()
);

-- 5-minute aggregates: who talks to whom on which service.
CREATE TABLE IF NOT EXISTS flowlens.flow_stats (
    window_start  timestamptz NOT NULL,
    client_addr   inet        NOT NULL,
    server_addr   inet        NOT NULL,
    server_port   integer     NOT NULL,
    protocol      smallint    NOT NULL,
    bytes         bigint      NOT NULL,
    packets       bigint      NOT NULL,
    flows         bigint      NOT NULL,
    first_seen    timestamptz NOT NULL,
    last_seen     timestamptz NOT NULL,
    PRIMARY KEY (window_start, client_addr, server_addr, server_port, protocol)
) PARTITION BY RANGE (window_start);

-- The operator's estate (loaded from the inventory file): networks or single addresses.
CREATE TABLE IF NOT EXISTS flowlens.inventory (
    network      cidr        PRIMARY KEY,
    name         text        NOT NULL,
    owner        text,
    environment  text,
    tags         text[]      NOT NULL DEFAULT '{}',
    services     jsonb       NOT NULL DEFAULT '[]',  -- [{"port": 443, "protocol": 6}, ...]
    loaded_at    timestamptz NOT NULL DEFAULT now()
);

-- Every address seen in traffic, merged with the inventory (known = covered by an inventory entry).
CREATE TABLE IF NOT EXISTS flowlens.assets (
    addr         inet        PRIMARY KEY,
    name         text,
    owner        text,
    environment  text,
    tags         text[]      NOT NULL DEFAULT '{}',
    known        boolean     NOT NULL DEFAULT false,
    hostname     text,
    country      text,
    city         text,
    asn          bigint,
    as_org       text,
    first_seen   timestamptz NOT NULL,
    last_seen    timestamptz NOT NULL
);

-- Service dependencies: client -> server:port/protocol.
CREATE TABLE IF NOT EXISTS flowlens.dependencies (
    client_addr  inet        NOT NULL,
    server_addr  inet        NOT NULL,
    server_port  integer     NOT NULL,
    protocol     smallint    NOT NULL,
    first_seen   timestamptz NOT NULL,
    last_seen    timestamptz NOT NULL,
    PRIMARY KEY (client_addr, server_addr, server_port, protocol)
);
CREATE INDEX IF NOT EXISTS dependencies_server ON flowlens.dependencies (server_addr, server_port, protocol);

-- Detected topology changes, one row per (window, kind, subject): re-detecting is a no-op.
CREATE TABLE IF NOT EXISTS flowlens.changes (
    window_start timestamptz NOT NULL,
    kind         text        NOT NULL CHECK (kind IN ('new_asset', 'new_dependency', 'dependency_gone')),
    subject      text        NOT NULL,  -- '10.0.0.5' or '10.0.0.5 -> 10.0.1.9:443/6'
    addr         inet,
    client_addr  inet,
    server_addr  inet,
    server_port  integer,
    protocol     smallint,
    details      jsonb       NOT NULL DEFAULT '{}',
    detected_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (window_start, kind, subject)
);

-- What each window load read and wrote: the pipeline's audit trail and the reconciliation source.
CREATE TABLE IF NOT EXISTS flowlens.window_loads (
    window_start    timestamptz NOT NULL,
    asset           text        NOT NULL,
    run_id          text,
    source          text        NOT NULL,  -- 'kafka:flows.raw' or 'postgres:flow_raw'
    source_position jsonb       NOT NULL DEFAULT '{}',  -- offsets per partition or receive-time range
    rows_read       bigint      NOT NULL,
    rows_written    bigint      NOT NULL,
    bytes_total     numeric,
    packets_total   numeric,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (window_start, asset)
);
