-- 047: lets the pipeline drop and rebuild dependencies_server_clients (030) around a merge that adds
-- more edges than the table holds (assets/topology.py: merge_dependencies).
--
-- A window inserts its new edges into every index of dependencies; into this one (by server) in
-- random order, one leaf page at a time. When the table is empty or small (the first windows of a
-- deployment) nearly every edge is new, and building the index once, in one sorted pass over the
-- whole table after the INSERT, is cheaper than a million random inserts: 1M edges into an empty
-- table, same session: 5.2 s with the index kept, 3.7 s dropped and rebuilt.
--
-- SECURITY DEFINER for the reason given at ensure_day_partitions (001): writers own no tables and
-- DROP/CREATE INDEX need ownership. Dropping takes an ACCESS EXCLUSIVE lock on dependencies until
-- the caller's transaction ends: readers wait for that window's merge (only when it outgrows the
-- table, so only early on), and they never see the table without the index.
CREATE OR REPLACE FUNCTION flowlens.dependencies_server_index(present boolean)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF present THEN
        CREATE INDEX IF NOT EXISTS dependencies_server_clients
            ON flowlens.dependencies (server_addr, server_port, protocol) INCLUDE (client_addr);
    ELSE
        DROP INDEX IF EXISTS flowlens.dependencies_server_clients;
    END IF;
END $$;

REVOKE EXECUTE ON FUNCTION flowlens.dependencies_server_index(boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION flowlens.dependencies_server_index(boolean) TO flowlens_writer;
