"""The change feed over WebSocket: live forwarding with filters, alerts, reconnect without loss."""

from __future__ import annotations

import json
import time

import psycopg
import pytest
import redis as redis_lib
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.flowlens_dagster.api.conftest import T0, ApiServer, api_config

pytestmark = pytest.mark.integration


def ws_url(api: ApiServer, token: str, **query: str) -> str:
    args = "&".join(f"{k}={v}" for k, v in {"token": token, **query}.items())
    return f"{api.url.replace('http', 'ws')}/api/v1/changes/ws?{args}"


def wait_for_listeners(client: redis_lib.Redis, channel: str, count: int = 1) -> None:
    for _ in range(200):
        if dict(client.pubsub_numsub(channel))[channel.encode()] >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"nobody subscribed to {channel}")


def insert_change(dsn: str, subject: str, kind: str = "new_asset") -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "INSERT INTO flowlens.changes (window_start, kind, subject, addr) VALUES (%s, %s, %s, %s) RETURNING id",
            (T0, kind, subject, subject),
        ).fetchone()[0]


@pytest.fixture
def pubsub(flowlens_config):
    client = redis_lib.Redis.from_url(flowlens_config.redis.url())
    yield client
    client.close()


def test_live_changes_are_forwarded_with_filters_and_alerts_too(api, pubsub):
    token = api.token()
    with (
        connect(ws_url(api, token, kind="new_dependency", port="443")) as only_443,
        connect(ws_url(api, token)) as every,
    ):
        wait_for_listeners(pubsub, "changes:topology")
        wait_for_listeners(pubsub, "changes:alerts")
        pubsub.publish("changes:topology", json.dumps({"id": 90, "kind": "new_asset", "subject": "10.0.0.9"}))
        pubsub.publish("changes:topology", json.dumps(
            {"id": 91, "kind": "new_dependency", "subject": "10.0.0.9 -> 10.0.1.10:443/6", "client": "10.0.0.9",
             "server": "10.0.1.10", "server_port": 443, "protocol": 6}))  # fmt: skip
        pubsub.publish("changes:alerts", json.dumps({"alert": "APIHighLatency"}))
        got = [json.loads(every.recv(timeout=10)) for _ in range(3)]
        assert [(m["channel"], m.get("id")) for m in got] == [
            ("changes:topology", 90), ("changes:topology", 91), ("changes:alerts", None)
        ]  # fmt: skip
        assert json.loads(only_443.recv(timeout=10))["id"] == 91
        with pytest.raises(TimeoutError):
            only_443.recv(timeout=0.5)  # neither the new asset nor the alert passed its filters


def test_a_client_that_reconnects_with_its_last_id_misses_nothing(api, pubsub, sample_map):
    token = api.token()
    first = insert_change(sample_map, "10.0.5.1")
    with connect(ws_url(api, token)) as ws:
        wait_for_listeners(pubsub, "changes:topology")
        pubsub.publish("changes:topology", json.dumps({"id": first, "kind": "new_asset", "subject": "10.0.5.1"}))
        last = json.loads(ws.recv(timeout=10))["id"]
    # while the client is away the pipeline stores (and publishes to nobody) two more
    missed = [insert_change(sample_map, "10.0.5.2"), insert_change(sample_map, "10.0.5.3", "new_asset")]
    with connect(ws_url(api, token, last_id=str(last))) as ws:
        replayed = [json.loads(ws.recv(timeout=10)) for _ in missed]
        assert [(m["id"], m["subject"], m["replayed"]) for m in replayed] == [
            (missed[0], "10.0.5.2", True), (missed[1], "10.0.5.3", True)
        ]  # fmt: skip
        wait_for_listeners(pubsub, "changes:topology")
        newer = insert_change(sample_map, "10.0.5.4")
        for ident in (missed[1], newer):  # an id the replay already sent is not sent twice
            pubsub.publish("changes:topology", json.dumps({"id": ident, "kind": "new_asset", "subject": "x"}))
        assert json.loads(ws.recv(timeout=10))["id"] == newer


def test_a_bad_token_or_filter_closes_the_socket_with_a_reason(api):
    with connect(ws_url(api, "nonsense")) as ws:
        assert json.loads(ws.recv(timeout=10))["parameter"] == "token"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd.code == 4401
    with connect(ws_url(api, api.token(), kind="volcano")) as ws:
        assert json.loads(ws.recv(timeout=10))["parameter"] == "kind"


def test_minimal_mode_feeds_new_rows_of_the_changes_table(sample_map, flowlens_config):
    with ApiServer(api_config(flowlens_config, mode="minimal")) as api, connect(ws_url(api, api.token())) as ws:
        time.sleep(1.5)  # the hub's first poll sets where "new" starts
        ident = insert_change(sample_map, "10.0.6.1")
        message = json.loads(ws.recv(timeout=10))
        assert (message["id"], message["subject"], message["channel"]) == (ident, "10.0.6.1", "changes:topology")
        gauge = [
            line for line in api.get("/metrics").text.splitlines()
            if line.startswith("flowlens_websocket_connections_active ")
        ]  # fmt: skip
        assert float(gauge[0].split()[-1]) >= 1
