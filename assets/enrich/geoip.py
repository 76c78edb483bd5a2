"""GeoIP and ASN from MaxMind-format databases (GeoLite2/GeoIP2 City and ASN ``.mmdb`` files).

Lookups go through ``maxminddb`` directly (its C extension, memory-mapped): about four times
faster than building ``geoip2`` model objects, and the enricher only needs six fields. Each
distinct address is looked up once per window; an address the database has no record for yields
nulls. Results travel through the cache as the JSON of the scaling model §5.2 (``geo:<ip>``).
"""

from __future__ import annotations

from pathlib import Path

import maxminddb
import polars as pl

GEO_SCHEMA: dict[str, pl.DataType] = {
    "country": pl.String(),
    "city": pl.String(),
    "lat": pl.Float64(),
    "lon": pl.Float64(),
    "asn": pl.UInt32(),
    "as_org": pl.String(),
}
GEO_STRUCT = pl.Struct(GEO_SCHEMA)


class GeoIPError(RuntimeError):
    """A configured GeoIP database is missing or is not the kind of database its key names."""


def _check_database(path: Path | None, key: str) -> Path | None:
    if path is None:
        return None
    path = Path(path).expanduser()
    if not path.is_file():
        env = "FLOWLENS_GEOIP__" + key.upper()
        raise GeoIPError(
            f"GeoIP database {path} (config geoip.{key}, env {env}) does not exist: download the MaxMind "
            f"GeoLite2 {'City' if key == 'city_db' else 'ASN'} .mmdb file to that path, or unset the key "
            "to enrich without it"
        )
    return path


class GeoIP:
    """City and ASN lookups for a list of addresses; either database may be absent (its fields stay null).

    Construction only checks that the files exist (a clear start-up error); they are opened on
    first use, so building a GeoIP costs nothing in processes that never enrich.
    """

    def __init__(self, city_db: Path | None = None, asn_db: Path | None = None) -> None:
        self.city_path = _check_database(city_db, "city_db")
        self.asn_path = _check_database(asn_db, "asn_db")
        self._city: maxminddb.Reader | None = None
        self._asn: maxminddb.Reader | None = None

    @property
    def enabled(self) -> bool:
        return self.city_path is not None or self.asn_path is not None

    def _open(self) -> None:
        if self._city is None and self.city_path is not None:
            self._city = self._open_reader(self.city_path, "City", "city_db")
        if self._asn is None and self.asn_path is not None:
            self._asn = self._open_reader(self.asn_path, "ASN", "asn_db")

    @staticmethod
    def _open_reader(path: Path, kind: str, key: str) -> maxminddb.Reader:
        try:
            reader = maxminddb.open_database(str(path), maxminddb.MODE_AUTO)
        except (OSError, maxminddb.InvalidDatabaseError) as exc:
            raise GeoIPError(f"GeoIP database {path} (config geoip.{key}) cannot be read: {exc}") from exc
        db_type = reader.metadata().database_type
        if kind not in db_type:
            reader.close()
            raise GeoIPError(
                f"GeoIP database {path} is a {db_type!r} database but config geoip.{key} needs a {kind} database"
            )
        return reader

    def close(self) -> None:
        for reader in (self._city, self._asn):
            if reader is not None:
                reader.close()
        self._city = self._asn = None

    def lookup(self, ips: pl.Series) -> pl.DataFrame:
        """One row per address in ``ips`` (text) with GEO_SCHEMA columns; nulls where there is no record."""
        self._open()
        texts = ips.to_list()
        columns: dict[str, list] = {name: [None] * len(texts) for name in GEO_SCHEMA}
        if self._city is not None:
            self._fill_city(self._city, texts, columns)
        if self._asn is not None:
            self._fill_asn(self._asn, texts, columns)
        return pl.DataFrame(columns, schema=GEO_SCHEMA)

    @staticmethod
    def _get(reader: maxminddb.Reader, ip: str) -> dict | None:
        try:
            record = reader.get(ip)
        except ValueError:  # e.g. an IPv6 address asked of an IPv4-only database
            return None
        return record if isinstance(record, dict) else None

    def _fill_city(self, reader: maxminddb.Reader, texts: list[str], columns: dict[str, list]) -> None:
        country, city, lat, lon = columns["country"], columns["city"], columns["lat"], columns["lon"]
        for i, ip in enumerate(texts):
            record = self._get(reader, ip)
            if not record:
                continue
            place = record.get("country") or record.get("registered_country") or {}
            country[i] = place.get("iso_code")
            city[i] = (record.get("city") or {}).get("names", {}).get("en")
            location = record.get("location") or {}
            lat[i], lon[i] = location.get("latitude"), location.get("longitude")

    def _fill_asn(self, reader: maxminddb.Reader, texts: list[str], columns: dict[str, list]) -> None:
        asn, org = columns["asn"], columns["as_org"]
        for i, ip in enumerate(texts):
            record = self._get(reader, ip)
            if record:
                asn[i] = record.get("autonomous_system_number")
                org[i] = record.get("autonomous_system_organization")


def encode(frame: pl.DataFrame) -> pl.Series:
    """GEO_SCHEMA rows as the JSON strings stored under ``geo:<ip>`` (nulls kept as JSON null)."""
    return frame.select(pl.struct(list(GEO_SCHEMA)).struct.json_encode().alias("geo")).to_series()


def decode(values: pl.Series) -> pl.DataFrame:
    """The inverse of :func:`encode`; null values give all-null rows."""
    return pl.DataFrame({"v": values}).select(pl.col("v").str.json_decode(GEO_STRUCT)).unnest("v")
