"""Whole windows through the Enricher: real .mmdb files, a real loopback PTR server, real Redis."""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl
import pytest

from assets.enrich import DESCRIPTION_COLUMNS, Enricher, EnrichmentCache, GeoIP, GeoIPError, load_inventory
from assets.enrich.dns import ReverseResolver
from ingest.config import load_config
from tests.fakes.ptr_server import PTRServer

TTLS = {"dns": 3600, "geo": 86_400, "asset": 300}
INVENTORY = """\
network,name,owner,environment,tags,services
10.0.0.0/16,office,it,prod,corp,
10.0.0.5,web-1,web-team,prod,frontend,443/tcp
"""
ROWS = [
    ("10.0.0.5", "8.8.8.8", 51000, 53, 17),
    ("10.0.0.5", "2a00:1450:4001::1", 51001, 443, 6),
    ("192.168.1.20", "1.1.1.1", 51002, 443, 6),
    ("10.0.2.53", "9.9.9.9", 51003, 123, 17),
    ("8.8.4.4", "10.0.0.5", 51004, 443, 6),
]


def _enricher(tmp_path: Path, mmdb_paths, server: PTRServer, redis_url: str | None = None, **dns) -> Enricher:
    inventory_path = tmp_path / "inventory.csv"
    inventory_path.write_text(INVENTORY)
    inventory, errors = load_inventory(inventory_path)
    assert errors == []
    options = {"timeout_seconds": 0.3, "concurrency": 4, "lookups_per_second": 1000, "max_seconds_per_window": 5}
    options.update(dns)
    negative_ttl = options.pop("negative_ttl", 300)
    return Enricher(
        cache=EnrichmentCache(TTLS, redis_url=redis_url, retry_seconds=60),
        geoip=GeoIP(*mmdb_paths),
        resolver=ReverseResolver(["127.0.0.1"], port=server.port, **options),
        inventory=inventory,
        dns_negative_ttl_seconds=negative_ttl,
    )


def _ends(out: pl.DataFrame) -> dict[str, dict]:
    """Description per address text, read from both ends of the enriched flows."""
    table = {}
    for prefix in ("src", "dst"):
        cols = [f"{prefix}_{c}" for c in DESCRIPTION_COLUMNS]
        for row in out.select(cols).to_dicts():
            desc = {c: row[f"{prefix}_{c}"] for c in DESCRIPTION_COLUMNS}
            table[desc["ip"]] = desc
    return table


def test_window_gets_geo_asn_dns_and_inventory(tmp_path, mmdb_paths, ptr_server, make_flows) -> None:
    enricher = _enricher(tmp_path, mmdb_paths, ptr_server)
    flows = make_flows(ROWS)
    out = enricher.enrich(flows)
    assert out.height == flows.height
    assert out.columns[: len(flows.columns)] == flows.columns
    ends = _ends(out)
    google = ends["8.8.8.8"]
    assert (google["country"], google["city"], google["asn"], google["as_org"]) == (
        "US",
        "Mountain View",
        15169,
        "GOOGLE",
    )
    assert google["hostname"] == "dns.google" and google["scope"] == "public" and google["known"] is False
    v6 = ends["2a00:1450:4001::1"]
    assert (v6["country"], v6["city"], v6["hostname"]) == ("IE", "Dublin", "fra16s.1e100.net")
    assert ends["1.1.1.1"]["country"] == "AU" and ends["1.1.1.1"]["city"] is None
    assert all(ends["9.9.9.9"][c] is None for c in ("country", "asn", "hostname"))
    web = ends["10.0.0.5"]
    assert (web["scope"], web["asset"], web["known"], web["hostname"]) == (
        "private",
        "web-1",
        True,
        "web-1.corp.example",
    )
    assert web["country"] is None and web["asn"] is None  # private: labelled, not looked up
    assert ends["10.0.2.53"]["asset"] == "office"  # covered by the /16
    assert ends["192.168.1.20"]["known"] is False and ends["192.168.1.20"]["asset"] is None
    stats = enricher.stats
    assert stats["distinct_addresses"] == 8
    assert stats["geo_lookups"] == 5  # the public addresses only
    assert stats["dns_lookups"] == 8 and stats["dns_answered"] == 4 and stats["dns_negative"] == 4
    assert stats["invalid_addresses"] == 0


def test_server_side_hint_matches_the_flows(tmp_path, mmdb_paths, ptr_server, make_flows) -> None:
    enricher = _enricher(tmp_path, mmdb_paths, ptr_server)
    assert enricher.inventory.server_side(make_flows(ROWS)).to_list() == [0, 0, 0, 0, 1]


@pytest.mark.integration
def test_second_window_is_served_from_redis(tmp_path, mmdb_paths, ptr_server, make_flows, clean_redis) -> None:
    flows = make_flows(ROWS)
    first = _enricher(tmp_path, mmdb_paths, ptr_server, clean_redis).enrich(flows)
    queries = ptr_server.queries["total"]
    # a new Enricher, as a new Dagster run process would build: only Redis is warm
    second = _enricher(tmp_path, mmdb_paths, ptr_server, clean_redis)
    out = second.enrich(flows)
    assert ptr_server.queries["total"] == queries  # positive and negative answers both cached
    assert second.stats["geo_lookups"] == 0 and "dns_lookups" not in second.stats
    assert second.cache.stats.hits == {"geo": 5, "dns": 8}
    assert second.cache.stats.misses == {"geo": 0, "dns": 0}
    assert out.equals(first)


@pytest.mark.integration
def test_negative_answers_expire_with_their_ttl(tmp_path, mmdb_paths, ptr_server, make_flows, clean_redis) -> None:
    flows = make_flows([("10.0.0.5", "9.9.9.9", 1, 2, 6)])
    enricher = _enricher(tmp_path, mmdb_paths, ptr_server, clean_redis, negative_ttl=1)
    enricher.enrich(flows)
    assert ptr_server.queries["nxdomain"] == 1
    enricher.enrich(flows)
    assert ptr_server.queries["nxdomain"] == 1  # cached negative answer
    time.sleep(1.6)  # past the 1 s negative TTL
    enricher.enrich(flows)
    assert ptr_server.queries["nxdomain"] == 2
    assert ptr_server.queries["answered"] == 1  # 10.0.0.5 stays cached for its positive TTL


def test_dead_resolver_never_fails_the_window(tmp_path, mmdb_paths, ptr_server, make_flows) -> None:
    ptr_server.mode = "ignore"
    enricher = _enricher(tmp_path, mmdb_paths, ptr_server)
    out = enricher.enrich(make_flows(ROWS))
    assert out.height == len(ROWS)
    assert out["src_hostname"].null_count() == len(ROWS) and out["dst_hostname"].null_count() == len(ROWS)
    assert out["dst_country"].to_list()[0] == "US"  # the rest of the enrichment is intact
    stats = enricher.stats
    assert stats["dns_resolver_down"] and stats["dns_timeouts"] == 4
    assert stats["dns_timeouts"] + stats["dns_deferred"] == 8
    ptr_server.mode = "answer"  # timeouts are not cached: the next window resolves them
    enricher.enrich(make_flows(ROWS))
    assert enricher.stats["dns_answered"] == 4


@pytest.mark.integration
def test_redis_outage_mid_run_falls_back(tmp_path, mmdb_paths, ptr_server, make_flows, redis_proxy) -> None:
    proxy, url = redis_proxy
    flows = make_flows(ROWS)
    enricher = _enricher(tmp_path, mmdb_paths, ptr_server, url)
    first = enricher.enrich(flows)
    assert enricher.stats["cache_backend"] == "redis"
    proxy.close()
    second = enricher.enrich(flows)
    assert second.equals(first)  # answers come from the mmdb files and the resolver again
    assert enricher.stats["cache_fallbacks"] == 1 and enricher.stats["cache_backend"] == "memory"
    third = enricher.enrich(flows)  # now the in-process cache answers
    assert third.equals(first) and enricher.cache.stats.hits["geo"] >= 5


def test_invalid_addresses_are_counted_not_fatal(tmp_path, mmdb_paths, ptr_server, make_flows) -> None:
    flows = make_flows(ROWS[:2])
    flows = flows.with_columns(pl.Series("src_addr", [b"\x0a\x00\x00\x05", flows["src_addr"][1]], dtype=pl.Binary))
    out = _enricher(tmp_path, mmdb_paths, ptr_server).enrich(flows)
    assert out["src_ip"].to_list() == [None, "10.0.0.5"]
    assert out["dst_country"].to_list() == ["US", "IE"]


def test_from_config(tmp_path, mmdb_paths, ptr_server, make_flows) -> None:
    city, asn = mmdb_paths
    inventory = tmp_path / "inv.csv"
    inventory.write_text(INVENTORY + "10.0.0.0/8/8,broken,,,,\n")
    env = {
        "FLOWLENS_GEOIP__CITY_DB": str(city),
        "FLOWLENS_GEOIP__ASN_DB": str(asn),
        "FLOWLENS_DNS__NAMESERVERS": '["127.0.0.1"]',
        "FLOWLENS_DNS__PORT": str(ptr_server.port),
        "FLOWLENS_ENRICHMENT__INVENTORY_FILE": str(inventory),
    }
    cfg = load_config(environ=env)
    enricher = Enricher.from_config(cfg)
    assert len(enricher.inventory) == 2  # the broken row was skipped
    out = enricher.enrich(make_flows(ROWS[:1]))
    assert out.row(0, named=True)["dst_hostname"] == "dns.google"
    assert enricher.cache.backend == "memory"
    missing = tmp_path / "nope.mmdb"
    with pytest.raises(GeoIPError, match=str(missing)):
        Enricher.from_config(load_config(environ={**env, "FLOWLENS_GEOIP__CITY_DB": str(missing)}))
