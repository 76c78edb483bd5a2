-- 048: the minimal-mode landing also keeps each landed batch whole, as one Arrow IPC stream (the
-- payload Kafka's flows.raw carries), in the same transaction as its rows in flow_raw.
--
-- flow_raw stays what SQL users query: one row per flow. The pipeline reads a window from here
-- instead: sending a row of flow_raw costs PostgreSQL one send function per column (15M rows:
-- about 12 s of server CPU, plus one COPY message per row for the client to take), while a batch
-- is one bytea sent as stored. ingest/land/postgres.py reads the batches only when they hold every
-- row the window has in flow_raw (same snapshot: the row count against sum(flows)), and the rows
-- otherwise (windows landed before this migration, rows inserted by hand).
--
-- A batch never straddles a window: the daemon cuts its batches at window edges. receive_start
-- and receive_end are its first and last receive_time; flows, bytes and packets its totals.
-- Partitioned by day like flow_raw (ensure_day_partitions, drop_day_partitions_before).
CREATE TABLE IF NOT EXISTS flowlens.flow_raw_batches (
    receive_start timestamptz NOT NULL,
    receive_end   timestamptz NOT NULL,
    flows         integer     NOT NULL CHECK (flows > 0),
    bytes         bigint      NOT NULL,
    packets       bigint      NOT NULL,
    arrow         bytea       NOT NULL
) PARTITION BY RANGE (receive_start);

-- The stream is already compressed (Arrow IPC lz4 buffers): out of line, not compressed again.
-- Partitions created later copy the parent's storage.
ALTER TABLE flowlens.flow_raw_batches ALTER COLUMN arrow SET STORAGE EXTERNAL;
CREATE INDEX IF NOT EXISTS flow_raw_batches_receive_start ON flowlens.flow_raw_batches (receive_start);
