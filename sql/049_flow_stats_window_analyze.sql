-- 049: two steps of a window's flow_stats write (assets/flow_stats.py, after 044's staging).
--
-- default_flow_stats_window: the staged table's window_start defaults to the window, so the COPY
-- leaves that column out (one value less to send and parse per row: 1M rows, 0.74 -> 0.66 s).
--
-- analyze_flow_stats_window: the attached partition is analyzed (its window_start and row count)
-- in the same transaction. A new partition has no statistics until autovacuum gets to it, and the
-- window's first queries come at once: the asset checks, the API. Without statistics PostgreSQL
-- estimates `window_start = <window>` at 0.5% of the partition's rows, and planned
-- dependencies_cover_stats (flowlens_dagster/checks/reconcile.py) as a nested loop with one index
-- lookup in dependencies per row: 1M rows, 2.2 s instead of 0.5 s with a hash join. Analyzing
-- window_start alone fixes that estimate for 0.08 s per 1M rows (every column: 0.14-0.16 s).
--
-- SECURITY DEFINER for the reason given at 044: only a table's owner may alter or analyze it, and
-- writers own no tables. Both act only on flow_stats tables of the window they are given.
CREATE OR REPLACE FUNCTION flowlens.default_flow_stats_window(stage regclass, w_start timestamptz)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    stage_name text := (SELECT relname FROM pg_class WHERE oid = stage);
BEGIN
    IF stage_name IS DISTINCT FROM format('flow_stats_%s_stage', to_char(w_start AT TIME ZONE 'UTC', 'YYYYMMDD_HH24MI')) THEN
        RAISE EXCEPTION '% is not the staged flow_stats window of %', stage, w_start;
    END IF;
    EXECUTE format('ALTER TABLE flowlens.%I ALTER COLUMN window_start SET DEFAULT %L', stage_name, w_start);
END $$;

CREATE OR REPLACE FUNCTION flowlens.analyze_flow_stats_window(w_start timestamptz)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    leaf_name text := format('flow_stats_%s', to_char(w_start AT TIME ZONE 'UTC', 'YYYYMMDD_HH24MI'));
BEGIN
    IF to_regclass(format('flowlens.%I', leaf_name)) IS NOT NULL THEN
        EXECUTE format('ANALYZE flowlens.%I (window_start)', leaf_name);
    END IF;
END $$;
