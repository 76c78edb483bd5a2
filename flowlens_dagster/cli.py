"""``flowlens``: the one command-line entry point.

Each subcommand lives in the module that owns the work and is imported only when used, so
``flowlens ingest`` never loads Dagster and ``flowlens decode`` starts fast. A subcommand module
exposes ``main(argv: list[str]) -> int`` with its own argparse parser (``--help`` works on each).
"""

from __future__ import annotations

import importlib
import os
import sys

from ingest.services import ServiceUnavailable

# name -> (module:function, one-line help). Keep sorted by data path.
COMMANDS: dict[str, tuple[str, str]] = {
    "stack": (
        "flowlens_dagster.stack.cli:main",
        "start, check or stop the local stack (PostgreSQL, Redis, Kafka, Prometheus)",
    ),
    "migrate": ("flowlens_dagster.migrate:main", "apply the numbered SQL migrations in sql/"),
    "decode": ("ingest.decode.cli:main", "decode pcap/pcapng captures or raw payload files to JSON lines"),
    "ingest": ("ingest.daemon:main", "run the UDP ingest daemon (receive, decode, land)"),
    "generate": ("ingest.tools.generate:main", "synthetic NetFlow/IPFIX exporter at a target rate"),
    "replay": ("ingest.tools.replay:main", "send captures or payload files to a collector"),
    "inventory": ("assets.enrich.inventory:main", "load the asset inventory file into PostgreSQL"),
    "run": ("flowlens_dagster.run:main", "the main job: stack, migrations, ingest, generator, Dagster"),
    "dagster": ("flowlens_dagster.instance:main", "run Dagster (dev UI + daemon) on this project's instance"),
    "metrics": ("flowlens_dagster.monitoring.exporter:main", "serve the pipeline's Prometheus metrics (/metrics)"),
    "api": ("flowlens_dagster.api.cli:api_main", "serve the query API (topology, search, impact, changes) over HTTP"),
    "users": ("flowlens_dagster.api.cli:users_main", "add, list or remove API users; create API tokens"),
    "sql": ("flowlens_dagster.sql_shell:main", "run SQL against FlowLens PostgreSQL or the Parquet lake"),
    "plan": ("ingest.scaling.plan:main", "capacity plan for a flow rate, a burst and an API load (scaling model)"),
    "bench": (
        "flowlens_dagster.bench:main",
        "benchmarks: decode, ingest, enrich, pipeline, burst, monitoring, api, console, cluster",
    ),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: flowlens COMMAND [ARGS...]   (flowlens COMMAND --help for details)", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    try:
        return _dispatch(list(sys.argv[1:] if argv is None else argv))
    except ServiceUnavailable as exc:  # raised by ingest.services.require: already one line for the user
        print(exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `flowlens decode ... | head`: the reader left; stop quietly like other Unix tools.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"flowlens: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name = COMMANDS[name][0].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
