"""Standard/full modes: the landing is Kafka ``flows.raw``. The landing suite validates the flows as
``enriched_flows`` read them (the lake's copy); the landing reconciliation and the late-data sensor
compare the landings' own tallies (``ingest.land.ledger``) and the topic's log start offsets with
``window_loads``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dagster as dg
import psycopg
import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from assets import enriched_flows
from assets.resources import KafkaResource, LandingResource
from flowlens_dagster.checks import names
from flowlens_dagster.checks.evaluate import BY_NAME, evaluate, sources_from
from flowlens_dagster.checks.late_data import late_data_sensor
from flowlens_dagster.checks.reconcile import Finding
from flowlens_dagster.checks.windows import Span

from .conftest import KEY0, WINDOW0, Pipeline, decode_export, traffic

pytestmark = pytest.mark.integration


@dataclass
class KafkaWindow:
    """WINDOW0 landed on a fresh Kafka topic (400 flows) and processed by ``enriched_flows``."""

    pipeline: Pipeline
    resources: dict[str, Any]
    landing: Any
    topic: str
    bootstrap: str

    def check(self, name: str) -> Finding:
        return evaluate(BY_NAME[name], sources_from(self.resources), [Span.window(WINDOW0)])

    def tamper_load(self, assignment: str) -> None:
        """Change what ``window_loads`` says enriched_flows read (a pipeline that lost or invented flows)."""
        with psycopg.connect(self.pipeline.postgres.dsn(), autocommit=True) as conn:
            conn.execute(
                f"UPDATE flowlens.window_loads SET {assignment} WHERE window_start = %s AND asset = %s",
                (WINDOW0, names.ENRICHED_FLOWS),
            )


@pytest.fixture
def kafka_window(pipeline: Pipeline, kafka_bootstrap: str, kafka_topic) -> Iterator[KafkaWindow]:
    topic = kafka_topic("checks_raw")
    kafka = KafkaResource(bootstrap_servers=kafka_bootstrap, enabled=True, raw_topic=topic)
    landing_resource = LandingResource(mode="standard", postgres=pipeline.postgres, kafka=kafka)
    landing = landing_resource.open()
    try:
        landing.write(decode_export(traffic(400, WINDOW0, 3), WINDOW0, 3))
        landing.flush(30)  # publishes the landing's tally of the window too
        enriched_flows.process_window(WINDOW0, landing, pipeline.lake, None, pipeline.postgres)
        yield KafkaWindow(
            pipeline, {**pipeline.resources, "landing": landing_resource}, landing, topic, kafka_bootstrap
        )
    finally:
        landing.close()


def test_kafka_landing_suite_and_late_data(kafka_window: KafkaWindow) -> None:
    suite = kafka_window.check(names.LANDING_SUITE)
    assert suite.passed and suite.metadata["rows"] == 400, suite.message
    agreed = kafka_window.check(names.LANDING_MATCHES_LOAD)
    assert agreed.passed and agreed.metadata["landed"]["flows"] == 400, agreed.message

    landing = kafka_window.landing
    landing.write(decode_export(traffic(30, WINDOW0, 4), WINDOW0, 4))  # late: after the window ran
    landing.flush(30)
    late = kafka_window.check(names.LANDING_MATCHES_LOAD)
    assert not late.passed and late.metadata["late_flows"] == 30
    assert f"late data in window {KEY0}" in late.message and "kafka:" in late.message


def test_another_landings_tally_counts_too(kafka_window: KafkaWindow) -> None:
    # A second ingest process (its own landing object, so its own tally key) lands late flows.
    other = LandingResource(
        mode="standard",
        postgres=kafka_window.pipeline.postgres,
        kafka=KafkaResource(bootstrap_servers=kafka_window.bootstrap, enabled=True, raw_topic=kafka_window.topic),
    ).open()
    try:
        other.write(decode_export(traffic(12, WINDOW0, 5), WINDOW0, 5))
        other.heartbeat("other:1/w0", WINDOW0, 12)  # the heartbeat publishes the tally
    finally:
        other.close()
    late = kafka_window.check(names.LANDING_MATCHES_LOAD)
    assert not late.passed and late.metadata["late_flows"] == 12, late.message


def test_messages_deleted_from_the_topic_fail_the_reconciliation(kafka_window: KafkaWindow) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_window.bootstrap})
    doomed = [TopicPartition(kafka_window.topic, p, -1) for p in range(6)]  # -1: everything in the partition
    for future in admin.delete_records(doomed, operation_timeout=30).values():
        future.result(timeout=30)
    gone = kafka_window.check(names.LANDING_MATCHES_LOAD)
    assert not gone.passed and gone.metadata["deleted_partitions"], gone.message
    assert "deleted from kafka:" in gone.message and KEY0 in gone.message


def test_a_landed_batch_the_pipeline_did_not_read_fails(kafka_window: KafkaWindow) -> None:
    kafka_window.tamper_load("rows_read = rows_read - 25")
    unread = kafka_window.check(names.LANDING_MATCHES_LOAD)
    assert not unread.passed and unread.metadata["late_flows"] == 25, unread.message


def test_flows_read_that_no_landing_counted_fail(kafka_window: KafkaWindow) -> None:
    kafka_window.tamper_load("rows_read = rows_read + 7")
    unaccounted = kafka_window.check(names.LANDING_MATCHES_LOAD)
    assert not unaccounted.passed and unaccounted.metadata["unaccounted_flows"] == 7, unaccounted.message


def test_same_count_different_bytes_fails(kafka_window: KafkaWindow) -> None:
    kafka_window.tamper_load("bytes_total = bytes_total + 1000")
    altered = kafka_window.check(names.LANDING_MATCHES_LOAD)
    assert not altered.passed and altered.metadata["difference"] == {"bytes": -1000}, altered.message


def test_landing_suite_finds_bad_landed_rows_before_and_after_processing(
    pipeline: Pipeline, kafka_bootstrap: str, kafka_topic
) -> None:
    kafka = KafkaResource(bootstrap_servers=kafka_bootstrap, enabled=True, raw_topic=kafka_topic("checks_bad"))
    landing_resource = LandingResource(mode="standard", postgres=pipeline.postgres, kafka=kafka)
    resources = {**pipeline.resources, "landing": landing_resource}
    columns = traffic(200, WINDOW0, 6)
    columns["flow_start"][:3] = columns["flow_end"][:3] + 1_000_000  # a skewed exporter clock: start after end
    landing = landing_resource.open()
    try:
        landing.write(decode_export(columns, WINDOW0, 6))
        landing.flush(30)
        span = Span.window(WINDOW0)
        # Not processed yet: the suite reads the window back from the topic.
        before = evaluate(BY_NAME[names.LANDING_SUITE], sources_from(resources), [span])
        enriched_flows.process_window(WINDOW0, landing, pipeline.lake, None, pipeline.postgres)
        # Processed: the suite validates the lake's copy of what enriched_flows read.
        after = evaluate(BY_NAME[names.LANDING_SUITE], sources_from(resources), [span])
    finally:
        landing.close()
    for finding in (before, after):
        assert not finding.passed and finding.metadata["rows"] == 200, finding.message
        failed = {(f["expectation"], f["column"]): f["unexpected_count"] for f in finding.metadata["failures"]}
        assert failed == {("expect_column_pair_values_a_to_be_greater_than_b", "flow_end, flow_start"): 3}, failed


def test_late_data_sensor_counts_kafka_windows_from_the_tallies(kafka_window: KafkaWindow) -> None:
    with dg.build_sensor_context(resources=kafka_window.resources) as context:
        assert isinstance(late_data_sensor(context), dg.SkipReason)  # nothing changed since processing
    kafka_window.landing.write(decode_export(traffic(9, WINDOW0, 7), WINDOW0, 7))
    kafka_window.landing.flush(30)
    with dg.build_sensor_context(resources=kafka_window.resources) as context:
        (evaluation,) = late_data_sensor(context).asset_events
    assert evaluation.partition == KEY0 and evaluation.check_name == names.LANDING_MATCHES_LOAD
    assert not evaluation.passed and evaluation.metadata["late_flows"].value == 9
