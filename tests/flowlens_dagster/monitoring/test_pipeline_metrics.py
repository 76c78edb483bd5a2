"""The pipeline's counters: flushed by steps to PostgreSQL, served over HTTP by ``flowlens metrics``."""

from __future__ import annotations

import urllib.request
import uuid
from datetime import UTC, datetime, timedelta

import polars as pl
import psycopg
import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from assets import metrics
from assets.consumer_group import CONSUMER_GROUP, commit_forward
from assets.enrich.cache import EnrichmentCache
from flowlens_dagster.monitoring.exporter import PipelineCollector, serve
from tests.assets import scenario
from tests.assets.test_window_assets import landed, materialize  # noqa: F401  (fixture)
from tests.ingest.private_services import free_tcp_port
from tests.ingest.test_outage import private_pg  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


def table_value(dsn: str, sample: str, **labels: str) -> float | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT value FROM flowlens.pipeline_metrics WHERE sample = %s AND labels = %s::jsonb",
            (sample, psycopg.types.json.Jsonb(labels)),
        ).fetchone()
    return row[0] if row else None


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_failed_flush_keeps_its_deltas_and_nothing_is_counted_twice(flowlens_config, clean_pg):
    service = f"test-{uuid.uuid4().hex[:8]}"
    metrics.FLOWS_PROCESSED.labels(service=service).inc(7)
    dead = flowlens_config.postgres.model_copy(update={"port": free_tcp_port()}).dsn()
    assert metrics.flush(dead) == 0
    assert metrics.flush(clean_pg) >= 1
    assert table_value(clean_pg, "flowlens_flows_processed_total", service=service) == 7
    metrics.FLOWS_PROCESSED.labels(service=service).inc(3)
    metrics.flush(clean_pg)
    metrics.flush(clean_pg)  # nothing new: adds nothing
    assert table_value(clean_pg, "flowlens_flows_processed_total", service=service) == 10


def test_window_runs_count_flows_rows_and_write_latency_per_table(flowlens_config, landed, pg_dsn):  # noqa: F811
    base, flows = landed
    for index in sorted(flows):
        materialize(flowlens_config, base + index * scenario.WINDOW)
    with psycopg.connect(pg_dsn) as conn:
        loads = conn.execute(
            "SELECT asset, sum(rows_read), sum(rows_written), count(*) FROM flowlens.window_loads GROUP BY asset"
        ).fetchall()
    assert {asset for asset, *_ in loads} >= {"enriched_flows", "flow_stats", "network_assets", "dependencies"}

    port = free_tcp_port()
    serve(flowlens_config.model_copy(update={"mode": "minimal"}), "127.0.0.1", port)
    served = scrape(f"http://127.0.0.1:{port}/metrics")
    for asset, rows_read, rows_written, windows in loads:
        assert served[("flowlens_flows_processed_total", (("service", asset),))] == rows_read
        if asset in metrics.PG_TABLES:
            table = (("table", metrics.PG_TABLES[asset][0]),)
            assert served[("flowlens_pg_writes_total", table)] == rows_written
            assert served[("flowlens_pg_write_latency_seconds_count", table)] == windows
            assert served[("flowlens_pg_write_latency_seconds_bucket", (("le", "+Inf"), *table))] == windows
    assert served[("flowlens_exporter_source_up", (("source", "postgresql"),))] == 1
    assert ("flowlens_pipeline_processed_through_timestamp", ()) in served


def test_an_unreachable_postgresql_costs_its_series_not_the_scrape(flowlens_config):
    cfg = flowlens_config.model_copy(
        update={"mode": "minimal", "postgres": flowlens_config.postgres.model_copy(update={"port": free_tcp_port()})}
    )
    families = {f.name: f for f in PipelineCollector(cfg).collect()}
    assert [(s.labels, s.value) for s in families["flowlens_exporter_source_up"].samples] == [
        ({"source": "postgresql"}, 0)
    ]


def test_consumer_lag_per_partition_from_the_pipelines_consumer_group(flowlens_config, clean_pg, kafka_topic):
    topic = kafka_topic("flows.raw.lag", partitions=4)
    t0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    producer = Producer({"bootstrap.servers": flowlens_config.kafka.bootstrap_servers})
    sent = {0: [0, 100, 400], 1: [0], 3: [0, 50]}  # seconds after t0 of each message; partition 2 empty
    for partition, offsets in sent.items():
        for seconds in offsets:
            max_us = str(int((t0 + timedelta(seconds=seconds)).timestamp() * 1e6)).encode()
            producer.produce(topic, b"x", partition=partition, headers=[("flowlens-max-us", max_us)])
    producer.flush(30)
    # Windows read partition 0 up to offset 2 and partition 1 whole; partition 3 was never read.
    committed = commit_forward(flowlens_config.kafka.bootstrap_servers, topic, {"0": [0, 2], "1": [0, 1]})
    assert committed == {0: 2, 1: 1}
    assert commit_forward(flowlens_config.kafka.bootstrap_servers, topic, {"0": [0, 1]}) == {}  # never backwards

    cfg = flowlens_config.model_copy(
        update={"mode": "standard", "kafka": flowlens_config.kafka.model_copy(update={"raw_topic": topic})}
    )
    families = {f.name: f for f in PipelineCollector(cfg).collect()}
    lag = {s.labels["partition"]: s.value for s in families["flowlens_kafka_consumer_lag_seconds"].samples}
    assert lag == {"0": 300.0, "1": 0.0, "2": 0.0, "3": 50.0}
    labels = families["flowlens_kafka_consumer_lag_seconds"].samples[0].labels
    assert labels == {"topic": topic, "partition": "0", "consumer_group": CONSUMER_GROUP}
    assert {s.labels["source"]: s.value for s in families["flowlens_exporter_source_up"].samples} == {
        "postgresql": 1, "kafka": 1, "redis": 1,
    }  # fmt: skip
    assert families["flowlens_redis_memory_used_bytes"].samples[0].value > 0


def test_enrichment_cache_hits_and_misses_reach_the_table(clean_pg, clean_redis):
    cache = EnrichmentCache({"dns": 3600, "geo": 86_400, "asset": 300}, redis_url=clean_redis)
    metrics.flush(clean_pg)  # whatever earlier tests in this process counted
    before = {c: table_value(clean_pg, f"flowlens_redis_cache_{c}_total", cache="geo") or 0 for c in ("hits", "misses")}
    cache.put("geo", pl.Series(["192.0.2.1"]), pl.Series(['{"country":"US"}']))
    cache.get("geo", pl.Series(["192.0.2.1", "192.0.2.2", "192.0.2.3"]))
    metrics.flush(clean_pg)
    after = {c: table_value(clean_pg, f"flowlens_redis_cache_{c}_total", cache="geo") for c in ("hits", "misses")}
    assert (after["hits"] - before["hits"], after["misses"] - before["misses"]) == (1, 2)


def test_the_exporter_reconnects_after_postgresql_comes_back(private_pg):  # noqa: F811
    server, cfg = private_pg
    collector = PipelineCollector(cfg)

    def up() -> float:
        families = {f.name: f for f in collector.collect()}
        return families["flowlens_exporter_source_up"].samples[0].value

    assert up() == 1
    server.stop()
    assert up() == 0
    server.start()
    assert up() == 1
