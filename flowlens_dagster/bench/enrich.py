"""``flowlens bench enrich [--json]``: enrich one large synthetic window, cold and then warm.

What it builds (all generated here, nothing downloaded):

- ``--addresses`` distinct addresses (default 1,000,000): ~35% private IPv4, ~60% public IPv4,
  ~5% public IPv6;
- City and ASN ``.mmdb`` files covering most public /16s and a few IPv6 /32s (some addresses
  deliberately have no record);
- a window of ``--flows`` flows (default 15,000,000) in the flow-record schema over those addresses,
  every address used at least once;
- a PTR server on loopback that names every private address and half of the public ones.

Runs: a *cold* window (empty caches: GeoIP from the mmdb files, DNS within its budget, the rest
deferred), then the DNS cache is filled for the deferred addresses (what earlier windows would have
resolved), then the *warm* window with a fresh Enricher, as a new Dagster run process would have:
only the shared cache (Redis when reachable, else memory) is warm. ``window_seconds`` is the warm run.

Baseline, same run: the naive way, per flow ``geoip2`` City + ASN lookups on both ends, measured on
a sample of flows and scaled to the window.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from assets.enrich.addresses import V4_BASE, key_lit, scope_of, to_text
from assets.enrich.cache import EnrichmentCache
from assets.enrich.dns import ReverseResolver
from assets.enrich.enricher import Enricher
from assets.enrich.geoip import GeoIP
from assets.enrich.inventory import Inventory, InventoryEntry
from flowlens_dagster.bench.report import report
from ingest.schema import FLOW_SCHEMA, ROUTING_COLUMNS
from tests.fakes.mmdb_files import AutonomousSystem, Place, write_asn_db, write_city_db
from tests.fakes.ptr_server import PTRServer

BENCH_REDIS_DB = 13  # a database of its own: flushed before and after the run
_CITIES = [
    ("US", "Ashburn", 39.04, -77.49),
    ("DE", "Frankfurt", 50.11, 8.68),
    ("JP", "Tokyo", 35.69, 139.69),
    ("BR", "Sao Paulo", -23.55, -46.63),
    ("FR", "Paris", 48.86, 2.35),
    ("IN", "Mumbai", 19.08, 72.88),
]


# --- synthetic data ----------------------------------------------------------------------------
def generate_addresses(count: int, rng: np.random.Generator) -> pl.Series:
    """``count`` distinct UInt128 keys with a realistic private/public/IPv6 mix."""
    want = {"private": int(count * 0.35), "v6": max(1, int(count * 0.05))}
    want["public"] = count - want["private"] - want["v6"]
    parts = []
    bases = [(10 << 24, 1 << 24), (172 << 24 | 16 << 16, 1 << 20), (192 << 24 | 168 << 16, 1 << 16)]
    share = [0.7, 0.2, 0.1]
    for (base, size), fraction in zip(bases, share, strict=True):
        n = min(size, max(1, int(want["private"] * fraction * 1.05)))
        parts.append(pl.Series(base + rng.choice(size, n, replace=False), dtype=pl.UInt64))
    private = pl.concat(parts).unique().head(want["private"])
    public = pl.Series(rng.integers(1 << 24, 224 << 24, int(want["public"] * 1.3), dtype=np.uint64)).unique()
    v4 = pl.concat([private, public]).cast(pl.UInt128).rename("k")
    frame = pl.DataFrame({"k": v4}).with_columns(pl.col("k") + key_lit(V4_BASE))
    frame = frame.with_columns(scope=scope_of(pl.col("k")))
    keep = pl.concat(
        [
            frame.filter(pl.col("scope") == "private").head(want["private"]),
            frame.filter(pl.col("scope") == "public").head(want["public"]),
        ]
    )["k"]
    prefix = 0x2A00 << 112  # 2a00::/16, global unicast
    v6_hi = rng.integers(0, 1 << 16, want["v6"], dtype=np.uint64).astype(object)
    v6_lo = rng.integers(0, 1 << 62, want["v6"], dtype=np.uint64).astype(object)
    v6 = pl.Series([prefix | (int(h) << 80) | int(lo) for h, lo in zip(v6_hi, v6_lo, strict=True)], dtype=pl.UInt128)
    return pl.concat([keep, v6]).unique().shuffle(seed=int(rng.integers(1 << 31))).rename("k")


def _binary16(keys: pl.Series, positions: np.ndarray) -> pl.Series:
    """Flow-record addresses (16-byte binary) for ``positions`` into ``keys``, built without Python loops."""
    halves = pl.DataFrame({"k": keys}).select(
        hi=(pl.col("k") // key_lit(1 << 64)).cast(pl.UInt64), lo=(pl.col("k") % key_lit(1 << 64)).cast(pl.UInt64)
    )
    hi, lo = halves["hi"].to_numpy(), halves["lo"].to_numpy()
    table = np.empty((len(keys), 2), dtype=">u8")
    table[:, 0], table[:, 1] = hi, lo
    raw = table[positions].tobytes()
    arr = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), len(positions), [None, pa.py_buffer(raw)])
    return pl.from_arrow(arr).cast(pl.Binary)


def generate_flows(keys: pl.Series, flows: int, rng: np.random.Generator) -> pl.DataFrame:
    """A window of ``flows`` flow records over ``keys``; every key appears at least once."""
    d = len(keys)
    src = rng.integers(0, d, flows)
    dst = rng.integers(0, d, flows)
    cover = rng.permutation(d)[: min(d, flows)]
    src[: len(cover)] = cover
    start = np.datetime64("2026-11-26T12:00:00", "us").astype(np.int64)
    columns = {
        "receive_time": start + rng.integers(0, 300_000_000, flows),
        "exporter": None,
        "observation_domain": np.zeros(flows, np.uint32),
        "flow_version": np.full(flows, 10, np.uint8),
        "flow_start": start + rng.integers(0, 300_000_000, flows),
        "flow_end": start + rng.integers(0, 300_000_000, flows),
        "src_addr": None,
        "dst_addr": None,
        "src_port": rng.integers(1024, 65535, flows).astype(np.uint16),
        "dst_port": rng.choice(np.array([443, 80, 53, 22, 5432, 3306], np.uint16), flows),
        "protocol": rng.choice(np.array([6, 17], np.uint8), flows),
        "tcp_flags": rng.integers(0, 64, flows).astype(np.uint16),
        "bytes": rng.integers(40, 1_500_000, flows).astype(np.uint64),
        "packets": rng.integers(1, 1000, flows).astype(np.uint64),
        "sampling_rate": np.ones(flows, np.uint32),
        "input_if": rng.integers(1, 48, flows).astype(np.uint32),
        "output_if": rng.integers(1, 48, flows).astype(np.uint32),
        "src_as": np.zeros(flows, np.uint32),
        "dst_as": np.zeros(flows, np.uint32),
        "direction": np.zeros(flows, np.uint8),
    }
    series = []
    for field in FLOW_SCHEMA:
        if field.name in ("src_addr", "dst_addr"):
            series.append(_binary16(keys, src if field.name == "src_addr" else dst).rename(field.name))
        elif field.name == "exporter":
            exporter = pl.Series([ipaddress.IPv6Address("::ffff:192.0.2.1").packed], dtype=pl.Binary)
            series.append(exporter.gather(np.zeros(flows, np.uint32)).rename("exporter"))
        elif field.name in ROUTING_COLUMNS:  # sFlow routing context: none in this workload
            series.append(pl.Series(field.name, pa.nulls(flows, field.type)))
        elif pa.types.is_timestamp(field.type):
            series.append(pl.Series(field.name, columns[field.name]).cast(pl.Datetime("us", "UTC")))
        else:
            series.append(pl.Series(field.name, columns[field.name]))
    return pl.DataFrame(series)


def write_databases(directory: Path, keys: pl.Series, rng: np.random.Generator) -> tuple[Path, Path]:
    """City and ASN files covering ~90% of the public /16s the addresses fall in, plus their IPv6 /32s."""
    texts = to_text(keys)
    v4 = texts.filter(~texts.str.contains(":"))
    slash16 = v4.str.extract(r"^(\d+\.\d+)\.", 1).unique().sort()
    slash16 = slash16.filter(pl.Series(rng.random(len(slash16)) < 0.9))
    v6_keys = pl.DataFrame({"k": keys.filter(texts.str.contains(":"))})
    slash32 = v6_keys.select(pl.col("k") // key_lit(1 << 96)).to_series().unique()
    places, systems = {}, {}
    for i, prefix in enumerate(slash16.to_list()):
        cidr = f"{prefix}.0.0/16"
        places[cidr] = Place(*_CITIES[i % len(_CITIES)])
        systems[cidr] = AutonomousSystem(64_512 + i % 1000, f"Example Transit {i % 1000}")
    for i, top in enumerate(slash32.to_list()):
        cidr = f"{ipaddress.IPv6Address(int(top) << 96)}/32"
        places[cidr] = Place(*_CITIES[i % len(_CITIES)])
        systems[cidr] = AutonomousSystem(65_000 + i % 500, f"Example IPv6 {i % 500}")
    return write_city_db(directory / "city.mmdb", places), write_asn_db(directory / "asn.mmdb", systems)


def ptr_names(texts: pl.Series, scopes: pl.Series) -> dict[str, str]:
    """Names for every private address and every other public one (the rest answer NXDOMAIN)."""
    frame = pl.DataFrame({"ip": texts, "scope": scopes.cast(pl.String)}).with_row_index("i")
    named = frame.filter((pl.col("scope") == "private") | ((pl.col("scope") == "public") & (pl.col("i") % 2 == 0)))
    hostnames = named.select(pl.concat_str([pl.lit("host-"), pl.col("i").cast(pl.String), pl.lit(".example.net")]))
    return dict(zip(named["ip"].to_list(), hostnames.to_series().to_list(), strict=True))


# --- measuring -----------------------------------------------------------------------------------
def naive_seconds_per_flow(flows: pl.DataFrame, city: Path, asn: Path, sample: int) -> float:
    """Per-flow geoip2 City + ASN lookups for both ends, as a straightforward implementation would."""
    import geoip2.database
    import geoip2.errors

    rows = flows.select("src_addr", "dst_addr").head(sample).rows()
    with geoip2.database.Reader(str(city)) as cities, geoip2.database.Reader(str(asn)) as systems:
        started = time.perf_counter()
        for src, dst in rows:
            for raw in (src, dst):
                ip = ipaddress.IPv6Address(raw)
                text = str(ip.ipv4_mapped or ip)
                for lookup in (cities.city, systems.asn):
                    with contextlib.suppress(geoip2.errors.AddressNotFoundError):
                        lookup(text)
        return (time.perf_counter() - started) / max(1, len(rows))


def _redis_url(args) -> str | None:
    if args.no_redis:
        return None
    if args.redis_url:
        return args.redis_url
    import redis

    from ingest.config import load_config

    url = load_config(args.config).redis.url(db=BENCH_REDIS_DB)
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        return None  # no stack: measure the in-process cache
    return url


def _flush(url: str | None) -> None:
    if url:
        import redis

        # asynchronous: freeing a million keys takes Redis seconds, and nobody waits for it
        redis.Redis.from_url(url, socket_timeout=30).flushdb(asynchronous=True)


def _enricher(cache: EnrichmentCache, geoip: GeoIP, server: PTRServer, inventory: Inventory) -> Enricher:
    resolver = ReverseResolver(
        ["127.0.0.1"], port=server.port, timeout_seconds=1.0, lookups_per_second=500, max_seconds_per_window=5.0
    )
    return Enricher(cache=cache, geoip=geoip, resolver=resolver, inventory=inventory)


def _prewarm_dns(enricher: Enricher, keys: pl.Series, names: dict[str, str]) -> int:
    """Cache what earlier windows would have resolved for the addresses this window deferred."""
    texts = to_text(keys)
    cached = enricher.cache.get("dns", texts, count=False)
    todo = texts.filter(cached.is_null())
    hostnames = pl.Series([names.get(ip, "") for ip in todo.to_list()], dtype=pl.String)
    positive = hostnames != ""
    enricher.cache.put("dns", todo.filter(positive), hostnames.filter(positive))
    enricher.cache.put("dns", todo.filter(~positive), hostnames.filter(~positive), enricher.dns_negative_ttl)
    return len(todo)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="flowlens bench enrich", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--flows", type=int, default=15_000_000, help="flows in the window (default 15M)")
    parser.add_argument("--addresses", type=int, default=1_000_000, help="distinct addresses (default 1M)")
    parser.add_argument("--sample", type=int, default=20_000, help="flows in the naive baseline sample")
    parser.add_argument("--redis-url", help=f"Redis for the shared cache (default: the stack's, db {BENCH_REDIS_DB})")
    parser.add_argument("--no-redis", action="store_true", help="measure the in-process cache instead")
    parser.add_argument("--config", help="FlowLens config file")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)
    if args.addresses < 10 or args.flows < 1:
        parser.error("--addresses must be >= 10 and --flows >= 1")

    rng = np.random.default_rng(args.seed)
    keys = generate_addresses(args.addresses, rng)
    flows = generate_flows(keys, args.flows, rng)
    texts, scopes = to_text(keys), pl.DataFrame({"k": keys}).select(scope_of(pl.col("k"))).to_series()
    names = ptr_names(texts, scopes)
    inventory = Inventory(
        [
            InventoryEntry(ipaddress.ip_network("10.0.0.0/16"), "office", services=((443, 6),)),
            InventoryEntry(ipaddress.ip_network("172.16.0.0/12"), "datacenter"),
        ]
    )
    url = _redis_url(args)
    _flush(url)
    with tempfile.TemporaryDirectory(prefix="flowlens-bench-enrich-") as tmp, PTRServer(names) as server:
        city, asn = write_databases(Path(tmp), keys, rng)
        geoip = GeoIP(city, asn)
        ttls = {"dns": 3600, "geo": 86_400, "asset": 300}
        cold = _enricher(EnrichmentCache(ttls, url), geoip, server, inventory)
        started = time.perf_counter()
        cold.enrich(flows)
        cold_seconds = time.perf_counter() - started
        cold_stats = dict(cold.stats)
        prewarmed = _prewarm_dns(cold, keys, names)
        warm_cache = EnrichmentCache(ttls, url) if url else cold.cache
        warm = _enricher(warm_cache, geoip, server, inventory)
        started, cpu_started = time.perf_counter(), _cpu_seconds()
        out = warm.enrich(flows)
        warm_seconds, warm_cpu = time.perf_counter() - started, _cpu_seconds() - cpu_started
        naive = naive_seconds_per_flow(flows, city, asn, args.sample)
        geoip.close()
    _flush(url)
    stats = warm.stats
    # this window's lookups only (in memory mode the cache object also served the cold run)
    hits = stats.get("geo_cache_hits", 0) + stats.get("dns_cache_hits", 0)
    total = hits + stats.get("geo_cache_misses", 0) + stats.get("dns_cache_misses", 0)
    figures = {
        "window_seconds": round(warm_seconds, 3),
        "flows": flows.height,
        "distinct_addresses": stats["distinct_addresses"],
        "cache_hit_ratio": round(hits / total, 4) if total else 0.0,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "flows_per_s": round(flows.height / warm_seconds),
        "cpu_seconds": round(warm_cpu, 3),
        "cold_window_seconds": round(cold_seconds, 3),
    }
    baseline = {"window_seconds": round(naive * flows.height, 3), "flows_per_s": round(1 / naive) if naive else 0}
    config = {
        "cache": "redis " + url if url else "memory",
        "warm_run": "fresh Enricher, shared cache warm; DNS cache filled for addresses the cold run deferred",
        "dns_prewarmed_addresses": prewarmed,
        "cold_dns": {k: v for k, v in cold_stats.items() if k.startswith("dns_")},
        "warm_stages": {k: v for k, v in stats.items() if k.endswith("_seconds")},
        "baseline": f"naive per-flow geoip2 City+ASN on both ends, {args.sample} flows sampled, scaled",
        "cpu_seconds": "user+system CPU of this process in the warm run (Redis server not included); "
        "the wall-clock figures depend on what else the machine runs",
        "load_average_1m": round(os.getloadavg()[0], 2),
        "output_columns": len(out.columns),
        "polars_threads": pl.thread_pool_size(),
    }
    report("enrich", figures, baseline, config, args.json)
    return 0
