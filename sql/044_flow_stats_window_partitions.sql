-- 044: a window's flow_stats rows become their own partition, loaded unindexed and then attached;
-- flow_stats' key in the dependency's order, window last, replacing 036's flow_stats_pair.
--
-- Until now a window's rows were COPYed into the day partition, so both of its B-trees (the key and
-- 036's flow_stats_pair) took one insert per row, and flow_stats_pair (window last) spread each
-- window's keys over every leaf page the day's earlier windows filled. Now a day created from here
-- on is itself partitioned by window_start, and assets/flow_stats.py writes a window in one
-- transaction: stage_flow_stats_window creates a bare table with the window's bounds as a CHECK,
-- the rows are COPYed into it, and attach_flow_stats_window builds its key in one sorted pass,
-- drops the window's previous partition (a re-run replaces the window whole) and ATTACHes the new
-- one. ATTACH adopts an index that matches the parent's and skips its validation scan because the
-- CHECK implies the bounds; an index the parent gains later is simply built by ATTACH.
-- Days created before 044 stay plain tables: their windows keep the DELETE + COPY path
-- (stage_flow_stats_window returns NULL for them).
--
-- The key: within a window's partition the old key (window first) and flow_stats_pair (window
-- last) hold the same order, so each window would build both. The key ordered like
-- flow_stats_pair serves both uses: uniqueness, and the API's reads of a dependency's or a client's
-- rows over a range (flowlens_dagster/api/queries.py: EDGE_BYTES, _series_rows); a window's own
-- rows are found by partition pruning. In days created before 044 (many windows in one table),
-- reading one window's rows (rollups, change detection) now scans the day until retention drops
-- it. Changing the key rebuilds it in every existing partition once (a cost that grows with the data).
--
-- SECURITY DEFINER for the reason given at ensure_day_partitions (001): writers own no tables, and
-- CREATE/ATTACH need ownership. Readers of the day wait for the DROP of a re-run only between the
-- DROP and the commit (the key is built before it).

DO $$
BEGIN
    IF (SELECT a.attname FROM pg_index x
        JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = x.indkey[0]
        WHERE x.indexrelid = 'flowlens.flow_stats_pkey'::regclass) = 'window_start' THEN
        ALTER TABLE flowlens.flow_stats DROP CONSTRAINT flow_stats_pkey;
        ALTER TABLE flowlens.flow_stats ADD CONSTRAINT flow_stats_pkey
            PRIMARY KEY (client_addr, server_addr, server_port, protocol, window_start);
    END IF;
END $$;
DROP INDEX IF EXISTS flowlens.flow_stats_pair;
-- A database that applied 036 when it also indexed flow_stats by server address: that index would
-- be built for every window's partition, and the API no longer reads it.
DROP INDEX IF EXISTS flowlens.flow_stats_server;


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
    -- The day's default partition takes rows written into flow_stats by anything other than this
    -- pair of functions (an INSERT by hand, a restore): without it they would find no partition.
    IF to_regclass(format('flowlens.%I', day_name || '_default')) IS NULL THEN
        BEGIN
            EXECUTE format('CREATE TABLE flowlens.%I PARTITION OF flowlens.%I DEFAULT', day_name || '_default', day_name);
        EXCEPTION WHEN duplicate_table OR unique_violation THEN
            NULL;  -- a concurrent writer created it first
        END;
    END IF;
    EXECUTE format('DROP TABLE IF EXISTS flowlens.%I', stage_name);
    EXECUTE format(
        'CREATE TABLE flowlens.%I (LIKE flowlens.flow_stats INCLUDING DEFAULTS,'
        ' CONSTRAINT %I CHECK (window_start >= %L AND window_start < %L))',
        stage_name, stage_name || '_bounds', w_start, w_end);
    RETURN format('flowlens.%I', stage_name);
END $$;

-- Builds the staged window's key, replaces the window's partition by it and attaches it to its day.
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
        ' PRIMARY KEY (client_addr, server_addr, server_port, protocol, window_start)',
        stage_name, stage_name || '_pkey');
    EXECUTE format('DROP TABLE IF EXISTS flowlens.%I', leaf_name);
    -- rows of the window that went to the default partition are replaced too (and ATTACH refuses
    -- a range the default partition still holds rows of)
    EXECUTE format('DELETE FROM flowlens.%I WHERE window_start >= %L AND window_start < %L',
                   day_name || '_default', w_start, w_end);
    EXECUTE format('ALTER TABLE flowlens.%I RENAME TO %I', stage_name, leaf_name);
    EXECUTE format('ALTER INDEX flowlens.%I RENAME TO %I', stage_name || '_pkey', leaf_name || '_pkey');
    EXECUTE format(
        'ALTER TABLE flowlens.%I ATTACH PARTITION flowlens.%I FOR VALUES FROM (%L) TO (%L)',
        day_name, leaf_name, w_start, w_end);
END $$;

REVOKE EXECUTE ON FUNCTION flowlens.stage_flow_stats_window(timestamptz, timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION flowlens.attach_flow_stats_window(regclass, timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION flowlens.stage_flow_stats_window(timestamptz, timestamptz) TO flowlens_writer;
GRANT EXECUTE ON FUNCTION flowlens.attach_flow_stats_window(regclass, timestamptz, timestamptz) TO flowlens_writer;
