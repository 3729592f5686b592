"""Helpers to run throw-away PostgreSQL clusters for tests (a primary and a streaming replica).

PostgreSQL refuses to run as root, so clusters are created and started as the `postgres`
system user (through runuser) in a temporary directory, on free ports.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bindir() -> Path:
    out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
    if out.returncode == 0 and (Path(out.stdout.strip()) / "initdb").exists():
        return Path(out.stdout.strip())
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise RuntimeError("no PostgreSQL server binaries (initdb) found")
    return found[-1].parent


def as_postgres(*cmd: str) -> None:
    """Run a PostgreSQL program as the `postgres` user (it refuses root)."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*prefix, *cmd], check=True, capture_output=True, timeout=120)


@dataclass
class Cluster:
    datadir: Path
    port: int
    bindir: Path

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        as_postgres(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-w",
            "-l",
            str(self.datadir / "server.log"),
            "-o",
            f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        as_postgres(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-w", "-m", mode, "stop")

    def initdb(self, conf: str) -> None:
        """A new cluster in ``datadir``, trusting local connections, with ``conf`` added."""
        as_postgres(
            str(self.bindir / "initdb"),
            "-D",
            str(self.datadir),
            "-U",
            "postgres",
            "--auth=trust",
            "-N",
        )
        with open(self.datadir / "postgresql.conf", "a") as f:
            f.write(conf)


@contextlib.contextmanager
def standalone(conf: str = "fsync = off\n") -> Iterator[Cluster]:
    """A started cluster of its own (a test may stop and start it), removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="jan-pg-"))
    shutil.chown(root, "postgres", "postgres") if os.geteuid() == 0 else None
    cluster = Cluster(root / "data", free_port(), bindir())
    try:
        cluster.initdb(conf)
        cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


class ReplicaSet:
    """A primary and one streaming replica made with pg_basebackup."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="jan-pg-"))
        shutil.chown(self.root, "postgres", "postgres") if os.geteuid() == 0 else None
        found_bindir = bindir()
        self.primary = Cluster(self.root / "primary", free_port(), found_bindir)
        self.replica = Cluster(self.root / "replica", free_port(), found_bindir)

    def start(self) -> None:
        p = self.primary
        p.initdb("wal_level = replica\nmax_wal_senders = 5\nfsync = off\n")
        p.start()
        as_postgres(
            str(p.bindir / "pg_basebackup"),
            "-h",
            "127.0.0.1",
            "-p",
            str(p.port),
            "-U",
            "postgres",
            "-D",
            str(self.replica.datadir),
            "-R",
            "-X",
            "stream",
        )
        self.replica.start()

    def close(self) -> None:
        for cluster in (self.replica, self.primary):
            with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
                cluster.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
