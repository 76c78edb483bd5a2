"""The fast path and the caches it serves: filtered topology and asset detail cached in db2, gzip bodies
sent as stored, each request counted once against the limits, refusals answered the same way, and a
worker's copy of an entry never outliving the entry or its generation."""

from __future__ import annotations

import gzip

import psycopg
import pytest

from assets.api_generation import bump_api_generation
from flowlens_dagster.api import plans
from flowlens_dagster.api.fast import plan_of
from ingest.config import ApiConfig
from tests.flowlens_dagster.api.conftest import T0, ApiServer, api_config

pytestmark = pytest.mark.integration

PAGE = "/api/v1/topology?group=address&port=5432"
PAGE_KEY = "topology:address|port=5432&limit=1000"


def _user_count(api, api_redis, token: str) -> int:
    user_id = api.get("/api/v1/me", token).json()["id"]
    return int(api_redis(3).get(f"ratelimit:user:{user_id}") or 0)


def test_a_filtered_topology_page_is_cached_and_follows_the_generation(api, api_redis, pg_dsn):
    token = api.token()
    first = api.get(PAGE, token).json()
    assert {(e["client"], e["server"]) for e in first["edges"]} == {("10.0.0.2", "10.0.0.1"), ("10.0.0.3", "10.0.0.1")}
    cache = api_redis(2)
    assert 0 < cache.ttl(PAGE_KEY) <= 300
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("INSERT INTO flowlens.dependencies VALUES ('10.0.1.10', '10.0.0.1', 5432, 6, %s, %s, %s, %s)",
                     (T0, T0, T0, T0))  # fmt: skip
    assert api.get(PAGE, token).json() == first  # this worker's copy, still of the current generation
    bump_api_generation(api.cfg.redis.url(0), api.cfg.api.cache_db)
    fresh = api.get(PAGE, token).json()
    assert ("10.0.1.10", "10.0.0.1") in {(e["client"], e["server"]) for e in fresh["edges"]}


def test_a_copy_is_not_served_once_its_redis_entry_is_gone(api, api_redis, pg_dsn):
    token = api.token()
    assert api.get(PAGE, token).json()["edges"]
    assert api.get(PAGE, token).json()["edges"]  # a hit: the worker holds a copy now
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("DELETE FROM flowlens.dependencies WHERE server_port = 5432")
    api_redis(2).delete(PAGE_KEY)  # as when its TTL ends
    assert api.get(PAGE, token).json()["edges"] == []


def test_asset_detail_is_cached_for_a_minute(api, api_redis):
    token = api.token()
    body = api.get("/api/v1/assets/10.0.0.1", token).json()
    assert body["asset"]["addr"] == "10.0.0.1"
    assert 0 < api_redis(2).ttl("asset:10.0.0.1|limit=200") <= 60
    assert api.get("/api/v1/assets/10.0.0.1", token).json() == body


@pytest.mark.parametrize("path", ["/api/v1/search?q=laptop", "/api/v1/impact?target=10.0.0.1", PAGE])
def test_a_hit_is_sent_gzip_as_stored_or_plain_to_a_client_without_gzip(api, path):
    token = api.token()
    built = api.get(path, token, headers={"Accept-Encoding": "gzip"})
    hit = api.get(path, token, headers={"Accept-Encoding": "gzip"}, stream=True)
    raw = hit.raw.read(decode_content=False)
    assert hit.headers["content-encoding"] == "gzip" and hit.headers["content-type"] == "application/json"
    assert gzip.decompress(raw) == built.content
    plain = api.get(path, token, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.json() == built.json()


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/impact?target=10.0.0.1&depth=2",  # a miss, then a hit
        "/api/v1/impact?target=10.0.0.1&depth=9",  # refused (400) by FastAPI's route
        "/api/v1/changes?limit=5",  # not cached: FastAPI alone
    ],
)
def test_each_request_counts_once_against_the_limits(api, api_redis, path):
    token = api.token()
    before = _user_count(api, api_redis, token)
    for _ in range(2):
        api.get(path, token)
    assert _user_count(api, api_redis, token) == before + 2 + 1  # the two requests and this /me


def test_the_fast_path_refuses_tokens_and_limits_like_the_routes(sample_map, flowlens_config, api_redis):
    with ApiServer(api_config(flowlens_config, rate_limit_per_user=3)) as api:
        refusals = 'flowlens_api_requests_total{endpoint="/api/v1/topology",method="GET",status="429"}'
        before = _metric(api, refusals)
        bad = api.get(PAGE, "nonsense")
        assert bad.status_code == 401 and bad.json()["parameter"] == "token"
        assert bad.headers["WWW-Authenticate"] == "Bearer"
        token = api.token()
        codes = [api.get(PAGE, token).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        refused = api.get(PAGE, token)
        assert 1 <= int(refused.headers["Retry-After"]) <= 60 and "rate limit" in refused.json()["error"]
        assert _metric(api, refusals) == before + 2


def _metric(api, name: str) -> float:
    for line in api.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_an_api_token_is_served_by_the_fast_path_too(api, sample_map):
    from flowlens_dagster.api.auth import create_token

    token = create_token(sample_map, "alice", "ci")
    first = api.get("/api/v1/search?q=laptop", token)
    assert first.status_code == 200
    assert api.get("/api/v1/search?q=laptop", token).json() == first.json()


def test_the_fast_path_leaves_what_it_is_unsure_of_to_fastapi():
    api = ApiConfig()
    assert plan_of(api, "/api/v1/impact", b"target=10.0.0.1&depth=3")[1].key == "impact:10.0.0.1:depth-3"
    for path, query in [
        ("/api/v1/impact", b"target=10.0.0.1&depth=-1"),  # FastAPI's validation words the error
        ("/api/v1/impact", b"depth=3"),  # target missing
        ("/api/v1/topology", b"port=99999"),
        ("/api/v1/search", b"q=x&limit=%C2%B2"),  # a digit, but not one int() of a query takes
        ("/api/v1/changes", b""),  # not cached
        ("/api/v1/assets/10.0.0.1/more", b""),
    ]:
        assert plan_of(api, path, query) is None, (path, query)


def test_the_route_and_the_fast_path_share_one_key_per_question():
    api = ApiConfig()
    f = plans.params.filters(prefix_="10.1.2.0/24")
    assert plans.topology(api, f, "address", None, 200, None).key == "topology:address|prefix=10.1.2.0/24&limit=200"
    assert plan_of(api, "/api/v1/topology", b"group=address&prefix=10.1.2.3/24&limit=200")[1].key == (
        "topology:address|prefix=10.1.2.0/24&limit=200"
    )
    assert plans.topology(api, plans.params.Filters(), "subnet", None, None, None).key == "topology:full"
    assert plan_of(api, "/api/v1/search", b"q=+laptop+")[1].key == "search:laptop"
    assert plan_of(api, "/api/v1/assets/2001:db8::5", b"")[0] == "/api/v1/assets/{addr}"


def test_concurrent_round_trips_batched_in_one_pipeline_each_get_their_own_answer(clean_redis, flowlens_config):
    import asyncio

    import redis as redis_lib

    from flowlens_dagster.api.store import RedisStore

    async def run(url: str) -> tuple[list, int]:
        store = RedisStore(url)
        try:
            fronts = await asyncio.gather(
                *(store.session_and_count("session:none", f"ratelimit:ip:t{n % 3}", "ratelimit:user:", 60)
                  for n in range(30))
            )  # fmt: skip
            return [f.counts[0][0] for f in fronts], len(store._session_and_count.running)
        finally:
            await store.close()

    counts, left = asyncio.run(run(clean_redis))
    assert sorted(counts) == sorted(list(range(1, 11)) * 3)  # each address counted 1..10, no answer lost
    assert left == 0
    with pytest.raises(redis_lib.exceptions.ConnectionError):
        asyncio.run(run(flowlens_config.redis.model_copy(update={"port": 1}).url()))


def test_the_round_trip_script_is_loaded_again_after_redis_forgets_it(clean_redis):
    import asyncio

    import redis as redis_lib

    from flowlens_dagster.api.store import RedisStore

    async def count_twice(url: str) -> list[int]:
        store = RedisStore(url)
        try:
            first = await store.session_and_count("session:none", "ratelimit:ip:a", "ratelimit:user:", 60)
            await store.client.script_flush()  # as after a Redis restart
            again = await asyncio.gather(
                *(store.session_and_count("session:none", "ratelimit:ip:a", "ratelimit:user:", 60) for _ in range(3))
            )
            return [first.counts[0][0], *sorted(f.counts[0][0] for f in again)]
        finally:
            await store.close()

    assert asyncio.run(count_twice(clean_redis)) == [1, 2, 3, 4]  # every call counted once, none failed
    assert redis_lib.Redis.from_url(clean_redis).get("ratelimit:ip:a") == b"4"
