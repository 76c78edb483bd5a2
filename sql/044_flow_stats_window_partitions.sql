-- 044: a window's flow_stats rows become their own partition, loaded unindexed and then attached.
--
-- Until now a window's rows were COPYed into the day partition, so both of its B-trees (the key and
-- 036's flow_stats_pair) took one insert per row. Now a day created from here on is itself
-- partitioned by window_start, and assets/flow_stats.py writes a window in one transaction:
-- stage_flow_stats_window creates a bare table with the window's bounds as a CHECK, the rows are
-- COPYed into it, and attach_flow_stats_window builds both indexes in one sorted pass each, drops
-- the window's previous partition (a re-run replaces the window whole) and ATTACHes the new one.
-- ATTACH adopts indexes that match the parent's and skips its validation scan because the CHECK
-- implies the bounds; an index the parent gains later is simply built by ATTACH.
-- Days created before 044 stay plain tables: their windows keep the DELETE + COPY path
-- (stage_flow_stats_window returns NULL for them).
--
-- SECURITY DEFINER for the reason given at ensure_day_partitions (001): writers own no tables, and
-- CREATE/ATTACH need ownership. Readers of the day wait for the DROP of a re-run only between the
-- DROP and the commit (the indexes are built before it).

-- Creates (if missing) the day partition of flowlens.flow_stats holding w_start, partitioned by
-- window_start, and a fresh empty table for the window [w_start, w_end). Returns the table's
-- qualified name, or NULL when the day is a plain table created before 044.
CREATE OR REPLACE FUNCTION flowlens.stage_flow_stats_window(w_start timestamptz, w_end timestamptz)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    day date := (w_start AT TIME ZONE 'UTC')::date;
    day_name text := format('flow_stats_%s', to_char(day, 'YYYYMMDD'));
    stage_name text := format('%s_%s_stage', day_name, to_char(w_start AT TIME ZONE 'UTC', 'HH24MI'));
BEGIN
    IF to_regclass(format('flowlens.%I', day_name)) IS NULL THEN
        BEGIN
            EXECUTE format(
                'CREATE TABLE flowlens.%I PARTITION OF flowlens.flow_stats FOR VALUES FROM (%L) TO (%L)'
                ' PARTITION BY RANGE (window_start)',
                day_name, day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
        EXCEPTION WHEN duplicate_table THEN
            NULL;  -- a concurrent writer created it first
        END;
    END IF;
    IF (SELECT relkind FROM pg_class WHERE oid = format('flowlens.%I', day_name)::regclass) <> 'p' THEN
        RETURN NULL;
    END IF;
    EXECUTE format('DROP TABLE IF EXISTS flowlens.%I', stage_name);
    EXECUTE format(
        'CREATE TABLE flowlens.%I (LIKE flowlens.flow_stats INCLUDING DEFAULTS,'
        ' CONSTRAINT %I CHECK (window_start >= %L AND window_start < %L))',
        stage_name, stage_name || '_bounds', w_start, w_end);
    RETURN format('flowlens.%I', stage_name);
END $$;

-- Indexes the staged window like flowlens.flow_stats (its key, then 036's flow_stats_pair), replaces
-- the window's partition by it and attaches it to its day.
CREATE OR REPLACE FUNCTION flowlens.attach_flow_stats_window(stage regclass, w_start timestamptz, w_end timestamptz)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    stage_name text := (SELECT relname FROM pg_class WHERE oid = stage);
    day_name text := format('flow_stats_%s', to_char(w_start AT TIME ZONE 'UTC', 'YYYYMMDD'));
    leaf_name text := format('%s_%s', day_name, to_char(w_start AT TIME ZONE 'UTC', 'HH24MI'));
BEGIN
    IF stage_name IS DISTINCT FROM leaf_name || '_stage' THEN
        RAISE EXCEPTION '% is not the staged flow_stats window of %', stage, w_start;
    END IF;
    EXECUTE format(
        'ALTER TABLE flowlens.%I ADD CONSTRAINT %I'
        ' PRIMARY KEY (window_start, client_addr, server_addr, server_port, protocol)',
        stage_name, stage_name || '_pkey');
    EXECUTE format(
        'CREATE INDEX %I ON flowlens.%I (client_addr, server_addr, server_port, protocol, window_start)',
        stage_name || '_pair', stage_name);
    EXECUTE format('DROP TABLE IF EXISTS flowlens.%I', leaf_name);
    EXECUTE format('ALTER TABLE flowlens.%I RENAME TO %I', stage_name, leaf_name);
    EXECUTE format('ALTER INDEX flowlens.%I RENAME TO %I', stage_name || '_pkey', leaf_name || '_pkey');
    EXECUTE format('ALTER INDEX flowlens.%I RENAME TO %I', stage_name || '_pair', leaf_name || '_pair');
    EXECUTE format(
        'ALTER TABLE flowlens.%I ATTACH PARTITION flowlens.%I FOR VALUES FROM (%L) TO (%L)',
        day_name, leaf_name, w_start, w_end);
END $$;

REVOKE EXECUTE ON FUNCTION flowlens.stage_flow_stats_window(timestamptz, timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION flowlens.attach_flow_stats_window(regclass, timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION flowlens.stage_flow_stats_window(timestamptz, timestamptz) TO flowlens_writer;
GRANT EXECUTE ON FUNCTION flowlens.attach_flow_stats_window(regclass, timestamptz, timestamptz) TO flowlens_writer;
