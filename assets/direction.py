"""Which side of a flow is the client and which the server.

Rules, first match wins (``direction_rule`` records which one decided):

1. ``inventory``: the inventory says one side offers this service (``Inventory.server_side``:
   +1 the destination is a known server, -1 the source is).
2. ``syn``: a TCP flow whose cumulative flags carry SYN without ACK holds only the opening
   packets of a connection, so its source initiated it and is the client. (A full TCP flow has
   both SYN and ACK in both directions, so SYN alone cannot tell more.)
3. ``port``: the well-known side (port < 1024) is the server; when both or neither are
   well-known, the lower port is. Equal ports keep the destination as server.

Protocols without ports (anything but TCP, UDP, SCTP) keep source as client and use port 0.
"""

from __future__ import annotations

import polars as pl

PORT_PROTOCOLS = (6, 17, 132)
TCP, SYN, ACK = 6, 0x02, 0x10
WELL_KNOWN_BELOW = 1024
ORIENTED_COLUMNS = ("client_addr", "server_addr", "client_port", "server_port", "server_is_dst", "direction_rule")


def orient(flows: pl.LazyFrame | pl.DataFrame, server_side: str | None = None) -> pl.LazyFrame | pl.DataFrame:
    """Add client/server columns; ``server_side`` names an Int8 column from the inventory (+1/-1/0), if any."""
    has_ports = pl.col("protocol").is_in(PORT_PROTOCOLS)
    syn_only = (pl.col("protocol") == TCP) & ((pl.col("tcp_flags") & SYN) != 0) & ((pl.col("tcp_flags") & ACK) == 0)
    src, dst = pl.col("src_port").cast(pl.Int32), pl.col("dst_port").cast(pl.Int32)
    src_wk, dst_wk = src < WELL_KNOWN_BELOW, dst < WELL_KNOWN_BELOW
    by_port = pl.when(dst_wk & ~src_wk).then(True).when(src_wk & ~dst_wk).then(False).otherwise(dst <= src)

    inventory = pl.col(server_side) if server_side else pl.lit(0, dtype=pl.Int8)
    is_dst = (
        pl.when(inventory > 0)
        .then(True)
        .when(inventory < 0)
        .then(False)
        .when(~has_ports | syn_only)
        .then(True)
        .otherwise(by_port)
    )
    rule = (
        pl.when(inventory != 0)
        .then(pl.lit("inventory"))
        .when(~has_ports)
        .then(pl.lit("protocol"))
        .when(syn_only)
        .then(pl.lit("syn"))
        .otherwise(pl.lit("port"))
    )
    out = flows.with_columns(server_is_dst=is_dst, direction_rule=rule.cast(pl.Categorical))
    d = pl.col("server_is_dst")
    return out.with_columns(
        client_addr=pl.when(d).then(pl.col("src_addr")).otherwise(pl.col("dst_addr")),
        server_addr=pl.when(d).then(pl.col("dst_addr")).otherwise(pl.col("src_addr")),
        client_port=pl.when(~has_ports).then(0).when(d).then(src).otherwise(dst).cast(pl.Int32),
        server_port=pl.when(~has_ports).then(0).when(d).then(dst).otherwise(src).cast(pl.Int32),
    )
