"""GeoIP and ASN lookups against real .mmdb files written by mmdb-writer."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from assets.enrich.geoip import GeoIP, GeoIPError, decode, encode


def test_city_and_asn_for_ipv4_and_ipv6(mmdb_paths: tuple[Path, Path]) -> None:
    geo = GeoIP(*mmdb_paths)
    rows = geo.lookup(pl.Series(["8.8.8.8", "2a00:1450:4001::1"])).to_dicts()
    assert rows[0] == {
        "country": "US",
        "city": "Mountain View",
        "lat": pytest.approx(37.386),
        "lon": pytest.approx(-122.0838),
        "asn": 15169,
        "as_org": "GOOGLE",
    }
    assert rows[1]["country"] == "IE" and rows[1]["city"] == "Dublin" and rows[1]["asn"] == 15169


def test_missing_records_give_nulls(mmdb_paths: tuple[Path, Path]) -> None:
    rows = GeoIP(*mmdb_paths).lookup(pl.Series(["1.1.1.1", "9.9.9.9"])).to_dicts()
    assert rows[0] == {"country": "AU", "city": None, "lat": None, "lon": None, "asn": None, "as_org": None}
    assert all(value is None for value in rows[1].values())


def test_missing_file_is_a_startup_error_naming_the_path(tmp_path: Path, mmdb_paths: tuple[Path, Path]) -> None:
    missing = tmp_path / "GeoLite2-City.mmdb"
    with pytest.raises(GeoIPError, match=str(missing)) as info:
        GeoIP(missing, mmdb_paths[1])
    assert "geoip.city_db" in str(info.value)


def test_wrong_database_type_is_rejected(mmdb_paths: tuple[Path, Path]) -> None:
    _city, asn = mmdb_paths
    with pytest.raises(GeoIPError, match="needs a City database"):
        GeoIP(asn, None).lookup(pl.Series(["8.8.8.8"]))


def test_cache_encoding_round_trips(mmdb_paths: tuple[Path, Path]) -> None:
    frame = GeoIP(*mmdb_paths).lookup(pl.Series(["8.8.8.8", "9.9.9.9", "1.1.1.1"]))
    encoded = encode(frame)
    assert encoded[0].startswith('{"country":"US","city":"Mountain View"')
    assert decode(encoded).equals(frame)
