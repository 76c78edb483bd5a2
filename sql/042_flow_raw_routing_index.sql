-- 042: where the rows with an AS path or communities are. Reading a window of flow_raw takes those
-- rows in a second COPY (ingest/land/postgres.py); this partial index finds them without scanning
-- the window again, and stays empty (costs nothing) where no sFlow gateway records arrive.
CREATE INDEX IF NOT EXISTS flow_raw_routed ON flowlens.flow_raw (receive_time)
    WHERE as_path IS NOT NULL OR communities IS NOT NULL;
