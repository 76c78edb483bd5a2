"""Enrichment: GeoIP/ASN, reverse DNS and the asset inventory, cached in Redis or in process.

The pipeline's ``enriched_flows`` asset uses it like this (no Dagster in this package)::

    from assets.enrich import Enricher, load_inventory
    inventory, errors = load_inventory(path)          # errors: [(line_number, message)]
    enricher = Enricher.from_config(cfg, redis_url=None, inventory=inventory)
    enriched = enricher.enrich(flows)                  # + src_*/dst_* columns, see DESCRIPTION_COLUMNS
    hint = inventory.server_side(flows)                # +1 dst is the server, -1 src is, 0 unknown
    enricher.stats                                     # lookups, cache hits/misses, timeouts, seconds
"""

from assets.enrich.cache import EnrichmentCache
from assets.enrich.dns import ReverseResolver
from assets.enrich.enricher import DESCRIPTION_COLUMNS, Enricher
from assets.enrich.geoip import GeoIP, GeoIPError
from assets.enrich.inventory import Inventory, InventoryEntry, InventoryError, load_inventory

__all__ = [
    "DESCRIPTION_COLUMNS",
    "Enricher",
    "EnrichmentCache",
    "GeoIP",
    "GeoIPError",
    "Inventory",
    "InventoryEntry",
    "InventoryError",
    "ReverseResolver",
    "load_inventory",
]
