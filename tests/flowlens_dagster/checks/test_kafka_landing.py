"""Standard/full modes: the landing is Kafka ``flows.raw``; the landing suite and the late-data check
read the window back from the topic (no table to query)."""

from __future__ import annotations

import pytest

from assets import enriched_flows
from assets.resources import KafkaResource, LandingResource
from flowlens_dagster.checks import names
from flowlens_dagster.checks.evaluate import BY_NAME, evaluate, sources_from
from flowlens_dagster.checks.windows import Span

from .conftest import KEY0, WINDOW0, Pipeline, decode_export, traffic

pytestmark = pytest.mark.integration


def test_kafka_landing_suite_and_late_data(pipeline: Pipeline, kafka_bootstrap: str, kafka_topic) -> None:
    kafka = KafkaResource(bootstrap_servers=kafka_bootstrap, enabled=True, raw_topic=kafka_topic("checks_raw"))
    landing_resource = LandingResource(mode="standard", postgres=pipeline.postgres, kafka=kafka)
    resources = {**pipeline.resources, "landing": landing_resource}
    landing = landing_resource.open()
    try:
        landing.write(decode_export(traffic(400, WINDOW0, 3), WINDOW0, 3))
        landing.flush(30)
        enriched_flows.process_window(WINDOW0, landing, pipeline.lake, None, pipeline.postgres)
        span = Span.window(WINDOW0)
        suite = evaluate(BY_NAME[names.LANDING_SUITE], sources_from(resources), [span])
        assert suite.passed and suite.metadata["rows"] == 400, suite.message
        assert evaluate(BY_NAME[names.LANDING_MATCHES_LOAD], sources_from(resources), [span]).passed

        landing.write(decode_export(traffic(30, WINDOW0, 4), WINDOW0, 4))  # late: after the window ran
        landing.flush(30)
        late = evaluate(BY_NAME[names.LANDING_MATCHES_LOAD], sources_from(resources), [span])
        assert not late.passed and late.metadata["late_flows"] == 30
        assert f"late data in window {KEY0}" in late.message and "kafka:" in late.message
    finally:
        landing.close()
