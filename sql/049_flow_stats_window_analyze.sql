-- 049: a window's flow_stats partition is analyzed as it is attached (same transaction).
--
-- A new partition has no statistics until autovacuum gets to it, and the first queries of the
-- window come at once: the asset checks, the API. Without statistics PostgreSQL estimates
-- `window_start = <window>` at 0.5% of the partition's rows, and chose for
-- dependencies_cover_stats (flowlens_dagster/checks/reconcile.py) a nested loop with one index
-- lookup in dependencies per row: 1M rows, 2.2 s instead of 0.5 s with a hash join. ANALYZE samples
-- 30,000 rows (about 0.14 s for 1M rows). assets/pg.py calls this right after
-- attach_flow_stats_window (044). SECURITY DEFINER for the reason given there: only a table's
-- owner may analyze it, and writers own no tables.
CREATE OR REPLACE FUNCTION flowlens.analyze_flow_stats_window(w_start timestamptz)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    leaf_name text := format('flow_stats_%s', to_char(w_start AT TIME ZONE 'UTC', 'YYYYMMDD_HH24MI'));
BEGIN
    IF to_regclass(format('flowlens.%I', leaf_name)) IS NOT NULL THEN
        EXECUTE format('ANALYZE flowlens.%I', leaf_name);
    END IF;
END $$;
