"""The API bench's lean HTTP client against a real API server: answers are read whole (keep-alive,
Content-Length), statuses counted, every kind of the mix measured, back to back and paced."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import uvloop

from flowlens_dagster.bench import api_loadgen
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
    assert uvloop.run(warm_up(args, requests)) == {}
    load = uvloop.run(drive(args, requests, rate))
    assert load.errors == 0 and load.requests == sum(len(v) for v in load.latencies.values()) > 0
    assert set(load.latencies) == set(MIX)


def test_the_load_generator_counts_refused_requests_as_errors(api):
    args = _args(api, "not-a-token")
    requests = requests_of(args, WORK)
    assert uvloop.run(warm_up(args, requests)) == {f"{kind}:status_401": len(paths) for kind, paths in WORK.items()}
    load = uvloop.run(drive(args, requests, None))
    assert load.requests > 0 and load.errors == load.requests
    assert sum(load.error_kinds.values()) == load.errors
    assert {kind.split(":")[1] for kind in load.error_kinds} == {"status_401"}


async def _against(handle, monkeypatch) -> tuple:
    """Warm-up and a short back-to-back phase against a local TCP server that answers with ``handle``."""
    monkeypatch.setattr(api_loadgen, "ANSWER_TIMEOUT", 0.2)
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    args = SimpleNamespace(url=f"http://127.0.0.1:{port}", token="t", connections=2, seconds=0.5, rate=None)
    work = {kind: ["/api/v1/health"] for kind in MIX}
    async with server:
        warm = await warm_up(args, requests_of(args, work))
        load = await drive(args, requests_of(args, work), None)
    return warm, load


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [("silent", "timeout"), ("hang up", "ConnectionError"), ("no length", "ConnectionError")],
)
def test_answers_that_never_come_or_break_off_are_errors_of_their_kind(behaviour, error, monkeypatch):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                if behaviour == "hang up":
                    break
                if behaviour == "no length":
                    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client gave up on this connection
        writer.close()

    warm, load = uvloop.run(_against(handle, monkeypatch))
    assert warm == {f"{kind}:{error}": 1 for kind in MIX}
    assert load.requests > 0 and load.errors == load.requests
    assert {kind.split(":")[1] for kind in load.error_kinds} == {error}
