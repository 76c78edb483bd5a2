"""Throwaway service instances for tests that stop a service (never the shared stack's)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivatePostgres:
    """A PostgreSQL cluster in a temporary directory on a free port, started and stopped at will."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="flowlens-ingest-pg-"))
        self.data = self.root / "data"
        self.port = free_tcp_port()
        self.user = "postgres" if os.geteuid() == 0 else None  # initdb refuses to run as root
        if self.user:
            shutil.chown(self.root, self.user)
        self._run([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-locale"])

    def _run(self, argv: list[str]) -> None:
        result = subprocess.run(argv, user=self.user, capture_output=True, text=True, check=False, cwd=self.root)
        if result.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {result.stderr[-1500:]}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "log"),
                   "-w", "start"])  # fmt: skip

    def stop(self) -> None:
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def create_database(self, user: str, password: str, database: str) -> None:
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as c:
            c.execute(f"CREATE ROLE {user} LOGIN SUPERUSER PASSWORD '{password}'")
            c.execute(f"CREATE DATABASE {database} OWNER {user}")

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"], user=self.user,
                           capture_output=True, check=False)  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)
