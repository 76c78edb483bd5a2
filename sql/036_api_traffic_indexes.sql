-- 036: the asset detail's traffic reads (flowlens_dagster/api/queries.py: asset_detail) find their
-- flow_stats rows by address. flow_stats' key starts with window_start, so without these indexes
-- each dependency's bytes (one dependency: client, server, port, protocol) and the asset's series
-- (client or server = the asset) read every row of the range: seconds per request on a large map.
-- Two indexes: the dependency's key with the window last (a dependency's bytes in a range, and the
-- series' client side), and the server address (the series' server side; a bitmap of both).
-- They cost flow_stats' window loads some writing; the rollups got theirs in 035.
CREATE INDEX IF NOT EXISTS flow_stats_pair
    ON flowlens.flow_stats (client_addr, server_addr, server_port, protocol, window_start);
CREATE INDEX IF NOT EXISTS flow_stats_server ON flowlens.flow_stats (server_addr);
