"""``topology_changes``: new assets, new dependencies and dependencies gone, per window.

For window W (one transaction that first deletes W's rows, so re-detecting is a no-op):

- ``new_asset``: addresses whose first window is W;
- ``new_dependency``: edges whose first window is W;
- ``dependency_gone``: edges present in ``flow_stats`` in window W - N and in none of the N
  windows after it, N = ``pipeline.dependency_gone_after_windows``. Counting windows in
  ``flow_stats`` (not a moving last-seen time) gives the same answer whenever W is re-run.

Each change detected is also published, when those services are part of the mode: to Kafka
``changes.detected`` keyed ``kind|subject`` (a compacted topic keeps the latest per subject) and
to the Redis pub/sub channel ``changes:topology`` (the scaling model §5.2), as JSON. In auto mode
Redis is used only while the query API uses it (its run-time decision, ``ingest.scaling.redis_use``);
``source_position.redis`` records whether a window was published there.
"""

import json
from datetime import datetime
from typing import Any

import dagster as dg
import polars as pl

from assets.api_generation import bump_api_generation
from assets.keys import DEPENDENCIES, NETWORK_ASSETS, TOPOLOGY_CHANGES
from assets.metadata import definition_metadata, markdown_table, materialization_metadata
from assets.partitions import five_minute_partitions
from assets.pg import record_window_load
from assets.resources import KafkaResource, PipelineResource, PostgresResource, RedisResource
from assets.windows import WindowResult, run_id, run_windows, timed
from ingest.window import WINDOW

TABLE = "flowlens.changes"
REDIS_CHANNEL = "changes:topology"
COLUMNS = [
    ("window_start", "timestamptz", "window in which the change was detected"),
    ("kind", "text", "new_asset | new_dependency | dependency_gone"),
    ("subject", "text", "'10.0.0.5' or '10.0.0.5 -> 10.0.1.9:443/6'"),
    ("addr", "inet", "the asset (new_asset)"),
    ("client_addr", "inet", "dependency client"),
    ("server_addr", "inet", "dependency server"),
    ("server_port", "integer", "dependency service port"),
    ("protocol", "smallint", "dependency protocol"),
    ("details", "jsonb", "first/last seen and the rule's parameters"),
    ("detected_at", "timestamptz", "when the pipeline detected it"),
]
LINEAGE = {
    "addr": [(NETWORK_ASSETS, "addr")],
    "client_addr": [(DEPENDENCIES, "client_addr")],
    "server_addr": [(DEPENDENCIES, "server_addr")],
    "server_port": [(DEPENDENCIES, "server_port")],
    "protocol": [(DEPENDENCIES, "protocol")],
    "window_start": [(NETWORK_ASSETS, "first_window"), (DEPENDENCIES, "first_window"), ("flow_stats", "window_start")],
}
# Each INSERT is sorted by subject (ORDER BY 3): within one window and kind the key (window_start,
# kind, subject) then grows in order, so its B-tree is appended to page after page instead of taking
# up to a million inserts at random places (the first window's 1M new dependencies: 5.1 -> 4.2 s).
EDGE_SUBJECT = "host(d.client_addr) || ' -> ' || host(d.server_addr) || ':' || d.server_port || '/' || d.protocol"
DETECT = f"""
DELETE FROM flowlens.changes WHERE window_start = %(window)s;
INSERT INTO flowlens.changes (window_start, kind, subject, addr, details)
SELECT %(window)s, 'new_asset', host(a.addr), a.addr,
       jsonb_build_object('first_seen', a.first_seen, 'name', a.name, 'known', a.known)
FROM flowlens.assets a WHERE a.first_window = %(window)s ORDER BY 3;
INSERT INTO flowlens.changes (window_start, kind, subject, client_addr, server_addr, server_port, protocol, details)
SELECT %(window)s, 'new_dependency', {EDGE_SUBJECT}, d.client_addr, d.server_addr, d.server_port, d.protocol,
       jsonb_build_object('first_seen', d.first_seen)
FROM flowlens.dependencies d WHERE d.first_window = %(window)s ORDER BY 3;
INSERT INTO flowlens.changes (window_start, kind, subject, client_addr, server_addr, server_port, protocol, details)
SELECT %(window)s, 'dependency_gone', {EDGE_SUBJECT}, d.client_addr, d.server_addr, d.server_port, d.protocol,
       jsonb_build_object('last_window', d.window_start, 'last_seen', d.last_seen, 'after_windows', %(n)s)
FROM flowlens.flow_stats d
WHERE d.window_start = %(last_window)s
  AND NOT EXISTS (
      SELECT 1 FROM flowlens.flow_stats s
      WHERE s.window_start > %(last_window)s AND s.window_start <= %(window)s
        AND (s.client_addr, s.server_addr, s.server_port, s.protocol)
            = (d.client_addr, d.server_addr, d.server_port, d.protocol))
ORDER BY 3;
"""
PREVIEW_ROWS = 20

SELECT_WINDOW = """
SELECT id, kind, subject, host(addr) AS addr, host(client_addr) AS client, host(server_addr) AS server,
       server_port, protocol, details
FROM flowlens.changes WHERE window_start = %s ORDER BY kind, subject
"""


def _statements(script: str) -> list[str]:
    """A parameterized script as single statements (a prepared statement holds one command)."""
    return [part.strip() for part in script.split(";\n") if part.strip()]


def detect_window(
    conn, window: datetime, gone_after: int, limit: int | None = None
) -> tuple[int, list[dict[str, Any]]]:
    """Replace window W's changes (inside the caller's transaction); return their count and the first
    ``limit`` of them (all when None). Nothing to publish needs only a preview: a first window can hold
    a million changes, and turning them into Python dicts would cost more than detecting them."""
    cur = conn.cursor()
    params = {"window": window, "n": gone_after, "last_window": window - gone_after * WINDOW}
    total = 0
    for statement in _statements(DETECT):
        cur.execute(statement, params)
        if statement.startswith("INSERT"):
            total += cur.rowcount
    cur.execute(SELECT_WINDOW + ("" if limit is None else f" LIMIT {int(limit)}"), (window,))
    names = [c.name for c in cur.description]
    return total, [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def publish(
    changes: list[dict[str, Any]], window: datetime, kafka: KafkaResource, redis: RedisResource | None
) -> dict[str, int]:
    """Send the window's changes to Kafka ``changes.detected`` and Redis ``changes:topology`` when enabled
    (``redis`` None: not on Redis this time).

    Returns how many messages went to each (0 for a service the mode does not use).
    """
    sent = {"kafka": 0, "redis": 0}
    messages = [
        (f"{c['kind']}|{c['subject']}", json.dumps({"window_start": window.isoformat(), **c}, default=str))
        for c in changes
    ]
    producer = kafka.producer() if messages else None
    if producer is not None:
        for key, value in messages:
            producer.produce(kafka.changes_topic, value.encode(), key=key.encode())
            producer.poll(0)
        if producer.flush(30):
            raise RuntimeError(f"Kafka did not acknowledge every message on {kafka.changes_topic}: is it up?")
        sent["kafka"] = len(messages)
    client = redis.client() if messages and redis is not None else None
    if client is not None:
        with client.pipeline(transaction=False) as pipe:
            for _, value in messages:
                pipe.publish(REDIS_CHANNEL, value)
            pipe.execute()
        sent["redis"] = len(messages)
    return sent


def process_window(
    window: datetime,
    postgres: PostgresResource,
    kafka: KafkaResource | None = None,
    redis: RedisResource | None = None,
    gone_after: int = PipelineResource().dependency_gone_after_windows,
    run: str | None = None,
) -> WindowResult:
    """Detect, store and publish window W's changes."""
    result = WindowResult(window, TOPOLOGY_CHANGES, source="postgres:assets,dependencies,flow_stats")
    # auto mode: Redis only while the query API uses it (RedisResource.publishing)
    on_redis = redis is not None and redis.publishing(postgres)
    result.source_position = {
        "window_start": window.isoformat(), "dependency_gone_after_windows": gone_after, "redis": on_redis
    }  # fmt: skip
    publishing = kafka is not None and redis is not None and (kafka.enabled or on_redis)
    with timed(result, "detect"), postgres.connect() as conn, conn.transaction():
        total, changes = detect_window(conn, window, gone_after, limit=None if publishing else PREVIEW_ROWS)
        result.rows_read = result.rows_written = total
        record_window_load(conn.cursor(), result.load_row(run))
    if publishing:
        with timed(result, "publish"):
            publish(changes, window, kafka, redis if on_redis else None)
            if on_redis:
                bump_api_generation(redis.url, redis.api_cache_db)
    if changes:
        frame = pl.DataFrame([{"kind": c["kind"], "subject": c["subject"]} for c in changes[:PREVIEW_ROWS]])
        result.preview = markdown_table(frame, f"Changes ({total})")
    return result


@dg.asset(
    key=TOPOLOGY_CHANGES,
    deps=[NETWORK_ASSETS, DEPENDENCIES],
    partitions_def=five_minute_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="topology",
    kinds={"postgres", "kafka", "redis"},
    description="New assets, new dependencies and dependencies gone, per window; published to Kafka and Redis.",
    metadata=definition_metadata(TABLE, COLUMNS),
)
def topology_changes(
    context: dg.AssetExecutionContext,
    postgres: PostgresResource,
    kafka: KafkaResource,
    redis: RedisResource,
    pipeline: PipelineResource,
) -> dg.MaterializeResult:
    gone_after = pipeline.dependency_gone_after_windows
    results = run_windows(context, lambda w: process_window(w, postgres, kafka, redis, gone_after, run_id(context)))
    meta = materialization_metadata(TABLE, COLUMNS, LINEAGE, results)
    return dg.MaterializeResult(metadata=meta)
