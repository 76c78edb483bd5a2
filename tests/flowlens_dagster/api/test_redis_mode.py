"""Auto mode: the API chooses Redis at run time from the model's thresholds, against the real stack.

With three users (the threshold of this test) the API moves its sessions to Redis, and back to the
process when one user goes: the session survives both switches, the change feed delivers every
stored change exactly once across them, and each switch is counted and published on changes:alerts.
"""

from __future__ import annotations

import asyncio
import json
import time

import psycopg
import pytest
import redis as redis_lib
from websockets.sync.client import connect

from flowlens_dagster.api.auth import add_user
from ingest.scaling.alerts import ALERTS_CHANNEL
from tests.flowlens_dagster.api.conftest import PASSWORD, ApiServer, api_config
from tests.flowlens_dagster.api.test_api_ws import insert_change, wait_for_listeners, ws_url

pytestmark = pytest.mark.integration


def auto_config(flowlens_config):
    cfg = api_config(flowlens_config, mode="auto", workers=1)
    redis_thresholds = cfg.thresholds.redis.model_copy(
        update={"enable_at_concurrent_users": 3, "enable_at_flows_per_sec": 10**9, "enable_at_api_p99_ms": 10**6,
                "enable_for_websocket": False, "min_dwell_seconds": 0, "check_seconds": 3600}
    )  # fmt: skip
    return cfg.model_copy(update={"thresholds": cfg.thresholds.model_copy(update={"redis": redis_thresholds})})


def check(api: ApiServer):
    """One decision of the API's Redis mode, run in the server's event loop."""
    mode = api.app.state.flowlens.redis_mode
    return asyncio.run_coroutine_threadsafe(mode.check(), mode.task.get_loop()).result(timeout=30)


def switches_counted(api: ApiServer, source: str, target: str) -> float:
    for line in api.get("/metrics").text.splitlines():
        if line.startswith(f'flowlens_api_redis_switches_total{{from="{source}",to="{target}"}}'):
            return float(line.split()[-1])
    return 0.0


def recorded_use(dsn: str) -> list[tuple[bool, str]]:
    """The API processes' decisions in flowlens.redis_use (the pipeline follows them)."""
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT using_redis, reason FROM flowlens.redis_use ORDER BY instance").fetchall()


def receive_ids(ws, count: int) -> list[int]:
    return [json.loads(ws.recv(timeout=15))["id"] for _ in range(count)]


def test_sessions_and_changes_survive_switching_to_redis_and_back(sample_map, flowlens_config, api_redis):
    alerts = redis_lib.Redis.from_url(flowlens_config.redis.url()).pubsub()
    alerts.subscribe(ALERTS_CHANNEL)
    with ApiServer(auto_config(flowlens_config)) as api:
        st = api.app.state.flowlens
        token = api.token()
        assert check(api) is None  # two users: in process
        assert st.session_store.current is st.session_store.memory and api_redis(3).dbsize() == 0
        assert recorded_use(sample_map) == [(False, "no Redis trigger yet")]
        generation = int(api_redis(st.cfg.api.cache_db).get("api:generation") or 0)
        with connect(ws_url(api, token, channels="topology")) as ws:
            first = insert_change(sample_map, "10.0.9.1")  # polled from flowlens.changes
            assert receive_ids(ws, 1) == [first]

            add_user(sample_map, "carol", PASSWORD, "viewer")  # the third user: Redis
            stored_around_the_switch = insert_change(sample_map, "10.0.9.2")
            switch = check(api)
            assert (switch.source, switch.target) == ("memory", "redis") and "3 users >= 3" in switch.reason
            assert api.get("/api/v1/me", token).json()["username"] == "alice"  # the session moved
            assert 86_000 < api_redis(3).ttl(f"session:{token}") <= 86_400
            assert switches_counted(api, "memory", "redis") == 1
            assert recorded_use(sample_map) == [(True, switch.reason)]
            # a new cache generation: entries of an earlier Redis period are never served
            assert int(api_redis(st.cfg.api.cache_db).get("api:generation")) == generation + 1
            publisher = redis_lib.Redis.from_url(flowlens_config.redis.url())
            wait_for_listeners(publisher, "changes:topology")
            live = insert_change(sample_map, "10.0.9.3")
            publisher.publish("changes:topology", json.dumps({"id": live, "kind": "new_asset", "subject": "10.0.9.3"}))
            assert receive_ids(ws, 2) == [stored_around_the_switch, live]

            with psycopg.connect(sample_map) as conn:
                conn.execute("DELETE FROM flowlens.api_users WHERE username = 'carol'")
            back = check(api)
            assert (back.source, back.target) == ("redis", "memory")
            assert api.get("/api/v1/me", token).json()["username"] == "alice"
            assert st.session_store.current is st.session_store.memory
            assert st.session_store.memory.ttl(f"session:{token}") > 86_000
            after = insert_change(sample_map, "10.0.9.4")
            assert receive_ids(ws, 1) == [after]  # nothing repeated, nothing skipped
            assert switches_counted(api, "redis", "memory") == 1
            assert recorded_use(sample_map) == [(False, back.reason)]
    assert recorded_use(sample_map) == []  # a stopped API forgets its decision
    events = []
    deadline = time.monotonic() + 10
    while len(events) < 2 and time.monotonic() < deadline:
        message = alerts.get_message(timeout=1)
        if message and message["type"] == "message":
            events.append(json.loads(message["data"]))
    alerts.close()
    assert [(e["kind"], e["from"], e["to"]) for e in events] == [
        ("redis_switch", "memory", "redis"),
        ("redis_switch", "redis", "memory"),
    ]
    assert events[0]["signals"]["users"] == 3 and events[0]["sessions_copied"] >= 1
