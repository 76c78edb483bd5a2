"""PostgreSQL landing (minimal mode): flows in ``flowlens.flow_raw``, watermarks in ``ingest_watermarks``.

Writes are one binary COPY per batch (see :mod:`ingest.land.pgbinary`) on a connection from a
psycopg_pool pool sized by ``backpressure.postgresql`` (the scaling model §8.3), inside one transaction, after
making sure the day partition (and the next one) exists. The same transaction stores the batch
whole in ``flow_raw_batches`` (an Arrow IPC stream, as on Kafka): ``flow_raw`` is what SQL users
query, the batches are what the pipeline reads (:meth:`PostgresLanding.read_window_chunks`). A
failed write raises; the daemon keeps the batch, backs off exponentially and retries, so a
PostgreSQL restart costs time, not flows.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import UTC, date, datetime, timedelta

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql
from psycopg_pool import ConnectionPool

from ingest.config import PostgresPool
from ingest.land.base import WHOLE_WINDOW, Watermark, WindowChunks, WindowRead, WindowSummary, read_ahead, rechunk
from ingest.land.ipc import from_ipc, ipc_options, to_ipc
from ingest.land.pgbinary import COPY_IN_SQL, encode_copy
from ingest.land.pgrows import READ_COLUMNS, decode_rows
from ingest.schema import FLOW_SCHEMA
from ingest.window import WINDOW

log = logging.getLogger(__name__)
TABLE = "flow_raw"
BATCHES = "flow_raw_batches"
# Rows per stored batch: the daemon's batches are far smaller; a bench's million-flow batch is
# cut, so one value read back stays a few MB and a window's read is finely divisible.
BATCH_ROWS = 131_072
BATCH_IPC = ipc_options("lz4")  # as on Kafka's flows.raw: ~2.5x smaller, decompressed at GB/s
PARTITION_DAYS_AHEAD = 2
WRITER_WAIT_SECONDS = 5.0  # longest wait for a pool connection on the write path


def batch_days(batch: pa.RecordBatch) -> list[date]:
    """The UTC days a batch's receive_time spans (one, except around midnight)."""
    times = batch.column("receive_time")
    lo, hi = pc.min(times).as_py(), pc.max(times).as_py()
    return [lo.date() + timedelta(days=i) for i in range((hi.date() - lo.date()).days + 1)]


SUMMARY_SQL = """
SELECT count(*), coalesce(sum(bytes), 0), coalesce(sum(packets), 0), min(receive_time), max(receive_time)
FROM flowlens.flow_raw WHERE receive_time >= %s AND receive_time < %s
"""
FROM_EXPORTERS = " AND exporter = ANY(%s::inet[])"


def summarize_window(conn: psycopg.Connection, start: datetime, end: datetime,
                     exporters: list[str] | None = None) -> WindowSummary:  # fmt: skip
    """The :class:`WindowSummary` of flow_raw's [start, end) over ``conn`` (checks pass their own);
    with ``exporters``, only the flows those exporters sent."""
    query, params = SUMMARY_SQL, [start, end]
    if exporters is not None:
        query, params = SUMMARY_SQL + FROM_EXPORTERS, [start, end, exporters]
    rows, nbytes, packets, first, last = conn.execute(query, params).fetchone()
    return WindowSummary(int(rows), int(nbytes), int(packets), first, last)


BATCH_INSERT_SQL = (
    "INSERT INTO {} (receive_start, receive_end, flows, bytes, packets, arrow) VALUES (%s, %s, %s, %s, %s, %b)"
)


def store_batches(cur: psycopg.Cursor, batch: pa.RecordBatch, table: str) -> None:
    """Store ``batch`` in ``table`` (``flow_raw_batches`` or one of its days) as Arrow IPC streams
    of at most ``BATCH_ROWS`` flows, each with its receive-time span and totals."""
    if not batch.schema.equals(FLOW_SCHEMA):  # e.g. a column set as nullable: the stream's is the record's
        batch = batch.cast(FLOW_SCHEMA)
    for offset in range(0, batch.num_rows, BATCH_ROWS):
        part = batch.slice(offset, BATCH_ROWS)
        span = pc.min_max(part.column("receive_time"))
        cur.execute(
            BATCH_INSERT_SQL.format(table),
            (span["min"].as_py(), span["max"].as_py(), part.num_rows,
             pc.sum(part.column("bytes")).as_py() or 0, pc.sum(part.column("packets")).as_py() or 0,
             to_ipc(part, BATCH_IPC)),
        )  # fmt: skip


BATCH_SUMMARY_SQL = """
SELECT coalesce(sum(flows), 0), coalesce(sum(bytes), 0), coalesce(sum(packets), 0), min(receive_start), max(receive_end)
FROM flowlens.flow_raw_batches WHERE receive_start >= %s AND receive_start < %s
"""


def summarize_batches(conn: psycopg.Connection, start: datetime, end: datetime) -> WindowSummary:
    """The :class:`WindowSummary` of the batches of [start, end) in ``flow_raw_batches``, from their
    stored totals (no flow is read): what a read of the window from its batches returns."""
    rows, nbytes, packets, first, last = conn.execute(BATCH_SUMMARY_SQL, (start, end)).fetchone()
    return WindowSummary(int(rows), int(nbytes), int(packets), first, last)


def count_rows(conn: psycopg.Connection, start: datetime, end: datetime) -> int:
    """flow_raw's rows in [start, end) (a count alone scans at about twice the speed of sums)."""
    query = "SELECT count(*) FROM flowlens.flow_raw WHERE receive_time >= %s AND receive_time < %s"
    return int(conn.execute(query, (start, end)).fetchone()[0])


class SchemaOutdated(RuntimeError):
    """The database lacks a table or function of this FlowLens: its migrations were not applied."""


@contextmanager
def _schema_hint() -> Iterator[None]:
    """Name the command that fixes a database older than the code (the daemon logs the message
    and retries the batch, so nothing is lost while it waits for the migration)."""
    try:
        yield
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedFunction) as exc:
        raise SchemaOutdated(
            f"database {exc.diag.message_primary or exc}: its schema is older than this FlowLens;"
            " run `flowlens migrate` (the ingest daemon keeps its batches and retries meanwhile)"
        ) from exc


class PostgresLanding:
    """The :class:`ingest.land.base.Landing` of the minimal mode."""

    name = "postgres"

    def __init__(self, dsn: str, pool: PostgresPool | None = None, stats=None, min_connections: int = 0):
        pool = pool or PostgresPool()
        self.dsn = dsn
        self.stats = stats
        self.pool = ConnectionPool(
            dsn,
            min_size=min(min_connections, pool.pool_size),
            max_size=pool.pool_size,
            timeout=pool.pool_timeout_seconds,
            check=ConnectionPool.check_connection,  # a server restart must not hand out dead connections
            reconnect_timeout=pool.pool_timeout_seconds,
            name="flowlens-landing",
            open=False,
        )
        self.pool.open(wait=False)
        self._days: set[date] = set()
        self._stats_lock = threading.Lock()

    # --- writing ------------------------------------------------------------------------------
    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        data = encode_copy(batch)
        days = batch_days(batch)
        # A batch never straddles a window, so it sits in one day partition: COPY straight into it
        # and skip PostgreSQL's per-row partition routing.
        target = f"flowlens.flow_raw_{days[0]:%Y%m%d}" if len(days) == 1 else "flowlens.flow_raw"
        started = time.perf_counter()
        with self._writer_connection() as conn, _schema_hint():
            self._ensure_partitions(conn, days)
            with conn.cursor() as cur:
                with cur.copy(COPY_IN_SQL.replace("flowlens.flow_raw", target, 1)) as copy:
                    copy.write(data)
                store_batches(cur, batch, target.replace(TABLE, BATCHES, 1))
        if self.stats is not None:
            with self._stats_lock:  # the daemon writes from several threads
                self.stats.pg_writes[TABLE] += batch.num_rows
                self.stats.pg_latency[TABLE].observe(time.perf_counter() - started)
                self._pool_gauges()

    def _writer_connection(self):
        """A pool connection for the daemon's writes, with a bounded wait: while PostgreSQL is down
        the daemon backs off between attempts and keeps its metrics and drain deadline moving."""
        return self.pool.connection(timeout=min(self.pool.timeout, WRITER_WAIT_SECONDS))

    def _ensure_partitions(self, conn: psycopg.Connection, days: list[date]) -> None:
        missing = [d for d in days if d not in self._days]
        if not missing:
            return
        for day, parent in itertools.product(missing, (TABLE, BATCHES)):
            conn.execute(
                "SELECT flowlens.ensure_day_partitions(%s::regclass, %s, %s)",
                (f"flowlens.{parent}", day, PARTITION_DAYS_AHEAD),
            )
        conn.commit()
        self._days.update(missing)

    def _pool_gauges(self) -> None:
        stats = self.pool.get_stats()
        self.stats.pg_active = stats.get("pool_size", 0) - stats.get("pool_available", 0)
        self.stats.pg_waiting = stats.get("requests_waiting", 0)

    def heartbeat(self, instance: str, landed_through: datetime, flows_landed: int) -> None:
        """Replace the instance's watermark with this one (the latest heartbeat wins, as on Kafka).

        Not the greatest ever published: one process never goes backwards, but an instance id
        restarted on another clock (a replay with ``timestamp_source: export`` after a
        receive-time run) must not keep claiming windows complete on the old one.
        """
        with self._writer_connection() as conn:
            conn.execute(
                """
                INSERT INTO flowlens.ingest_watermarks (instance, landed_through, heartbeat_at, flows_landed)
                VALUES (%s, %s, now(), %s)
                ON CONFLICT (instance) DO UPDATE SET landed_through = EXCLUDED.landed_through,
                    heartbeat_at = now(), flows_landed = EXCLUDED.flows_landed
                """,
                (instance, landed_through, flows_landed),
            )
        if self.stats is not None:
            self.stats.pg_writes["ingest_watermarks"] += 1

    # --- reading ------------------------------------------------------------------------------
    def read_window(self, start: datetime, end: datetime) -> WindowRead:
        """The window's flows in one table (:meth:`read_window_chunks` with one chunk per read slice)."""
        return self.read_window_chunks(start, end, WHOLE_WINDOW).read_all()

    def read_window_chunks(self, start: datetime, end: datetime, chunk_flows: int) -> WindowChunks:
        """The window's flows as tables of about ``chunk_flows`` rows.

        From ``flow_raw_batches`` when its batches hold exactly the window's rows of ``flow_raw``
        (:func:`_batch_plan`, :func:`_read_batches`), else from ``flow_raw`` itself (:meth:`_slices`);
        ``position["read"]`` says which.
        """
        position = {"receive_time": [start.isoformat(), end.isoformat()], "rows": 0}
        return WindowChunks(chunks=rechunk(self._chunks(start, end, chunk_flows, position), chunk_flows),
                            source=f"postgres:{TABLE}", position=position)  # fmt: skip

    def _chunks(self, start: datetime, end: datetime, chunk_flows: int, position: dict) -> Iterator[pa.Table]:
        with self.pool.connection() as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            with _schema_hint():
                plan = _batch_plan(conn, start, end)
            if plan is not None:
                position["read"] = BATCHES
                for table in read_ahead(_read_batches(conn, start, end, plan, chunk_flows), BATCHES_AHEAD):
                    position["rows"] += table.num_rows
                    yield table
                return
        position["read"] = TABLE
        # the slices in flight (READ_CONNECTIONS * SLICES_AHEAD of them) together weigh one chunk
        yield from self._slices(start, end, max(1, chunk_flows // (READ_CONNECTIONS * SLICES_AHEAD)), position)

    def _slices(self, start: datetime, end: datetime, chunk_flows: int, position: dict) -> Iterator[pa.Table]:
        """The window's rows of flow_raw as time slices of about ``chunk_flows`` rows, read by binary COPYs.

        A COPY formats its rows in one PostgreSQL backend and the client takes them one message per
        row, so one COPY runs at ~300-500k rows/s: ``READ_CONNECTIONS`` connections read the
        slices in turn, each ``SLICES_AHEAD`` slices ahead of the consumer, so both cores work.
        The connections share one snapshot (``pg_export_snapshot``): together they read exactly
        what a single COPY would have read at that moment, even while late flows keep landing.
        The slice edges come from receive-time quantiles of a 1% page sample
        (:func:`_slice_edges`), so slices hold similar row counts however the flows arrived; they
        are contiguous, so the edges decide sizes, never rows.
        """
        with self.pool.connection() as conn:
            slices = list(itertools.pairwise(_slice_edges(conn, start, end, chunk_flows)))
        with ExitStack() as stack:
            conns = [stack.enter_context(self.pool.connection()) for _ in range(min(READ_CONNECTIONS, len(slices)))]
            _share_snapshot(conns)
            # one thread per connection, so a connection serves its slices one after the other,
            # each into the connection's own COPY buffer (reused: _copy_out)
            threads = [stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="flowlens-read")) for _ in conns]
            buffers = [bytearray() for _ in conns]
            depth = len(conns) * SLICES_AHEAD

            def submit(j: int) -> Future:
                n = j % len(conns)
                return threads[n].submit(_read_slice, conns[n], slices[j], buffers[n])

            ahead = [submit(j) for j in range(min(depth, len(slices)))]
            for i in range(len(slices)):
                table = ahead[i].result()
                if i + depth < len(slices):
                    ahead.append(submit(i + depth))
                ahead[i] = None  # the consumer holds the table now; drop the future's reference
                position["rows"] += table.num_rows
                yield table

    def watermarks(self) -> list[Watermark]:
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT instance, landed_through, heartbeat_at, flows_landed FROM flowlens.ingest_watermarks"
                " ORDER BY instance"
            ).fetchall()
        return [Watermark(r[0], r[1], r[2], r[3]) for r in rows]

    def newest_receive_time(self) -> datetime | None:
        # The watermarks bound the search to the last hour of partitions (BRIN prunes the rest).
        with self.pool.connection() as conn:
            row = conn.execute(
                """
                SELECT max(receive_time) FROM flowlens.flow_raw
                WHERE receive_time >= coalesce(
                    (SELECT max(landed_through) FROM flowlens.ingest_watermarks) - interval '1 hour', '-infinity')
                """
            ).fetchone()
            if row[0] is None:
                row = conn.execute("SELECT max(receive_time) FROM flowlens.flow_raw").fetchone()
        return row[0].astimezone(UTC) if row[0] else None

    def summarize_window(self, start: datetime, end: datetime) -> WindowSummary:
        with self.pool.connection() as conn:
            return summarize_window(conn, start, end)

    def close(self) -> None:
        self.pool.close()


READ_CONNECTIONS = 2  # parallel COPYs per window read (the 2-core reference host); 1 disables slicing
# Slices each connection reads ahead of the consumer. Each connection keeps its COPY buffer
# (_copy_out) as large as its largest slice, so two slices of a quarter chunk rather than one of
# half a chunk: the same chunk in flight with half the buffers. 15M-flow window read, enriched and
# written (same session, loaded machine): peak RSS 1,998 and 2,020 MB with one half-chunk slice
# ahead, 1,819 and 1,773 MB with two quarter-chunk ones; main before the buffers were kept: 1,830-1,940.
SLICES_AHEAD = 2


SAMPLE_PERCENT = 1.0  # of the window's pages, for the slice edges
SAMPLE_MIN_ROWS = 2_000  # fewer sampled rows: the window is small, take its exact quantiles
QUANTILES = 1024  # candidate edges: slices are multiples of 1/1024 of the window
EDGES_SQL = """
SELECT count(*), percentile_disc(%(fractions)s::float8[]) WITHIN GROUP (ORDER BY receive_time)
FROM flowlens.flow_raw {sample} WHERE receive_time >= %(start)s AND receive_time < %(end)s
"""


# Batch reads (flow_raw_batches) the reader thread keeps ready: each is about half a chunk.
BATCHES_AHEAD = 2
FETCH_MAX = 256  # batches per fetch when the chunk is the whole window
BATCHES_SQL = """
SELECT xmin::text, sum(flows), count(*), count(*) FILTER (WHERE receive_start < %(start)s OR receive_end >= %(end)s)
FROM flowlens.flow_raw_batches
WHERE receive_start >= %(floor)s AND receive_start < %(end)s AND receive_end >= %(start)s
GROUP BY xmin
"""
ROWS_SQL = """
SELECT xmin::text, count(*) FROM flowlens.flow_raw WHERE receive_time >= %(start)s AND receive_time < %(end)s
GROUP BY xmin
"""


def _batch_plan(conn: psycopg.Connection, start: datetime, end: datetime) -> tuple[int, int] | None:
    """(batches, flows) of the window in ``flow_raw_batches`` when they hold exactly its rows of
    ``flow_raw`` as landed, else None.

    A landing transaction writes a batch's rows and the batch itself, so both carry its ``xmin``:
    per transaction id, the window's rows and its batches' flows must be as many. An UPDATE gives
    rows a new ``xmin`` and a DELETE or INSERT changes a count, so any edit of the window's rows
    (a fix before re-materializing it), rows landed before the batches existed, or a batch reaching
    past [start, end) make the read take the rows. Both counts come from one snapshot.
    """
    params = {"start": start, "end": end, "floor": start - WINDOW}  # a batch lies in one window
    flows, batches = {}, 0
    for xid, landed, stored, straddling in conn.execute(BATCHES_SQL, params):
        if straddling:
            return None
        flows[xid], batches = int(landed), batches + stored
    if not flows:
        return None
    rows = dict(conn.execute(ROWS_SQL, params).fetchall())
    if rows != flows:
        log.info("window [%s, %s): flow_raw's rows differ from what flow_raw_batches holds (%d against %d flows):"
                 " reading the rows", start, end, sum(rows.values()), sum(flows.values()))  # fmt: skip
        return None
    return batches, sum(flows.values())


def _read_batches(conn: psycopg.Connection, start: datetime, end: datetime, plan: tuple[int, int],
                  chunk_flows: int) -> Iterator[pa.Table]:  # fmt: skip
    """The window's batches in receive order, decoded, about half a chunk per table (a named
    cursor fetches them: one bytea each, sent as stored)."""
    batches, flows = plan
    per_fetch = min(FETCH_MAX, max(1, (chunk_flows // 2) // max(1, flows // batches)))
    with conn.cursor(name="flowlens_window_batches", binary=True) as cur:
        cur.execute(
            "SELECT arrow FROM flowlens.flow_raw_batches WHERE receive_start >= %s AND receive_start < %s"
            " ORDER BY receive_start",
            (start, end),
        )
        while rows := cur.fetchmany(per_fetch):
            tables = [from_ipc(row[0]) for row in rows]
            del rows
            yield pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def _slice_edges(conn: psycopg.Connection, start: datetime, end: datetime, chunk_flows: int) -> list[datetime]:
    """[start, ..., end]: edges of contiguous slices of about ``chunk_flows`` rows each.

    The row count and receive-time quantiles come from a ``TABLESAMPLE SYSTEM`` page sample
    (one cheap query); a window too small for the sample to say much is measured exactly.
    """
    fractions = [i / QUANTILES for i in range(1, QUANTILES)]
    params = {"fractions": fractions, "start": start, "end": end}
    sample = sql.SQL("TABLESAMPLE SYSTEM ({}) REPEATABLE (17)").format(sql.Literal(SAMPLE_PERCENT))
    sampled, quantiles = conn.execute(sql.SQL(EDGES_SQL).format(sample=sample), params).fetchone()
    estimate = sampled * 100 / SAMPLE_PERCENT
    if sampled < SAMPLE_MIN_ROWS:
        estimate, quantiles = conn.execute(sql.SQL(EDGES_SQL).format(sample=sql.SQL("")), params).fetchone()
    # at least one slice per reading connection, so even a one-chunk read uses both cores
    n = max(READ_CONNECTIONS, min(QUANTILES, -(-int(estimate) // max(chunk_flows, 1))))
    picked = [quantiles[i * QUANTILES // n - 1] for i in range(1, n)] if quantiles else []
    inner = sorted({edge for edge in picked if start < edge < end})
    return [start, *inner, end]


def _share_snapshot(conns: list[psycopg.Connection]) -> None:
    """Start one REPEATABLE READ transaction per connection, all on the first one's snapshot."""
    if len(conns) < 2:
        return
    conns[0].execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    snapshot = conns[0].execute("SELECT pg_export_snapshot()").fetchone()[0]
    if isinstance(snapshot, bytes):  # a SQL_ASCII database hands text back as bytes
        snapshot = snapshot.decode("ascii")
    for conn in conns[1:]:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))


def _read_slice(conn: psycopg.Connection, bounds: tuple[datetime, datetime], buffer: bytearray) -> pa.Table:
    """One time slice of flow_raw through one binary COPY of its columns as stored, decoded
    (numpy, :func:`ingest.land.pgrows.decode_rows`) in the reading thread; ``buffer`` is the
    connection's, reused from slice to slice (the decoded table holds no reference to it)."""
    query = sql.SQL(
        "COPY (SELECT {cols} FROM flowlens.flow_raw WHERE receive_time >= {start} AND receive_time < {end})"
        " TO STDOUT (FORMAT BINARY)"
    ).format(cols=sql.SQL(READ_COLUMNS), start=sql.Literal(bounds[0]), end=sql.Literal(bounds[1]))
    data, sizes = _copy_out(conn, query.as_bytes(conn), buffer)
    try:
        return decode_rows(data, sizes)
    finally:
        data.release()  # the buffer may grow for the next slice only once no view of it is left


def _copy_out(conn: psycopg.Connection, query: bytes, buffer: bytearray | None = None) -> tuple[memoryview, list[int]]:
    """The whole output of a ``COPY ... TO STDOUT`` as one buffer, and the size of each message
    (one row each, the header with the first and the trailer last), through libpq directly.

    The server sends one message per row. ``for chunk in cursor.copy(...)`` costs ~1 µs of Python
    per message (a generator and a wait per row); ``PQgetCopyData`` in a tight loop halves the
    client's CPU and waits with the GIL released, so parallel slices overlap (15M rows: -20% wall).
    The rows are written over ``buffer`` from its start (it grows when they do not fit) and the
    returned view covers them. A buffer reused from one COPY to the next is written into pages
    already mapped: a fresh ~100 MB per slice cost as much again in page faults (3M rows in six
    slices, one connection: 2.24 -> 2.01 s of client CPU, 195k -> 87k minor faults).
    The connection is used by this thread only, and is left in its transaction as psycopg expects.
    """
    pgconn = conn.pgconn
    pgconn.send_query(query)
    started = pgconn.get_result()
    if started is None or started.status != psycopg.pq.ExecStatus.COPY_OUT:
        _drain(pgconn)
        raise psycopg.OperationalError(f"reading flow_raw failed: {_pq_error(pgconn, started)}")
    buf = bytearray() if buffer is None else buffer
    pos, sizes, get = 0, [], pgconn.get_copy_data
    size_of = sizes.append
    while True:
        size, data = get(0)  # 0: block until a row arrives
        if size < 0:  # -1: COPY done, -2: error (reported by the final result)
            break
        buf[pos : pos + size] = data  # in place; past the end it appends (the buffer grows)
        pos += size
        size_of(size)
    results = _drain(pgconn)
    failed = [r for r in results if r.status != psycopg.pq.ExecStatus.COMMAND_OK]
    if failed:
        raise psycopg.OperationalError(f"reading flow_raw failed: {_pq_error(pgconn, failed[0])}")
    return memoryview(buf)[:pos], sizes


def _drain(pgconn) -> list:
    """Every remaining result of the current query (the connection is ready for the next one after)."""
    results = []
    while (result := pgconn.get_result()) is not None:
        results.append(result)
    return results


def _pq_error(pgconn, result) -> str:
    message = (result.error_message if result is not None else b"") or pgconn.error_message
    return message.decode(errors="replace").strip() or "no result from the server; check PostgreSQL's log"
