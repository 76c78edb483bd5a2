"""Rate limits, two instances sharing Redis, the minimal mode's in-process stores, services down, users CLI."""

from __future__ import annotations

import io
import os
import time

import psycopg
import pytest

from flowlens_dagster.api.auth import login_delay
from flowlens_dagster.api.cli import users_main
from tests.flowlens_dagster.api.conftest import PASSWORD, ApiServer, api_config

pytestmark = pytest.mark.integration


def test_rate_limit_per_user_is_429_with_retry_after_and_counted_in_db3(sample_map, flowlens_config, api_redis):
    with ApiServer(api_config(flowlens_config, rate_limit_per_user=3)) as api:
        token = api.token()
        codes = [api.get("/api/v1/me", token).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        refused = api.get("/api/v1/me", token)
        assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60
        assert "rate limit" in refused.json()["error"]
        user_id = api.get("/api/v1/me", api.token("victor")).json()["id"]  # another user still passes
        sessions = api_redis(3)
        keys = {k.decode() for k in sessions.keys("ratelimit:*")}
        assert keys == {"ratelimit:ip:127.0.0.1", f"ratelimit:user:{user_id - 1}", f"ratelimit:user:{user_id}"}
        assert 0 < sessions.ttl("ratelimit:ip:127.0.0.1") <= 60


def test_rate_limit_per_address(sample_map, flowlens_config, api_redis):
    with ApiServer(api_config(flowlens_config, rate_limit_per_address=2)) as api:
        assert api.login().status_code == 200
        assert api.login().status_code == 200
        assert api.login().status_code == 429


def test_two_instances_share_sessions_cache_and_limits(sample_map, flowlens_config, api_redis):
    cfg = api_config(flowlens_config, rate_limit_per_user=6)
    with ApiServer(cfg) as one, ApiServer(cfg) as two:
        token = one.token()  # logged in on one ...
        assert two.get("/api/v1/me", token).json()["username"] == "alice"  # ... used on the other
        first = one.get("/api/v1/impact", token, params={"target": "10.0.0.1"}).json()
        assert two.get("/api/v1/impact", token, params={"target": "10.0.0.1"}).json() == first
        hits = [_hits(server, "impact") for server in (one, two)]
        assert hits[1] >= 1  # served from the entry the first instance built
        codes = [server.get("/api/v1/me", token).status_code for server in (one, two, one, two)]
        # 3 requests so far, 6 allowed: each instance alone saw at most 4, so the 429 is the shared count
        assert codes == [200, 200, 200, 429]


def _hits(server: ApiServer, cache: str) -> float:
    for line in server.get("/metrics").text.splitlines():
        if line.startswith(f'flowlens_redis_cache_hits_total{{cache="{cache}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_minimal_mode_keeps_sessions_cache_and_limits_in_process(sample_map, flowlens_config, api_redis):
    cfg = api_config(flowlens_config, mode="minimal", rate_limit_per_user=4)
    with ApiServer(cfg) as api:
        token = api.token()
        assert api.get("/api/v1/search", token, params={"q": "laptop"}).status_code == 200
        before = api.get("/api/v1/search", token, params={"q": "laptop"}).json()
        store = api.app.state.flowlens.cache_store
        assert 55 < store.ttl("search:laptop") <= 60
        assert 86_300 < api.app.state.flowlens.session_store.ttl(f"session:{token}") <= 86_400
        assert api_redis(2).dbsize() == 0 and api_redis(3).dbsize() == 0  # nothing went to Redis
        codes = [api.get("/api/v1/me", token).status_code for _ in range(3)]
        assert codes == [200, 200, 429]  # two searches + two: the in-process limit of 4
        assert before["results"][0]["addr"] == "10.0.2.20"


def test_minimal_mode_cache_follows_the_last_processed_window(sample_map, flowlens_config, api_redis):
    with ApiServer(api_config(flowlens_config, mode="minimal")) as api:
        token = api.token()
        assert api.get("/api/v1/impact", token, params={"target": "10.0.2.20", "depth": 1}).json()["count"] == 1
        with psycopg.connect(sample_map) as conn:
            conn.execute("DELETE FROM flowlens.dependencies WHERE server_addr = '10.0.2.20'")
        cached = api.get("/api/v1/impact", token, params={"target": "10.0.2.20", "depth": 1}).json()
        assert cached["count"] == 1  # same generation: the cached answer
        with psycopg.connect(sample_map) as conn:
            conn.execute(
                """INSERT INTO flowlens.window_loads (window_start, asset, source, rows_read, rows_written, started_at)
                   VALUES (now(), 'topology_changes', 'test', 0, 0, now())"""
            )
        api.app.state.flowlens.cache._pg_seen = (0.0, "")  # the once-a-second check, due now
        fresh = api.get("/api/v1/impact", token, params={"target": "10.0.2.20", "depth": 1}).json()
        assert fresh["count"] == 0


def test_postgres_down_is_503_naming_it(flowlens_config, api_redis):
    down = flowlens_config.model_copy(update={"postgres": flowlens_config.postgres.model_copy(update={"port": 1})})
    with ApiServer(api_config(down)) as api:
        reply = api.login()
        assert reply.status_code == 503
        assert reply.json()["error"].startswith("PostgreSQL unavailable") and "flowlens stack up" in reply.text
        assert reply.headers["Retry-After"] == "5"
        assert api.get("/api/v1/health").status_code == 503


def test_a_worker_whose_connections_are_all_busy_says_so_and_serves_again(sample_map, flowlens_config, api_redis):
    """The bench's errors on a fresh database: slow queries held every pooled connection and the rest
    waited 5 s for one. That is a 503 naming the pool, not "PostgreSQL unavailable"."""
    from concurrent.futures import ThreadPoolExecutor

    with ApiServer(api_config(flowlens_config, pg_pool_size=1)) as api:
        token = api.token()
        with psycopg.connect(sample_map) as locker, ThreadPoolExecutor(1) as pool:
            locker.execute("LOCK TABLE flowlens.assets IN ACCESS EXCLUSIVE MODE")  # until this transaction ends
            stuck = pool.submit(api.get, "/api/v1/search", token, params={"q": "db"})  # holds the one connection
            _wait_for_a_query_blocked_on_a_lock(sample_map)
            waiting = api.get("/api/v1/search", token, params={"q": "laptop"})
            assert waiting.status_code == 503 and waiting.json()["error"].startswith("PostgreSQL busy: all 1 ")
            assert "api.pg_pool_size" in waiting.text and waiting.headers["Retry-After"] == "1"
            locker.rollback()
            assert stuck.result().status_code == 200
        assert api.get("/api/v1/search", token, params={"q": "laptop"}).status_code == 200


def _wait_for_a_query_blocked_on_a_lock(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(600):
            blocked = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = 'flowlens-api' AND wait_event_type = 'Lock'"
            ).fetchone()[0]
            if blocked:
                return
            time.sleep(0.05)
    raise AssertionError("the API's query never reached the locked table")


def test_redis_down_is_503_naming_it(sample_map, flowlens_config):
    down = flowlens_config.model_copy(update={"redis": flowlens_config.redis.model_copy(update={"port": 1})})
    with ApiServer(api_config(down)) as api:
        reply = api.login()
        assert reply.status_code == 503 and reply.json()["error"].startswith("Redis unavailable")


def test_failed_logins_wait_longer_past_the_allowance():
    assert [login_delay(n, 5) for n in (0, 4, 5, 6, 7, 20)] == [0.0, 0.0, 0.25, 0.5, 1.0, 8.0]


def test_users_cli_adds_lists_tokens_and_removes(clean_pg, flowlens_config, monkeypatch, capsys):
    monkeypatch.setenv("FLOWLENS_POSTGRES__DATABASE", flowlens_config.postgres.database)
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert users_main(["add", "carol", "--role", "admin", "--password-stdin"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert users_main(["add", "dave", "--password-stdin"]) == 2
    assert "at least 8 characters" in capsys.readouterr().err
    assert users_main(["token", "carol", "--name", "ci"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("flk_")
    assert users_main(["list", "--json"]) == 0
    assert '"username": "carol", "role": "admin"' in capsys.readouterr().out
    with ApiServer(api_config(flowlens_config)) as api:
        assert api.get("/api/v1/me", token).json()["username"] == "carol"  # the API token works
    assert users_main(["remove", "carol"]) == 0
    assert users_main(["remove", "carol"]) == 2
    assert "no user 'carol'" in capsys.readouterr().err


def test_the_api_command_names_the_missing_service_and_the_command_that_starts_it(monkeypatch, capsys):
    from flowlens_dagster.cli import main

    monkeypatch.setenv("FLOWLENS_POSTGRES__PORT", "1")
    monkeypatch.delenv("FLOWLENS_MODE", raising=False)
    assert main(["api", "--mode", "minimal"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("flowlens api: PostgreSQL at 127.0.0.1:1") and "flowlens stack up" in err
    assert len(err.splitlines()) == 1
    assert "FLOWLENS_MODE" not in os.environ  # a refused start leaves the environment as it was
