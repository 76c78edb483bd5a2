"""Client/server direction rules on hand-made flows (pure: no services)."""

import polars as pl

from assets.direction import orient


def flows(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={"src_addr": pl.Binary, "dst_addr": pl.Binary, "src_port": pl.UInt16, "dst_port": pl.UInt16,
                "protocol": pl.UInt8, "tcp_flags": pl.UInt16},
        orient="row",
    )  # fmt: skip


def test_port_rule_well_known_then_lower():
    out = orient(
        flows([
            (b"c", b"s", 51000, 443, 6, 0x1B),  # request: dst well-known
            (b"s", b"c", 443, 51000, 6, 0x1B),  # reply: src well-known
            (b"a", b"b", 40000, 8080, 6, 0x1B),  # neither well-known: lower port serves
            (b"a", b"b", 53, 123, 17, 0),  # both well-known: lower port serves
        ])
    )  # fmt: skip
    assert out.select("client_addr", "server_addr", "server_port", "direction_rule").rows() == [
        (b"c", b"s", 443, "port"),
        (b"c", b"s", 443, "port"),
        (b"a", b"b", 8080, "port"),
        (b"b", b"a", 53, "port"),
    ]


def test_syn_without_ack_marks_the_initiator_as_client_before_ports():
    out = orient(flows([(b"a", b"b", 80, 40000, 6, 0x02)]))  # SYN scan from port 80: ports would say a serves
    assert out.select("client_addr", "server_port", "direction_rule").row(0) == (b"a", 40000, "syn")


def test_inventory_wins_over_flags_and_ports():
    frame = flows([(b"a", b"b", 40000, 80, 6, 0x02), (b"a", b"b", 40000, 80, 6, 0x1B)]).with_columns(
        hint=pl.Series([-1, 0], dtype=pl.Int8)
    )
    out = orient(frame, "hint")
    assert out.select("server_addr", "server_port", "direction_rule").rows() == [
        (b"a", 40000, "inventory"),
        (b"b", 80, "port"),
    ]


def test_protocols_without_ports_use_port_zero():
    out = orient(flows([(b"a", b"b", 0, 2048, 1, 0)]))  # ICMP echo (type 8 in the port field)
    assert out.select("client_addr", "server_addr", "server_port", "direction_rule").row(0) == (
        b"a", b"b", 0, "protocol",
    )  # fmt: skip
