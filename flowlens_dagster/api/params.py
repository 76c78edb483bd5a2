"""Query parameters shared by the endpoints: parsing with messages that name the parameter.

Every parser raises :func:`flowlens_dagster.api.errors.bad` (400) on bad input, never a 500.
Cursors are opaque to clients: URL-safe base64 of a JSON list (the last row's sort key).
"""

from __future__ import annotations

import base64
import ipaddress
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from flowlens_dagster.api.errors import bad

PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17, "gre": 47, "esp": 50, "icmpv6": 58, "sctp": 132}
SERVICE = re.compile(
    r"^(?P<addr>\[[0-9A-Fa-f:.]+\]|[0-9.]+|[0-9A-Fa-f:]+?)(?::(?P<port>\d{1,5})(?:/(?P<proto>\w+))?)?$"
)
GROUPS = ("address", "subnet", "asn", "owner", "environment")


def address(name: str, value: str) -> str:
    """A single IPv4/IPv6 address, normalized."""
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        raise bad(name, f"must be an IPv4 or IPv6 address like 10.0.0.5 or 2001:db8::1, got {value!r}") from None


def prefix(name: str, value: str) -> str:
    """A CIDR prefix (host bits allowed: 10.1.2.3/16 means 10.1.0.0/16)."""
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise bad(name, f"must be a CIDR prefix like 10.0.0.0/8 or 2001:db8::/32, got {value!r}") from None


def port(name: str, value: str | int) -> int:
    text = str(value)
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise bad(name, f"must be an integer 0-65535, got {value!r}")
    return int(text)


def protocol(name: str, value: str) -> int:
    """A protocol number 0-255 or a name (tcp, udp, icmp, ...)."""
    text = value.strip().lower()
    if text in PROTOCOLS:
        return PROTOCOLS[text]
    if text.isdigit() and int(text) <= 255:
        return int(text)
    raise bad(name, f"must be a protocol number 0-255 or one of {', '.join(PROTOCOLS)}, got {value!r}")


def timestamp(name: str, value: str) -> datetime:
    """ISO 8601; a time without a zone is UTC."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise bad(name, f"must be an ISO 8601 time like 2026-11-26T12:00:00Z, got {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def service(name: str, value: str) -> tuple[str, int | None, int | None]:
    """``addr``, ``addr:port``, ``addr:port/proto`` (IPv6 in brackets when a port follows)."""
    match = SERVICE.match(value.strip())
    if match is None:
        raise bad(
            name, f"must be an address, address:port or address:port/protocol (e.g. 10.0.0.5:443/tcp), got {value!r}"
        )
    addr = address(name, match["addr"])
    svc_port = port(name, match["port"]) if match["port"] else None
    proto = protocol(name, match["proto"]) if match["proto"] else (6 if svc_port is not None else None)
    return addr, svc_port, proto


def limit(value: int | None, default: int, maximum: int, name: str = "limit") -> int:
    if value is None:
        return default
    if not 1 <= value <= maximum:
        raise bad(name, f"must be between 1 and {maximum}, got {value}")
    return value


def encode_cursor(key: list) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(key, default=str)).decode().rstrip("=")


def decode_cursor(value: str | None, length: int, name: str = "cursor") -> list | None:
    """The sort key a previous page returned as ``next_cursor``."""
    if not value:
        return None
    try:
        key = orjson.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        key = None
    if not isinstance(key, list) or len(key) != length:
        raise bad(name, "is not a cursor this endpoint returned (pass next_cursor of the previous page unchanged)")
    return key


@dataclass
class Filters:
    """The filters every list endpoint takes (each optional)."""

    since: datetime | None = None
    until: datetime | None = None
    prefix: str | None = None
    port: int | None = None
    protocol: int | None = None
    owner: str | None = None
    environment: str | None = None
    tag: str | None = None
    asn: int | None = None
    country: str | None = None
    min_bytes: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def asset_filters(self) -> bool:
        return any(v is not None for v in (self.owner, self.environment, self.tag, self.asn, self.country))

    def key(self) -> str:
        """A canonical text of the filters set (cache keys)."""
        parts = {k: v for k, v in vars(self).items() if v is not None and k != "extra"}
        return "&".join(f"{k}={v.isoformat() if isinstance(v, datetime) else v}" for k, v in sorted(parts.items()))


# the query parameters of filters(), in its argument order
FILTER_NAMES = (
    "since", "until", "prefix", "port", "protocol", "owner", "environment", "tag", "asn", "country", "min_bytes",
)  # fmt: skip


def filters(
    since: str | None = None,
    until: str | None = None,
    prefix_: str | None = None,
    port_: str | None = None,
    protocol_: str | None = None,
    owner: str | None = None,
    environment: str | None = None,
    tag: str | None = None,
    asn: str | None = None,
    country: str | None = None,
    min_bytes: str | None = None,
) -> Filters:
    """Parse the common filters from their query-string texts."""
    parsed = Filters(owner=owner or None, environment=environment or None, tag=tag or None)
    parsed.since = timestamp("since", since) if since else None
    parsed.until = timestamp("until", until) if until else None
    if parsed.since and parsed.until and parsed.since > parsed.until:
        raise bad("until", f"must not be before since ({since}), got {until!r}")
    parsed.prefix = prefix("prefix", prefix_) if prefix_ else None
    parsed.port = port("port", port_) if port_ else None
    parsed.protocol = protocol("protocol", protocol_) if protocol_ else None
    if asn:
        text = asn.upper().removeprefix("AS")
        if not text.isdigit() or int(text) >= 2**32:
            raise bad("asn", f"must be an AS number like 64512 or AS64512, got {asn!r}")
        parsed.asn = int(text)
    if country:
        if not re.fullmatch(r"[A-Za-z]{2}", country):
            raise bad("country", f"must be a two-letter ISO country code like DE, got {country!r}")
        parsed.country = country.upper()
    if min_bytes:
        if not min_bytes.isdigit():
            raise bad("min_bytes", f"must be a non-negative integer, got {min_bytes!r}")
        parsed.min_bytes = int(min_bytes)
    return parsed
