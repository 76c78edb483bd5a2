"""Addresses: 16-byte binary <-> UInt128 keys <-> text, scopes, and distinct positions (pure, no services)."""

from __future__ import annotations

import ipaddress

import polars as pl
import pytest

from assets.enrich.addresses import (
    address_key,
    distinct_index,
    key_to_text,
    keys_of,
    network_range,
    scope_of,
    to_binary,
    to_text,
)

SAMPLES = {
    "8.8.8.8": "public",
    "10.1.2.3": "private",
    "172.31.255.255": "private",
    "172.32.0.1": "public",
    "192.168.0.1": "private",
    "100.64.1.1": "shared",
    "127.0.0.1": "loopback",
    "169.254.10.10": "link-local",
    "224.0.0.251": "multicast",
    "255.255.255.255": "broadcast",
    "240.1.1.1": "reserved",
    "0.0.0.0": "unspecified",
    "192.0.2.10": "documentation",
    "2a00:1450:4001::1": "public",
    "fd12:3456::1": "private",
    "fe80::1": "link-local",
    "ff02::fb": "multicast",
    "::1": "loopback",
    "::": "unspecified",
    "2001:db8::5": "documentation",
    "4000::1": "reserved",
}


def _keys(texts: list[str]) -> pl.Series:
    return pl.DataFrame({"a": to_binary(texts)}).select(keys_of("a")).to_series()


def test_text_round_trip_ipv4_and_ipv6() -> None:
    texts = list(SAMPLES)
    assert to_text(_keys(texts)).to_list() == [str(ipaddress.ip_address(t)) for t in texts]
    assert [key_to_text(address_key(t)) for t in texts] == texts


def test_ipv4_is_stored_mapped() -> None:
    assert to_binary(["10.0.0.1"])[0] == ipaddress.IPv6Address("::ffff:10.0.0.1").packed
    assert address_key("10.0.0.1") == int(ipaddress.IPv6Address("::ffff:10.0.0.1"))


def test_scopes() -> None:
    frame = pl.DataFrame({"k": _keys(list(SAMPLES))}).select(scope_of(pl.col("k")).cast(pl.String))
    assert dict(zip(SAMPLES, frame.to_series().to_list(), strict=True)) == SAMPLES


def test_wrong_length_addresses_become_null_keys() -> None:
    frame = pl.DataFrame({"a": [b"\x0a\x00\x00\x01", to_binary(["10.0.0.1"])[0]]})
    keys = frame.select(keys_of("a")).to_series()
    assert keys.to_list() == [None, address_key("10.0.0.1")]
    assert to_text(keys).to_list() == [None, "10.0.0.1"]


def test_distinct_index_positions_point_back_to_each_rows_key() -> None:
    src = _keys(["10.0.0.1", "8.8.8.8", "10.0.0.1", "2a00:1450:4001::1"])
    dst = _keys(["8.8.8.8", "8.8.8.8", "9.9.9.9", "10.0.0.1"])
    distinct, (src_pos, dst_pos) = distinct_index(src, dst)
    assert len(distinct) == 4
    assert distinct.gather(src_pos).to_list() == src.to_list()
    assert distinct.gather(dst_pos).to_list() == dst.to_list()


def test_network_range_maps_ipv4_networks() -> None:
    first, last = network_range("10.0.0.0/8")
    assert (key_to_text(first), key_to_text(last)) == ("10.0.0.0", "10.255.255.255")
    with pytest.raises(ValueError):
        address_key("not-an-ip")
