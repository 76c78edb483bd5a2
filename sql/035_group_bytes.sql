-- 035: bytes between groups of the map (flowlens_dagster/api/group_bytes.py) read the rollups of a
-- time range and keep the rows whose client or server lies in a prefix. The rollups' keys start with
-- the period, so that filter read every row of the range; these indexes find the rows of a prefix
-- at either end (a bitmap of both). Only the rollups get them: they are written once per period,
-- while flow_stats, written every window, keeps its one key (what a range reads from it is the
-- current hour and the range's ragged ends).
CREATE INDEX IF NOT EXISTS flow_stats_hourly_client ON flowlens.flow_stats_hourly (client_addr);
CREATE INDEX IF NOT EXISTS flow_stats_hourly_server ON flowlens.flow_stats_hourly (server_addr);
CREATE INDEX IF NOT EXISTS flow_stats_daily_client ON flowlens.flow_stats_daily (client_addr);
CREATE INDEX IF NOT EXISTS flow_stats_daily_server ON flowlens.flow_stats_daily (server_addr);
