"""The enricher: GeoIP/ASN, reverse DNS and inventory names for both ends of every flow in a window.

How a window is enriched (no per-flow Python anywhere):

1. the 16-byte addresses become UInt128 keys; the window's distinct keys get a position each;
2. each distinct address is described once (:meth:`Enricher.describe`): text, scope, GeoIP/ASN
   (public addresses only; cache first, then the mmdb files), hostname (addresses in the DNS lookup
   scopes; cache first, then the resolver within its budget), inventory asset and known flag;
3. the description is gathered back onto the flows by position, once for ``src_`` and once for
   ``dst_``.

The pipeline wraps this class in a Dagster resource; this module imports no Dagster.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import polars as pl

from assets.enrich import geoip as geo
from assets.enrich.addresses import KEY, distinct_index, keys_of, scope_of, to_text
from assets.enrich.cache import EnrichmentCache
from assets.enrich.dns import ReverseResolver
from assets.enrich.geoip import GEO_SCHEMA, GeoIP
from assets.enrich.inventory import Inventory, load_inventory

log = logging.getLogger(__name__)

# Columns added per end of a flow (as src_<name> and dst_<name>), in this order.
DESCRIPTION_COLUMNS = ("ip", "country", "city", "lat", "lon", "asn", "as_org", "hostname", "asset", "known", "scope")
_CATEGORICAL = ("country", "city", "as_org", "asset")  # few distinct values: cheap to gather as codes


class Enricher:
    """Describe addresses and enrich flow windows; see the module docstring.

    Build it with :meth:`from_config`; nothing is opened or connected until the first window.
    ``stats`` holds the figures of the last :meth:`enrich` (or :meth:`describe`) call.
    """

    def __init__(
        self,
        *,
        cache: EnrichmentCache,
        geoip: GeoIP | None = None,
        resolver: ReverseResolver | None = None,
        inventory: Inventory | None = None,
        dns_scopes: tuple[str, ...] = ("private", "shared", "public"),
        dns_negative_ttl_seconds: int = 300,
    ) -> None:
        self.cache = cache
        self.geoip = geoip if geoip is not None and geoip.enabled else None
        self.resolver = resolver
        self.inventory = inventory or Inventory()
        self.dns_scopes = tuple(dns_scopes)
        self.dns_negative_ttl = dns_negative_ttl_seconds
        self.stats: dict[str, Any] = {}
        self._published = pl.DataFrame(schema={"k": KEY, "asset": pl.String, "at": pl.Float64})

    @classmethod
    def from_config(cls, cfg, redis_url: str | None = None, inventory: Inventory | None = None) -> Enricher:
        """From a FlowLensConfig. Raises GeoIPError at once when a configured mmdb file is missing.

        ``redis_url`` None keeps the caches in process (minimal mode). Without ``inventory`` the
        file named by ``enrichment.inventory_file`` is loaded (invalid rows are logged and skipped).
        """
        if inventory is None and cfg.enrichment.inventory_file:
            inventory, errors = load_inventory(cfg.enrichment.inventory_file)
            for line, message in errors:
                log.warning("%s:%s: %s (row skipped)", cfg.enrichment.inventory_file, line, message)
        cache = EnrichmentCache(
            ttls={
                "dns": cfg.dns.positive_ttl_seconds,
                "geo": cfg.enrichment.geo_ttl_seconds,
                "asset": cfg.enrichment.asset_ttl_seconds,
            },
            redis_url=redis_url,
            retry_seconds=cfg.enrichment.redis_retry_seconds,
        )
        return cls(
            cache=cache,
            geoip=GeoIP(cfg.geoip.city_db, cfg.geoip.asn_db),
            resolver=ReverseResolver.from_config(cfg.dns) if cfg.dns.enabled else None,
            inventory=inventory,
            dns_scopes=tuple(cfg.dns.lookup_scopes),
            dns_negative_ttl_seconds=cfg.dns.negative_ttl_seconds,
        )

    # --- windows -------------------------------------------------------------------------------
    def enrich(self, flows: pl.DataFrame) -> pl.DataFrame:
        """``flows`` (flow-record columns) plus src_*/dst_* description columns (DESCRIPTION_COLUMNS)."""
        self.stats = {"flows": flows.height}
        with _timed(self.stats, "window"):
            with _timed(self.stats, "index"):
                keys = flows.select(src=keys_of("src_addr"), dst=keys_of("dst_addr"))
                invalid = keys["src"].null_count() + keys["dst"].null_count()
                distinct, (src_pos, dst_pos) = distinct_index(keys["src"], keys["dst"])
            table = self._describe(distinct)
            with _timed(self.stats, "gather"):
                ends = [
                    table[list(DESCRIPTION_COLUMNS)].gather(pos).rename(lambda c, p=prefix: f"{p}_{c}")
                    for prefix, pos in (("src", src_pos), ("dst", dst_pos))
                ]
                added = ends[0].columns + ends[1].columns
                out = pl.concat([flows.drop([c for c in added if c in flows.columns]), *ends], how="horizontal")
        self.stats["invalid_addresses"] = invalid
        if invalid:
            log.warning("%d flow addresses are not 16 bytes long: their descriptions stay null", invalid)
        return out

    def describe(self, keys: pl.Series) -> pl.DataFrame:
        """One row per key (UInt128, as given): k plus DESCRIPTION_COLUMNS."""
        self.stats = {}
        return self._describe(keys)

    def _describe(self, keys: pl.Series) -> pl.DataFrame:
        fallbacks_before = self.cache.stats.fallbacks
        with _timed(self.stats, "describe"):
            keys = keys.cast(KEY)
            table = pl.DataFrame({"k": keys}).with_columns(ip=to_text(keys), scope=scope_of(pl.col("k")))
            for name, step in (("geo", self._geo), ("dns", self._dns), ("asset", self._assets)):
                with _timed(self.stats, name):
                    table = step(table)
            table = table.with_columns(pl.col(c).cast(pl.Categorical) for c in _CATEGORICAL)
        self.stats.update(
            distinct_addresses=table.height,
            cache_backend=self.cache.backend,
            cache_fallbacks=self.cache.stats.fallbacks - fallbacks_before,
        )
        return table.select("k", *DESCRIPTION_COLUMNS)

    # --- the three lookups, each on the distinct-address table ---------------------------------
    def _geo(self, table: pl.DataFrame) -> pl.DataFrame:
        public = (table["scope"] == "public").fill_null(False)
        positions = public.arg_true()
        empty = {name: pl.Series(name, [None] * table.height, dtype=dtype) for name, dtype in GEO_SCHEMA.items()}
        if self.geoip is None or positions.is_empty():
            self.stats.update(geo_lookups=0, geo_no_record=0)
            return table.with_columns(**empty)
        ips = table["ip"].gather(positions)
        cached = self.cache.get("geo", ips)
        found = geo.decode(cached)
        missing = cached.is_null().arg_true()
        no_record = 0
        if not missing.is_empty():
            fresh = self.geoip.lookup(ips.gather(missing))
            self.cache.put("geo", ips.gather(missing), geo.encode(fresh))
            no_record = fresh.select(pl.all_horizontal(pl.all().is_null())).to_series().sum()
            found = pl.concat([found, fresh]).gather(_merge_positions(len(found), missing))
        self.stats.update(
            geo_lookups=len(missing),
            geo_no_record=int(no_record),
            geo_cache_hits=len(ips) - len(missing),
            geo_cache_misses=len(missing),
        )
        return table.with_columns(**{name: empty[name].scatter(positions, found[name]) for name in GEO_SCHEMA})

    def _dns(self, table: pl.DataFrame) -> pl.DataFrame:
        wanted = table["scope"].cast(pl.String).is_in(list(self.dns_scopes)).fill_null(False)
        positions = wanted.arg_true()
        hostname = pl.Series("hostname", [None] * table.height, dtype=pl.String)
        if self.resolver is None or positions.is_empty():
            return table.with_columns(hostname)
        ips = table["ip"].gather(positions)
        cached = self.cache.get("dns", ips)
        names = cached.replace("", None)  # "" is a cached negative answer
        missing = cached.is_null().arg_true()
        if not missing.is_empty():
            result, dns_stats = self.resolver.resolve(ips.gather(missing).to_list())
            self.stats.update(dns_stats.as_dict())
            ok = result.filter(pl.col("status") == "ok")
            negative = result.filter(pl.col("status") == "negative")
            self.cache.put("dns", ok["ip"], ok["hostname"])
            self.cache.put("dns", negative["ip"], pl.Series([""] * negative.height), self.dns_negative_ttl)
            # addresses not in the result were deferred: their hostname stays null this window
            looked_up = pl.DataFrame({"ip": ips.gather(missing)}).join(result, on="ip", how="left")
            names = names.scatter(missing, looked_up["hostname"])
        self.stats.update(dns_cache_hits=len(ips) - len(missing), dns_cache_misses=len(missing))
        return table.with_columns(hostname.scatter(positions, names))

    def _assets(self, table: pl.DataFrame) -> pl.DataFrame:
        entry = self.inventory.match(table["k"])
        table = table.with_columns(
            asset=self.inventory.names.gather(entry) if len(self.inventory) else pl.lit(None, dtype=pl.String),
            known=entry.is_not_null(),
        )
        self._publish_assets(table.filter(pl.col("known")).select("k", "ip", "asset"))
        return table

    def _publish_assets(self, known: pl.DataFrame) -> None:
        """Write ``asset:<ip>`` for known addresses so other services resolve them without the inventory.

        Each address is re-published when half its TTL has passed or its asset changed, not every window.
        """
        now = time.monotonic()
        fresh = self._published.filter(pl.col("at") > now - self.cache.ttls["asset"] / 2)
        todo = known.join(fresh, on=["k", "asset"], how="anti")
        if not todo.is_empty():
            self.cache.put("asset", todo["ip"], todo["asset"])
        self._published = pl.concat(
            [fresh.join(todo, on="k", how="anti"), todo.select("k", "asset", at=pl.lit(now))], how="vertical"
        )
        self.stats.update(assets_known=known.height, assets_published=todo.height)


@contextmanager
def _timed(stats: dict[str, Any], name: str) -> Iterator[None]:
    """Record ``<name>_seconds`` (wall clock) and ``<name>_cpu_seconds`` (this process, all threads)."""
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        stats[f"{name}_seconds"] = round(time.perf_counter() - wall, 3)
        stats[f"{name}_cpu_seconds"] = round(time.process_time() - cpu, 3)


def _merge_positions(cached_rows: int, missing: pl.Series) -> pl.Series:
    """Gather positions over concat([cached, fresh]) that replace the missing rows by the fresh ones."""
    positions = pl.int_range(cached_rows, dtype=pl.UInt32, eager=True)
    return positions.scatter(
        missing, pl.int_range(cached_rows, cached_rows + len(missing), dtype=pl.UInt32, eager=True)
    )
