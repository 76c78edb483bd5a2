-- 046: flow_stats' key in the dependency's order, window last; 036's flow_stats_pair goes.
--
-- Since 044 a window's rows are their own partition, so within one the key (window first) and
-- flow_stats_pair (window last) held the same order and each window built both. The key ordered
-- like flow_stats_pair serves both uses: uniqueness, and the API's reads of a dependency's or a
-- client's rows over a range (flowlens_dagster/api/queries.py: EDGE_BYTES, _series_rows); a window's
-- own rows are found by partition pruning. One index build per window instead of two.
-- Days created before 044 hold many windows in one table: there reading one window's rows
-- (rollups, change detection) now scans the day until retention drops it.
-- Rebuilds the key of every existing partition once (this migration's cost grows with the data).
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

-- 044's attach, building the one key.
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
    EXECUTE format('ALTER TABLE flowlens.%I RENAME TO %I', stage_name, leaf_name);
    EXECUTE format('ALTER INDEX flowlens.%I RENAME TO %I', stage_name || '_pkey', leaf_name || '_pkey');
    EXECUTE format(
        'ALTER TABLE flowlens.%I ATTACH PARTITION flowlens.%I FOR VALUES FROM (%L) TO (%L)',
        day_name, leaf_name, w_start, w_end);
END $$;
