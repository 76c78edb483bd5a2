"""``flow_stats``: per window, client, server, server port and protocol: bytes, packets, flows, first/last seen.

Aggregated from the window's Parquet file set by DuckDB (memory follows the distinct keys, not
the flows), one shard at a time when the lake window is sharded (``pipeline.shards``:
shards hold disjoint address pairs, so their rows are simply concatenated), then written in one
transaction: binary COPY into a fresh unindexed table, build its key (dependency order, window
last, which also serves the API's reads by dependency) in one sorted pass, attach it
as the window's own partition of its day in place of the previous one (``sql/044``), and record
the load. Re-running a window leaves exactly the rows one clean run leaves. With
``pipeline.shards`` > 1 the code location runs each shard as its own Dagster step instead and
commits the staged shards through the same write (``assets.flow_stats_shards``).

Why a partition per window: COPYed into the day partition, each row was inserted into both
B-trees, and 036's dependency-key index (window last) spread a window's keys over every leaf page
the day's earlier windows filled: the 5th window of a day took 2.3x the time of the new path
(README "Pipeline"). Days created before ``sql/044`` are one table; their windows keep that path
(delete the window's rows, COPY into the day).

The rows are sent in key order: the index build's sort then finds them sorted, and the
dependencies merge reads the window in its key order (in a day created before ``sql/044``, index
inserts land on the same few leaf pages one after another instead of a random page each).
"""

import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from assets import lake as lake_files
from assets.addresses import with_text
from assets.keys import ENRICHED_FLOWS, FLOW_STATS
from assets.metadata import definition_metadata, markdown_table, materialization_metadata
from assets.partitions import five_minute_partitions
from assets.pg import (
    attach_flow_stats_window,
    default_flow_stats_window,
    ensure_day_partitions,
    record_window_load,
    stage_flow_stats_window,
)
from assets.resources import LakeResource, PostgresResource
from assets.windows import WindowResult, run_id, run_windows, timed
from ingest.addresses import address_matrix
from ingest.land.pgbinary import copy_arrow
from ingest.window import WINDOW

TABLE = "flowlens.flow_stats"
TOP_TALKERS = 10
STATS_SCHEMA = {
    "window_start": pl.Datetime("us", "UTC"), "client_addr": pl.Binary, "server_addr": pl.Binary,
    "server_port": pl.Int32, "protocol": pl.Int16, "bytes": pl.Int64, "packets": pl.Int64, "flows": pl.Int64,
    "first_seen": pl.Datetime("us", "UTC"), "last_seen": pl.Datetime("us", "UTC"),
}  # fmt: skip
KEY = ("client_addr", "server_addr", "server_port", "protocol")
COLUMNS = [
    ("window_start", "timestamptz", "start of the 5-minute receive-time window"),
    ("client_addr", "inet", "client address"),
    ("server_addr", "inet", "server address"),
    ("server_port", "integer", "service port (0 for protocols without ports)"),
    ("protocol", "smallint", "IP protocol number"),
    ("bytes", "bigint", "sampling-scaled bytes"),
    ("packets", "bigint", "sampling-scaled packets"),
    ("flows", "bigint", "flow records"),
    ("first_seen", "timestamptz", "earliest flow start (receive time when not exported)"),
    ("last_seen", "timestamptz", "latest flow end (receive time when not exported)"),
]
PG_TYPES = ["timestamptz", "inet", "inet", "int4", "int2", "int8", "int8", "int8", "timestamptz", "timestamptz"]
LINEAGE = {
    "window_start": [(ENRICHED_FLOWS, "window_start")],
    "client_addr": [(ENRICHED_FLOWS, "client_addr")],
    "server_addr": [(ENRICHED_FLOWS, "server_addr")],
    "server_port": [(ENRICHED_FLOWS, "server_port")],
    "protocol": [(ENRICHED_FLOWS, "protocol")],
    "bytes": [(ENRICHED_FLOWS, "bytes")],
    "packets": [(ENRICHED_FLOWS, "packets")],
    "flows": [(ENRICHED_FLOWS, "receive_time")],
    "first_seen": [(ENRICHED_FLOWS, "flow_start"), (ENRICHED_FLOWS, "receive_time")],
    "last_seen": [(ENRICHED_FLOWS, "flow_end"), (ENRICHED_FLOWS, "receive_time")],
}


AGGREGATE_SQL = """
SELECT $window::TIMESTAMPTZ AS window_start, client_addr, server_addr, server_port::INTEGER AS server_port,
    protocol::SMALLINT AS protocol, sum(bytes)::BIGINT AS bytes, sum(packets)::BIGINT AS packets,
    count(*)::BIGINT AS flows, min(coalesce(flow_start, receive_time)) AS first_seen,
    max(coalesce(flow_end, receive_time)) AS last_seen
FROM read_parquet($files) GROUP BY client_addr, server_addr, server_port, protocol
"""


def aggregate(files: list[Path], window: datetime) -> pl.DataFrame:
    """The statistics rows of the flows in ``files``, in table column order (Arrow-ready for binary COPY).

    DuckDB's hash aggregate over the Parquet files: its memory follows the distinct keys. (Polars
    2.1's streaming group-by was measured growing with the flows: 0.5 GB for 5M flows, 1 GB for
    15M, with 1M keys; DuckDB 0.65 and 0.73 GB for the same files.)
    """
    if not files:
        return pl.DataFrame(schema=STATS_SCHEMA)
    with duckdb.connect() as con:
        rel = con.sql(AGGREGATE_SQL, params={"window": window, "files": [str(f) for f in files]})
        stats = pl.from_arrow(rel.to_arrow_table())
    return stats.with_columns(pl.col("window_start", "first_seen", "last_seen").dt.convert_time_zone("UTC"))


def top_talkers(stats: pl.DataFrame, n: int = TOP_TALKERS) -> str:
    """Markdown: the client -> server:port/protocol pairs with the most bytes."""
    top = stats.sort("bytes", descending=True).head(n)
    top = with_text(top, {"client_addr": "client", "server_addr": "server"})
    return markdown_table(
        top.select("client", "server", "server_port", "protocol", "bytes", "packets", "flows"), "Top talkers"
    )


def address_order(addresses: pl.Series) -> tuple[np.ndarray, np.ndarray] | None:
    """Two UInt64 columns per 16-byte address that sort the way ``inet`` does; None if a value is not 16 bytes.

    IPv4-mapped values give (low 64 bits = ``0000ffff`` + the IPv4 address, 0), other IPv6
    values (high 64 bits, low 64 bits); so IPv4 sorts by address and below global IPv6, as in
    ``inet``. Sorting integers is several times cheaper than sorting 16-byte binaries. Odd IPv6
    addresses under ``::/64`` (``::1``) land among IPv4 ones: that costs a little speed, never a row.
    """
    matrix = address_matrix(addresses.to_arrow())
    if matrix is None:
        return None
    halves = matrix.view(">u8")
    high, low = halves[:, 0].astype(np.uint64), halves[:, 1].astype(np.uint64)
    v4 = high == 0
    return np.where(v4, low, high), np.where(v4, np.uint64(0), low)


def in_key_order(stats: pl.DataFrame) -> pl.DataFrame:
    """The rows sorted like the primary key (the window is constant), so index inserts append."""
    stats = stats.rechunk()  # the streaming engine's output comes in chunks; gathering from one is ~10x faster
    client, server = address_order(stats["client_addr"]), address_order(stats["server_addr"])
    if client is None or server is None:
        return stats.sort(list(KEY))  # not 16-byte addresses: COPY will refuse them anyway
    halves = {"c0": client[0], "c1": client[1], "s0": server[0], "s1": server[1]}
    # An all-zero column (the low halves when every address is IPv4) cannot change the order:
    # leaving it out makes the usual IPv4 sort a third cheaper.
    keys = pl.DataFrame(
        {
            **{name: values for name, values in halves.items() if values.any()},
            "port": stats["server_port"],
            "proto": stats["protocol"],
        }
    )
    return stats[keys.select(pl.arg_sort_by(keys.columns)).to_series()]


def aggregate_shard(lake: LakeResource, window: datetime, shard: int) -> pl.DataFrame:
    """One shard's statistics rows: a function of the window and the shard alone.

    Shards hold disjoint (client, server) pairs (``assets.lake.shard_of``), so the rows of
    different shards never share a key and need no merging: each shard can be aggregated by its
    own process or host, and the window's write only concatenates them. Memory is bounded by
    the shard's distinct keys (Polars streaming over its Parquet parts), not by its flows.
    """
    return aggregate(lake_files.window_files(lake.window_dir(window), shard), window)


def replace_window(
    conn, window: datetime, shards: Iterable[pl.DataFrame], result: WindowResult, run: str | None
) -> list[pl.DataFrame]:
    """One transaction: COPY each shard's rows (in key order) as it comes into a fresh table, index
    it and attach it as the window's partition in place of the previous one (``sql/044``), record
    the load. Returns each shard's top talkers. A failure in any shard rolls the whole window back,
    so a re-run leaves exactly the rows of one clean run.

    A day partition created before ``sql/044`` is one table: there the window's rows are deleted
    and COPYed straight into it (both indexes updated row by row)."""
    tops = []
    end = window + WINDOW
    with conn.transaction():
        cur = conn.cursor()
        target = stage_flow_stats_window(cur, window, end)
        if target is None:
            ensure_day_partitions(cur, TABLE, window, window)
            cur.execute(f"DELETE FROM {TABLE} WHERE window_start = %s", (window,))
        else:
            default_flow_stats_window(cur, target, window)
        for stats in shards:
            rows = in_key_order(stats).to_arrow()
            if target is None:
                copy_arrow(cur, TABLE, rows, PG_TYPES)
            else:  # the staged table fills window_start itself
                copy_arrow(cur, target, without_window_start(rows, window), PG_TYPES[1:])
            _add_totals(result, stats)
            tops.append(stats.top_k(TOP_TALKERS, by="bytes"))  # no full sort of the window
        if target is not None:
            attach_flow_stats_window(cur, target, window, end)
        record_window_load(cur, result.load_row(run))
    return tops


def without_window_start(rows: pa.Table, window: datetime) -> pa.Table:
    """``rows`` less their ``window_start``, which must be ``window`` in every row."""
    starts = pc.min_max(rows.column("window_start"))
    if rows.num_rows and (starts["min"].as_py() != window or starts["max"].as_py() != window):
        raise ValueError(f"flow_stats rows of window {window} hold window_start {starts['min']} .. {starts['max']}")
    return rows.drop_columns(["window_start"])


def _add_totals(result: WindowResult, stats: pl.DataFrame) -> None:
    result.rows_written += stats.height
    result.bytes_total += int(stats["bytes"].sum() or 0)
    result.packets_total += int(stats["packets"].sum() or 0)


def process_window(
    window: datetime, lake: LakeResource, postgres: PostgresResource, run: str | None = None
) -> WindowResult:
    """Aggregate one window from the lake, shard by shard, and replace its rows in ``flow_stats``."""
    result = WindowResult(window, FLOW_STATS, source=f"lake:{ENRICHED_FLOWS}")
    directory = lake.window_dir(window)
    result.source_position = {"path": str(directory)}
    result.rows_read = int(lake_files.scan_window(directory).select(pl.len()).collect().item())
    shards = lake_files.window_shards(directory)

    def aggregated() -> Iterator[pl.DataFrame]:
        for shard in shards:
            with timed(result, "aggregate"):
                stats = aggregate_shard(lake, window, shard)
            yield stats

    started = time.perf_counter()
    with postgres.connect() as conn:
        tops = replace_window(conn, window, aggregated(), result, run)
    # the write is the whole connection and transaction (as before shards) less the aggregations it waited for
    result.seconds["write_pg"] = round(time.perf_counter() - started - result.seconds.get("aggregate", 0.0), 4)
    result.preview = top_talkers(pl.concat(tops))  # window_shards is never empty
    return result


@dg.asset(
    key=FLOW_STATS,
    deps=[ENRICHED_FLOWS],
    partitions_def=five_minute_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="statistics",
    kinds={"postgres", "polars"},
    description=__doc__,
    metadata=definition_metadata(TABLE, COLUMNS),
)
def flow_stats(
    context: dg.AssetExecutionContext, lake: LakeResource, postgres: PostgresResource
) -> dg.MaterializeResult:
    results = run_windows(context, lambda w: process_window(w, lake, postgres, run_id(context)))
    return dg.MaterializeResult(metadata=run_metadata(results))


def run_metadata(results: list[WindowResult]) -> dict[str, object]:
    """The materialization's metadata (either path: this one-step asset or ``assets.flow_stats_shards``)."""
    meta = materialization_metadata(TABLE, COLUMNS, LINEAGE, results)
    write_s = sum(r.seconds.get("write_pg", 0.0) for r in results)
    if write_s:
        meta["upsert_rows_per_s"] = dg.MetadataValue.float(round(sum(r.rows_written for r in results) / write_s, 1))
    return meta
