"""Reverse DNS against a real PTR server on loopback: answers, NXDOMAIN, IPv6, timeouts, budget."""

from __future__ import annotations

import struct

import pytest

from assets.enrich.dns import (
    DNSFormatError,
    ReverseResolver,
    build_ptr_response,
    build_query,
    parse_ptr_response,
    reverse_name,
)
from tests.fakes.ptr_server import PTRServer


def _resolver(server: PTRServer, **options) -> ReverseResolver:
    settings = {"timeout_seconds": 0.5, "concurrency": 8, "lookups_per_second": 10_000, "max_seconds_per_window": 10}
    settings.update(options)
    return ReverseResolver(["127.0.0.1"], port=server.port, **settings)


def _by_ip(frame) -> dict[str, tuple[str, str | None]]:
    return {row["ip"]: (row["status"], row["hostname"]) for row in frame.to_dicts()}


def test_answers_nxdomain_and_ipv6(ptr_server: PTRServer) -> None:
    frame, stats = _resolver(ptr_server).resolve(["8.8.8.8", "10.0.2.53", "9.9.9.9", "2a00:1450:4001::1"])
    assert _by_ip(frame) == {
        "8.8.8.8": ("ok", "dns.google"),
        "10.0.2.53": ("ok", "ns1.corp.example"),
        "9.9.9.9": ("negative", None),
        "2a00:1450:4001::1": ("ok", "fra16s.1e100.net"),
    }
    assert (stats.lookups, stats.answered, stats.negative, stats.timeouts) == (4, 3, 1, 0)
    assert ptr_server.queries["total"] < 2 * 4  # lookups already started are released, not awaited


def test_dead_resolver_costs_one_timeout_and_defers_the_rest(ptr_server: PTRServer) -> None:
    ptr_server.mode = "ignore"
    ips = [f"10.0.{i // 250}.{i % 250}" for i in range(200)]
    frame, stats = _resolver(ptr_server, timeout_seconds=0.3, concurrency=4).resolve(ips)
    assert stats.resolver_down
    assert stats.timeouts == 4  # the first wave only
    assert stats.deferred == 196
    assert frame.height == 4 and frame["hostname"].null_count() == 4  # deferred addresses are absent
    assert ptr_server.queries["total"] < 2 * 4  # lookups already started are released, not awaited


def test_slow_answers_time_out_and_are_counted(ptr_server: PTRServer) -> None:
    ptr_server.mode, ptr_server.delay_seconds = "delay", 1.0
    frame, stats = _resolver(ptr_server, timeout_seconds=0.2).resolve(["8.8.8.8", "10.0.0.5"])
    assert stats.timeouts == 2 and stats.answered == 0
    assert frame["status"].cast(str).to_list() == ["timeout", "timeout"]


def test_servfail_is_a_failure_not_a_negative_answer(ptr_server: PTRServer) -> None:
    ptr_server.mode = "servfail"
    frame, stats = _resolver(ptr_server).resolve(["8.8.8.8"])
    assert _by_ip(frame) == {"8.8.8.8": ("failure", None)}
    assert stats.failures == 1 and stats.negative == 0


def test_budget_and_window_deadline_defer_lookups(ptr_server: PTRServer) -> None:
    ips = [f"10.1.{i // 250}.{i % 250}" for i in range(100)]
    frame, stats = _resolver(ptr_server, lookups_per_second=20, max_seconds_per_window=0.5).resolve(ips)
    # one second of burst (20) plus 20/s for half a second, at most
    assert 0 < stats.lookups <= 31
    assert stats.deferred == 100 - stats.lookups
    assert frame.height == stats.lookups
    assert ptr_server.queries["total"] == stats.lookups


def test_no_nameserver_defers_everything() -> None:
    resolver = ReverseResolver(["127.0.0.1"])
    resolver.nameservers = []
    _frame, stats = resolver.resolve(["8.8.8.8"])
    assert stats.deferred == 1 and stats.resolver_down


def test_wire_format_compression_and_validation() -> None:
    query = build_query(0x1234, reverse_name("10.0.0.5"))
    assert reverse_name("10.0.0.5") == "5.0.0.10.in-addr.arpa"
    question = query[12:]
    reply = build_ptr_response(query, "web-1.corp.example")
    assert parse_ptr_response(reply, question) == ("ok", "web-1.corp.example")
    # an answer whose name reuses the question's suffix through a second compression pointer
    target = b"\x03web" + struct.pack(">H", 0xC000 | 12)
    crafted = struct.pack(">HHHHHH", 0x1234, 0x8180, 1, 1, 0, 0) + question
    crafted += struct.pack(">HHHIH", 0xC00C, 12, 1, 60, len(target)) + target
    assert parse_ptr_response(crafted, question) == ("ok", "web.5.0.0.10.in-addr.arpa")
    with pytest.raises(DNSFormatError):
        parse_ptr_response(reply, build_query(1, reverse_name("10.0.0.6"))[12:])
    loop = struct.pack(">HHHHHH", 1, 0x8180, 1, 1, 0, 0) + question + struct.pack(">H", 0xC000 | (12 + len(question)))
    loop += struct.pack(">HHIH", 12, 1, 60, 2) + struct.pack(">H", 0xC000 | (12 + len(question)))
    with pytest.raises(DNSFormatError):
        parse_ptr_response(loop, question)


def test_control_bytes_in_names_are_escaped() -> None:
    query = build_query(7, reverse_name("10.0.0.5"))
    reply = build_ptr_response(query, "placeholder")
    evil = reply.replace(b"\x0bplaceholder", b"\x0bplace\nholde")
    status, hostname = parse_ptr_response(evil, query[12:])
    assert status == "ok" and "\n" not in hostname and hostname == "place\\010holde"


def test_unusable_nameserver_defers_instead_of_failing() -> None:
    frame, stats = ReverseResolver(["not-an-address.invalid"], port=53).resolve(["8.8.8.8", "10.0.0.5"])
    assert frame.height == 0 and stats.deferred == 2 and stats.resolver_down
