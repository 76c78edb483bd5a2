-- 036: the asset detail's traffic reads (flowlens_dagster/api/queries.py: asset_detail) find their
-- flow_stats rows by address. flow_stats' key starts with window_start, so without these indexes
-- each dependency's bytes (one dependency: client, server, port, protocol) and the asset's series
-- (client or server = the asset) read every row of the range: seconds per request on a large map.
-- One index: the dependency's key with the window last (a dependency's bytes in a range, the
-- series' client side, and its server side through dependencies' server index). Window loads send
-- rows in this order too, so it costs them little; an index by server address alone would be
-- written in random order (15M-flow bench window: COPY rate 350k -> 190k rows/s), so there is none.
-- The rollups got their address indexes in 035.
CREATE INDEX IF NOT EXISTS flow_stats_pair
    ON flowlens.flow_stats (client_addr, server_addr, server_port, protocol, window_start);
