"""``enriched_flows``: each window's landed flows with direction and enrichment, in the Parquet lake.

Per window, chunk by chunk (``pipeline.chunk_flows`` flows at a time, so memory does not grow with
the window): read exactly the flows received in it from the landing, ask the inventory which side
is the server, run the enrichment hooks (GeoIP, reverse DNS, inventory; ``assets.enrich``), decide
client/server (``assets.direction``) and write the chunk as Parquet part(s) of the window's file
set (split into ``pipeline.shards`` by address pair), replacing any earlier set whole.
Optionally also produce the rows to Kafka ``flows.enriched`` (``pipeline.produce_enriched``).
"""

from datetime import datetime

import dagster as dg
import polars as pl
import pyarrow as pa

from assets import lake as lake_files
from assets.addresses import with_text
from assets.catch_up import catching_up
from assets.direction import orient
from assets.keys import ENRICHED_FLOWS, FLOWS_LANDED
from assets.landing import flows_frame, read_landed_chunks
from assets.metadata import definition_metadata, markdown_table, materialization_metadata
from assets.partitions import five_minute_partitions
from assets.pg import record_window_load
from assets.resources import (
    EnrichmentResource,
    KafkaResource,
    LakeResource,
    LandingResource,
    PostgresResource,
)
from assets.windows import WindowResult, run_id, run_windows, timed, timed_chunks
from ingest.schema import FLOW_COLUMNS, FLOW_SCHEMA
from ingest.window import WINDOW

SERVER_SIDE = "server_side"
COLUMNS = [
    *[(name, "flow", "as landed (ingest.schema.FLOW_SCHEMA)") for name in FLOW_COLUMNS],
    ("src_ip", "text", "source address as text"),
    ("dst_ip", "text", "destination address as text"),
    ("client_addr", "binary(16)", "client side (assets.direction)"),
    ("server_addr", "binary(16)", "server side"),
    ("client_port", "int32", "client port (0 for protocols without ports)"),
    ("server_port", "int32", "server (service) port"),
    ("server_is_dst", "bool", "true when the destination is the server"),
    ("direction_rule", "text", "inventory | syn | port | protocol: which rule decided"),
    ("client_ip", "text", "client address as text"),
    ("server_ip", "text", "server address as text"),
    ("window_start", "timestamptz", "the 5-minute receive-time window"),
]
LINEAGE = {
    **{name: [(FLOWS_LANDED, name)] for name in FLOW_COLUMNS},
    "client_addr": [(FLOWS_LANDED, "src_addr"), (FLOWS_LANDED, "dst_addr")],
    "server_addr": [(FLOWS_LANDED, "src_addr"), (FLOWS_LANDED, "dst_addr")],
    "server_port": [(FLOWS_LANDED, "src_port"), (FLOWS_LANDED, "dst_port"), (FLOWS_LANDED, "tcp_flags")],
}


def enrich_window(flows: pa.Table | pl.DataFrame, window: datetime, enricher=None, inventory=None) -> pl.DataFrame:
    """Direction and enrichment for one window's flows (pure: no I/O beyond the enricher's caches)."""
    frame = flows_frame(flows) if isinstance(flows, pa.Table) else flows
    server_side = None
    if inventory is not None and frame.height:
        frame = frame.with_columns(pl.Series(SERVER_SIDE, inventory.server_side(frame)).cast(pl.Int8))
        server_side = SERVER_SIDE
    if enricher is not None and frame.height:
        frame = enricher.enrich(frame)
    if "src_ip" not in frame.columns:
        frame = with_text(frame, {"src_addr": "src_ip", "dst_addr": "dst_ip"})
    frame = orient(frame, server_side)
    d = pl.col("server_is_dst")
    return frame.with_columns(
        client_ip=pl.when(d).then(pl.col("src_ip")).otherwise(pl.col("dst_ip")),
        server_ip=pl.when(d).then(pl.col("dst_ip")).otherwise(pl.col("src_ip")),
        window_start=pl.lit(window).cast(pl.Datetime("us", "UTC")),
    )


def service_totals(frame: pl.DataFrame) -> pl.DataFrame:
    """Bytes and flows per service (server, port, protocol) of one chunk: partials that add up."""
    return frame.group_by("server_ip", "server_port", "protocol").agg(bytes=pl.col("bytes").sum(), flows=pl.len())


def top_servers(partials: list[pl.DataFrame], n: int = 5) -> str:
    """Markdown: the services that received the most bytes in the window (from the chunks' partials)."""
    totals = pl.concat(partials) if partials else pl.DataFrame()
    if totals.is_empty():
        return "**Top services by bytes**: no flows"
    top = (
        totals.group_by("server_ip", "server_port", "protocol")
        .agg(pl.col("bytes").sum(), pl.col("flows").sum())
        .sort("bytes", "server_ip", descending=[True, False])
        .head(n)
    )
    return markdown_table(top, "Top services by bytes")


def process_window(
    window: datetime,
    landing,
    lake: LakeResource,
    enrichment: EnrichmentResource | None,
    postgres: PostgresResource,
    kafka: KafkaResource | None = None,
    run: str | None = None,
    inventory=None,
    enricher=None,
) -> WindowResult:
    """Read, enrich and write one window to the lake chunk by chunk; record the load in ``window_loads``.

    Memory holds a few chunks of ``lake.chunk_flows`` flows, never the window: each chunk is
    enriched and written as its own Parquet part(s) as soon as it is read. The parts are staged
    and swapped in together (``assets.lake.window_writer``): a failure midway leaves the
    previous lake window untouched, and a re-run writes the window whole again.
    """
    result = WindowResult(window, ENRICHED_FLOWS, source="")
    read = read_landed_chunks(landing, window, window + WINDOW, lake.chunk_flows)
    result.source = read.source
    partials: list[pl.DataFrame] = []
    with lake_files.window_writer(lake.window_dir(window), lake.shards) as writer:
        for chunk in timed_chunks(read.chunks, result, "read"):
            with timed(result, "enrich"):
                frame = enrich_window(chunk, window, enricher, inventory)
            del chunk
            with timed(result, "write_lake"):
                writer.write(frame)
            if kafka is not None and kafka.enabled and enrichment is not None:
                with timed(result, "produce"):
                    _produce(kafka, frame, window)
            _add_totals(result, frame)
            partials.append(service_totals(frame))
        if not writer.chunks:  # an empty window still gets its (empty) file set: readers find the window
            writer.write(enrich_window(FLOW_SCHEMA.empty_table(), window, enricher, inventory))
    result.source_position = read.position
    result.preview = top_servers(partials)
    with postgres.connect() as conn:
        record_window_load(conn.cursor(), result.load_row(run))
    return result


def _add_totals(result: WindowResult, frame: pl.DataFrame) -> None:
    if not frame.height:
        return
    nbytes, packets = frame.select(pl.col("bytes").sum(), pl.col("packets").sum()).row(0)
    result.rows_read += frame.height
    result.rows_written += frame.height
    result.bytes_total += int(nbytes)
    result.packets_total += int(packets)


def _produce(kafka: KafkaResource, frame: pl.DataFrame, window: datetime) -> None:
    """Produce the window to ``flows.enriched`` as Arrow IPC batches when the config asks for it."""
    if not kafka.produce_enriched:
        return
    producer = kafka.producer()
    key = window.strftime("%Y%m%d%H%M").encode()
    for batch in frame.to_arrow().to_batches(max_chunksize=65_536):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        producer.produce(kafka.enriched_topic, sink.getvalue().to_pybytes(), key=key)
        producer.poll(0)
    producer.flush(30)


@dg.asset(
    key=ENRICHED_FLOWS,
    deps=[FLOWS_LANDED],
    partitions_def=five_minute_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="flows",
    kinds={"parquet", "polars"},
    description=__doc__,
    metadata=definition_metadata("lake/enriched_flows", COLUMNS),
)
def enriched_flows(
    context: dg.AssetExecutionContext,
    landing: LandingResource,
    lake: LakeResource,
    enrichment: EnrichmentResource,
    postgres: PostgresResource,
    kafka: KafkaResource,
) -> dg.MaterializeResult:
    inventory = enrichment.inventory(context.log)
    deferred = catching_up(context)  # behind: no DNS lookups, nothing to flows.enriched
    enricher = enrichment.enricher(inventory, dns=not deferred)
    kafka_out = None if deferred else kafka
    opened = landing.open()
    try:
        results = run_windows(
            context,
            lambda w: process_window(
                w, opened, lake, enrichment, postgres, kafka_out, run_id(context), inventory, enricher
            ),
        )
    finally:
        opened.close()
    meta = materialization_metadata("lake/enriched_flows", COLUMNS, LINEAGE, results)
    meta["lake_path"] = dg.MetadataValue.path(lake.window_glob(results[-1].window_start) if results else lake.root)
    return dg.MaterializeResult(metadata=meta)
