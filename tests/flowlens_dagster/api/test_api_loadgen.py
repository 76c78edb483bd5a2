"""The API bench's lean HTTP client against a real API server: answers are read whole (keep-alive,
Content-Length), statuses counted, every kind of the mix measured, back to back and paced."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import uvloop

from flowlens_dagster.bench.api_loadgen import MIX, drive, requests_of, warm_up
from ingest.config import FlowLensConfig
from tests.flowlens_dagster.api.conftest import ApiServer, api_config

pytestmark = pytest.mark.integration

WORK = {
    "search": ["/api/v1/search?q=laptop", "/api/v1/search?q=10.0.0.0/24"],
    "impact": ["/api/v1/impact?target=10.0.0.1&depth=3"],
    "topology_filtered": ["/api/v1/topology?group=address&port=5432"],
    "topology_full": ["/api/v1/topology"],
    "asset": ["/api/v1/assets/10.0.0.1?limit=50"],
}


@pytest.fixture
def api(sample_map: str, flowlens_config: FlowLensConfig, api_redis) -> Iterator[ApiServer]:
    """The sample map's API with limits no burst of these tests can reach: a fast machine answers
    more than the default 1,200 requests a minute in half a second, and a 429 would count as an error."""
    limits = {"rate_limit_per_user": 10**9, "rate_limit_per_address": 10**9}
    with ApiServer(api_config(flowlens_config, **limits)) as server:
        yield server


def _args(api, token: str, rate: float | None = None) -> SimpleNamespace:
    return SimpleNamespace(url=api.url, token=token, connections=3, seconds=0.5, rate=rate)


@pytest.mark.parametrize("rate", [None, 40.0])
def test_the_load_generator_reads_every_answer_of_the_mix(api, rate):
    args = _args(api, api.token(), rate)
    requests = requests_of(args, WORK)
    assert uvloop.run(warm_up(args, requests)) == 0
    load = uvloop.run(drive(args, requests, rate))
    assert load.errors == 0 and load.requests == sum(len(v) for v in load.latencies.values()) > 0
    assert set(load.latencies) == set(MIX)


def test_the_load_generator_counts_refused_requests_as_errors(api):
    args = _args(api, "not-a-token")
    load = uvloop.run(drive(args, requests_of(args, WORK), None))
    assert load.requests > 0 and load.errors == load.requests
