"""The query API against the real stack: every endpoint, the db2 cache, db3 sessions and limits."""

from __future__ import annotations

import gzip

import pytest
import requests

from assets.api_generation import bump_api_generation
from tests.flowlens_dagster.api.conftest import DEPENDENCIES, PASSWORD, T0

pytestmark = pytest.mark.integration


def test_login_gives_a_session_stored_in_db3_with_the_models_ttl(api, api_redis):
    reply = api.login()
    assert reply.status_code == 200
    body = reply.json()
    assert body["user"] == {"id": body["user"]["id"], "username": "alice", "role": "admin"}
    sessions = api_redis(3)
    assert sessions.exists(f"session:{body['token']}")
    assert 86_000 < sessions.ttl(f"session:{body['token']}") <= 86_400
    assert api.get("/api/v1/me", body["token"]).json()["username"] == "alice"


def test_logout_ends_the_session_in_db3_and_health_names_both_services(api, api_redis):
    token = api.token()
    reply = requests.post(f"{api.url}/api/v1/logout", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert reply.status_code == 200 and reply.json() == {"ok": True}
    assert not api_redis(3).exists(f"session:{token}")
    assert api.get("/api/v1/me", token).status_code == 401
    assert api.get("/api/v1/health").json() == {"postgres": "ok", "redis": "ok"}


@pytest.mark.parametrize(("token", "parameter"), [(None, "token"), ("nonsense", "token"), ("flk_unknown", "token")])
def test_missing_or_bad_tokens_are_401_naming_the_token(api, token, parameter):
    reply = api.get("/api/v1/topology", token)
    assert reply.status_code == 401
    assert reply.json()["parameter"] == parameter and "\n" not in reply.text


def test_a_wrong_password_is_401_and_counted(api, api_redis):
    before = _metric(api, "flowlens_api_login_failures_total")
    reply = api.login(password="wrong password")
    assert reply.status_code == 401 and reply.json()["parameter"] == "password"
    assert api.login(username="nobody").status_code == 401
    assert int(api_redis(3).get("loginfail:user:alice")) == 1
    assert int(api_redis(3).get("loginfail:ip:127.0.0.1")) == 2
    assert _metric(api, "flowlens_api_login_failures_total") == before + 2


def test_topology_at_address_level_lists_every_edge_and_pages_with_cursors(api):
    token = api.token()
    whole = api.get("/api/v1/topology?group=address", token).json()
    assert len(whole["edges"]) == len(DEPENDENCIES) and whole["next_cursor"] is None
    assert {(e["client"], e["server"], e["port"], e["protocol"]) for e in whole["edges"]} == set(DEPENDENCIES)
    assert {n["addr"] for n in whole["nodes"]} == {a for d in DEPENDENCIES for a in d[:2]}
    pages, cursor = [], None
    while True:
        page = api.get("/api/v1/topology", token, params={"group": "address", "limit": 3, "cursor": cursor}).json()
        pages.append(page["edges"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [e for p in pages for e in p] == whole["edges"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"port": "5432"}, {("10.0.0.2", "10.0.0.1"), ("10.0.0.3", "10.0.0.1")}),
        ({"protocol": "udp"}, {("10.0.0.1", "10.0.2.20")}),
        ({"prefix": "2001:db8::/32"}, {("2001:db8::5", "10.0.1.10")}),
        ({"prefix": "10.0.2.0/24", "protocol": "tcp"}, {("10.0.2.20", "10.0.1.10")}),
        ({"owner": "it"}, {("10.0.2.20", "10.0.1.10"), ("10.0.0.1", "10.0.2.20")}),
        ({"asn": "AS64512", "port": "8080"}, {("10.0.1.10", "10.0.0.2"), ("10.0.1.10", "10.0.0.3")}),
        ({"country": "fr", "port": "9000"}, {("10.0.0.1", "10.0.2.20")}),
        ({"tag": "frontend", "port": "443"}, {("10.0.2.20", "10.0.1.10"), ("2001:db8::5", "10.0.1.10")}),
        ({"min_bytes": "4000"}, {("10.0.0.2", "10.0.0.1")}),
        ({"min_bytes": "2000", "since": "2026-11-26T12:05:00Z"}, {("10.0.0.2", "10.0.0.1")}),
        ({"min_bytes": "2000", "until": "2026-11-26T12:05:00Z"}, set()),
        ({"since": "2026-11-27T00:00:00Z"}, set()),
    ],
)
def test_topology_filters(api, query, expected):
    reply = api.get("/api/v1/topology", api.token(), params={"group": "address", **query})
    assert reply.status_code == 200, reply.text
    assert {(e["client"], e["server"]) for e in reply.json()["edges"]} == expected


def test_grouped_topology_counts_dependencies_between_groups(api):
    token = api.token()
    by_owner = api.get("/api/v1/topology?group=owner", token).json()
    edges = {(e["source"], e["target"]): e["dependencies"] for e in by_owner["edges"]}
    assert edges == {("web", "data"): 2, ("web", "web"): 2, ("it", "web"): 1, ("(none)", "web"): 1, ("data", "it"): 1}
    assert {n["id"]: n["assets"] for n in by_owner["nodes"]} == {"data": 1, "web": 3, "it": 1, "(none)": 1}
    by_subnet = api.get("/api/v1/topology?group=subnet&prefix_len=16", token).json()
    assert {(e["source"], e["target"]) for e in by_subnet["edges"]} >= {("10.0.0.0/16", "10.0.0.0/16")}


def test_the_full_topology_is_cached_gzip_in_db2_and_invalidated_by_a_new_window(api, api_redis, pg_dsn):
    token = api.token()
    first = api.get("/api/v1/topology", token, headers={"Accept-Encoding": "gzip"})
    assert first.headers["content-encoding"] == "gzip"
    cache = api_redis(2)
    stored = cache.get("topology:full")
    generation, _, payload = stored.partition(b"\n")
    assert gzip.decompress(payload) and 0 < cache.ttl("topology:full") <= 300
    edges = {(e["source"], e["target"]) for e in first.json()["edges"]}
    assert ("10.0.0.0/24", "10.0.0.0/24") in edges
    hits = _metric(api, 'flowlens_redis_cache_hits_total{cache="topology"}')
    assert api.get("/api/v1/topology", token).json() == first.json()
    assert _metric(api, 'flowlens_redis_cache_hits_total{cache="topology"}') == hits + 1
    # a new dependency lands; the pipeline bumps the generation; the next answer has it
    import psycopg

    with psycopg.connect(pg_dsn) as conn:
        conn.execute(
            """INSERT INTO flowlens.dependencies VALUES ('10.0.0.2', '10.0.9.9', 53, 17, %s, %s, %s, %s)""",
            (T0, T0, T0, T0),
        )
    assert api.get("/api/v1/topology", token).json() == first.json()  # still the cached generation
    bump_api_generation(api.cfg.redis.url(0), api.cfg.api.cache_db)
    fresh = api.get("/api/v1/topology", token, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in fresh.headers
    assert ("10.0.0.0/24", "10.0.9.0/24") in {(e["source"], e["target"]) for e in fresh.json()["edges"]}
    assert cache.get("topology:full").partition(b"\n")[0] == str(int(generation) + 1).encode()
    br = api.get("/api/v1/topology", token, headers={"Accept-Encoding": "br"})
    assert br.headers["content-encoding"] == "br" and br.json() == fresh.json()


def _metric(api, name: str) -> float:
    for line in api.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.parametrize(
    ("q", "first"),
    [
        ("10.0.0.3", ["10.0.0.3"]),
        ("10.0.0.0/24", ["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
        ("AS64513", ["10.0.1.10"]),
        ("app", ["10.0.0.2", "10.0.0.3"]),  # the exact name first, the similar one after
        ("laptop", ["10.0.2.20"]),
        ("xample", None),  # substring of every hostname: all six
        ("frontend", ["10.0.1.10"]),  # a tag
    ],
)
def test_search(api, q, first):
    reply = api.get("/api/v1/search", api.token(), params={"q": q})
    assert reply.status_code == 200, reply.text
    found = [r["addr"] for r in reply.json()["results"]]
    if first is None:
        assert len(found) == 6
    else:
        assert found == first


def test_search_filters_pages_and_caches_for_a_minute(api, api_redis):
    token = api.token()
    reply = api.get("/api/v1/search", token, params={"owner": "web", "limit": 2}).json()
    assert [r["addr"] for r in reply["results"]] == ["10.0.0.2", "10.0.0.3"]
    rest = api.get("/api/v1/search", token, params={"owner": "web", "limit": 2,
                                                    "cursor": reply["next_cursor"]}).json()  # fmt: skip
    assert [r["addr"] for r in rest["results"]] == ["10.0.1.10"] and rest["next_cursor"] is None
    api.get("/api/v1/search", token, params={"q": "laptop"})
    assert 0 < api_redis(2).ttl("search:laptop") <= 60


def test_asset_detail_has_dependencies_both_ways_bytes_and_series(api):
    reply = api.get("/api/v1/assets/10.0.0.1", api.token(), params={"since": "2026-11-26T11:00:00Z",
                                                                    "until": "2026-11-26T13:00:00Z"})  # fmt: skip
    body = reply.json()
    assert body["asset"]["hostname"] == "db1.example.com"
    assert [(d["client"], d["port"], d["bytes"]) for d in body["dependencies_in"]] == [
        ("10.0.0.2", 5432, 4000),
        ("10.0.0.3", 5432, 0),
    ]
    assert [(d["server"], d["port"], d["protocol"]) for d in body["dependencies_out"]] == [("10.0.2.20", 9000, 17)]
    assert body["dependencies_in_total"] == 2
    assert body["series"]["step"] == "5m"
    assert [p["bytes"] for p in body["series"]["points"]] == [1000, 3000]


def test_impact_walks_clients_breadth_first_with_paths_and_cuts_the_cycle(api, api_redis):
    reply = api.get("/api/v1/impact", api.token(), params={"target": "10.0.0.1", "depth": 6}).json()
    got = {a["addr"]: (a["depth"], a["path"]) for a in reply["affected"]}
    assert got == {
        "10.0.0.2": (1, ["10.0.0.1", "10.0.0.2"]),
        "10.0.0.3": (1, ["10.0.0.1", "10.0.0.3"]),
        "10.0.1.10": (2, ["10.0.0.1", "10.0.0.2", "10.0.1.10"]),
        "10.0.2.20": (3, ["10.0.0.1", "10.0.0.2", "10.0.1.10", "10.0.2.20"]),
        "2001:db8::5": (3, ["10.0.0.1", "10.0.0.2", "10.0.1.10", "2001:db8::5"]),
    }  # the cycle back to 10.0.0.1 through 10.0.2.20:9000 adds nothing
    assert reply["by_depth"] == {"1": 2, "2": 1, "3": 2} and reply["truncated"] is False
    assert 0 < api_redis(2).ttl("impact:10.0.0.1:depth-6") <= 300


def test_impact_of_a_service_and_the_fan_out_limit(api):
    token = api.token()
    service = api.get("/api/v1/impact", token, params={"target": "10.0.2.20:9000/udp", "depth": 1}).json()
    assert [a["addr"] for a in service["affected"]] == ["10.0.0.1"]
    assert api.get("/api/v1/impact", token, params={"target": "10.0.2.20:443", "depth": 1}).json()["count"] == 0
    limited = api.get("/api/v1/impact", token, params={"target": "10.0.0.1", "depth": 3, "max_nodes": 3}).json()
    assert limited["count"] == 3 and limited["truncated"] is True
    assert "fan-out limit of 3" in limited["message"]


def test_changes_history_pages_newest_first_with_filters(api):
    token = api.token()
    first = api.get("/api/v1/changes", token, params={"limit": 1}).json()
    assert [c["subject"] for c in first["changes"]] == ["10.0.0.2"]
    rest = api.get("/api/v1/changes", token, params={"limit": 1, "cursor": first["next_cursor"]}).json()
    assert [c["subject"] for c in rest["changes"]] == ["10.0.0.1"] and rest["next_cursor"] is None
    assert api.get("/api/v1/changes", token, params={"kind": "dependency_gone"}).json()["changes"] == []
    assert len(api.get("/api/v1/changes", token, params={"prefix": "10.0.0.1/32"}).json()["changes"]) == 1


@pytest.mark.parametrize(
    ("path", "status", "parameter"),
    [
        ("/api/v1/topology?port=70000", 400, "port"),
        ("/api/v1/topology?prefix=10.0.0.0/40", 400, "prefix"),
        ("/api/v1/topology?protocol=carrier-pigeon", 400, "protocol"),
        ("/api/v1/topology?group=planet", 400, "group"),
        ("/api/v1/topology?group=address&limit=100000", 400, "limit"),
        ("/api/v1/topology?group=address&limit=abc", 400, "limit"),
        ("/api/v1/topology?group=address&cursor=garbage", 400, "cursor"),
        ("/api/v1/topology?since=yesterday", 400, "since"),
        ("/api/v1/topology?since=2026-11-27&until=2026-11-26", 400, "until"),
        ("/api/v1/topology?asn=ASX", 400, "asn"),
        ("/api/v1/topology?country=Germany", 400, "country"),
        ("/api/v1/topology?min_bytes=-1", 400, "min_bytes"),
        ("/api/v1/search", 400, "q"),
        ("/api/v1/search?q=10.0.0.0/33", 400, "q"),
        ("/api/v1/assets/10.0.0.256", 400, "addr"),
        ("/api/v1/assets/10.9.9.9", 404, "addr"),
        ("/api/v1/impact", 400, "target"),
        ("/api/v1/impact?target=10.0.0.1&depth=0", 400, "depth"),
        ("/api/v1/impact?target=10.0.0.1&depth=7", 400, "depth"),
        ("/api/v1/impact?target=10.0.0.1:99999", 400, "target"),
        ("/api/v1/impact?target=10.0.0.1&max_nodes=0", 400, "max_nodes"),
        ("/api/v1/impact?target=10.9.9.9", 404, "target"),
        ("/api/v1/changes?kind=new_planet", 400, "kind"),
        ("/api/v1/changes?limit=0", 400, "limit"),
    ],
)
def test_bad_input_is_a_one_line_json_error_naming_the_parameter(api, path, status, parameter):
    reply = api.get(path, api.token())
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    assert reply.json()["parameter"] == parameter and "\n" not in reply.text
    assert "Traceback" not in reply.text


def test_viewers_cannot_list_users(api):
    assert api.get("/api/v1/users", api.token("victor")).status_code == 403
    users = api.get("/api/v1/users", api.token("alice")).json()["users"]
    assert [u["username"] for u in users] == ["alice", "victor"]


def test_metrics_use_the_models_names(api):
    token = api.token()
    ok = 'flowlens_api_requests_total{endpoint="/api/v1/topology",method="GET",status="200"}'
    before = _metric(api, ok)
    api.get("/api/v1/topology", token)
    assert _metric(api, ok) == before + 1
    text = api.get("/metrics").text
    assert 'flowlens_api_latency_seconds_bucket{endpoint="/api/v1/topology",le="0.1",method="GET"}' in text
    assert "flowlens_websocket_connections_active" in text
    assert 'flowlens_redis_cache_misses_total{cache="topology"}' in text


def test_password_is_not_stored_in_clear(sample_map):
    import psycopg

    with psycopg.connect(sample_map) as conn:
        stored = conn.execute("SELECT password_hash FROM flowlens.api_users WHERE username = 'alice'").fetchone()[0]
    assert stored.startswith("$argon2id$") and PASSWORD not in stored


def test_the_api_recovers_by_itself_when_its_postgres_connections_drop(api, sample_map):
    import psycopg

    token = api.token()
    assert api.get("/api/v1/changes", token).status_code == 200
    with psycopg.connect(sample_map, autocommit=True) as conn:
        dropped = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = 'flowlens-api' AND datname = current_database()"
        ).fetchone()[0]
    assert dropped >= 1
    codes = [api.get("/api/v1/changes", token).status_code for _ in range(api.cfg.api.pg_pool_size + 2)]
    assert set(codes) <= {200, 503} and codes[-1] == 200  # a broken connection is a 503 once, then replaced


def test_openapi_docs_describe_every_endpoint(api):
    assert api.get("/docs").status_code == 200
    paths = api.get("/openapi.json").json()["paths"]
    for path in ("/api/v1/topology", "/api/v1/search", "/api/v1/assets/{addr}", "/api/v1/impact", "/api/v1/changes"):
        assert paths[path]["get"]["description"], path
