"""Write small real MaxMind-format City and ASN databases (with ``mmdb-writer``, a dev dependency).

Tests and ``flowlens bench enrich`` use these instead of mocking the reader: the files go through
the same ``maxminddb`` C reader as GeoLite2 downloads. Records carry the GeoLite2 field layout the
enricher reads (country.iso_code, city.names.en, location.latitude/longitude;
autonomous_system_number/organization). Databases are IPv6 with the IPv4 space mapped in, like
MaxMind's, so one file answers both families.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple


class Place(NamedTuple):
    country: str
    city: str | None = None
    lat: float | None = None
    lon: float | None = None


class AutonomousSystem(NamedTuple):
    number: int
    organization: str


def _writer(database_type: str):
    try:
        from mmdb_writer import MMDBWriter
    except ImportError as exc:
        raise RuntimeError(
            "writing .mmdb files needs the dev dependency mmdb-writer: .venv/bin/pip install mmdb-writer==0.2.7"
        ) from exc
    return MMDBWriter(ip_version=6, ipv4_compatible=True, database_type=database_type, languages=["en"])


def _networks(cidr: str):
    from netaddr import IPSet

    return IPSet([cidr])


def write_city_db(path: str | Path, places: Mapping[str, Place]) -> Path:
    """A ``GeoLite2-City``-typed database mapping each CIDR to its place."""
    from mmdb_writer import MmdbF64, MmdbU32

    writer = _writer("GeoLite2-City")
    for cidr, place in places.items():
        record: dict = {"country": {"iso_code": place.country, "names": {"en": place.country}}}
        if place.city is not None:
            record["city"] = {"names": {"en": place.city}}
        if place.lat is not None and place.lon is not None:
            record["location"] = {
                "latitude": MmdbF64(place.lat),
                "longitude": MmdbF64(place.lon),
                "accuracy_radius": MmdbU32(50),
            }
        writer.insert_network(_networks(cidr), record)
    writer.to_db_file(str(path))
    return Path(path)


def write_asn_db(path: str | Path, systems: Mapping[str, AutonomousSystem]) -> Path:
    """A ``GeoLite2-ASN``-typed database mapping each CIDR to its autonomous system."""
    from mmdb_writer import MmdbU32

    writer = _writer("GeoLite2-ASN")
    for cidr, system in systems.items():
        writer.insert_network(
            _networks(cidr),
            {
                "autonomous_system_number": MmdbU32(system.number),
                "autonomous_system_organization": system.organization,
            },
        )
    writer.to_db_file(str(path))
    return Path(path)
