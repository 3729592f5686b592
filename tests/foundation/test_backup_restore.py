"""The restore procedure of manifests/README.md ("Backups and restore"), as far as this
machine allows: what CloudNativePG's barmanObjectStore does with an object store is done
here with directories — WAL archived continuously by ``archive_command``, a base backup
taken with pg_basebackup while the database is in use — and the recovery is the one its
``bootstrap.recovery`` runs: a new cluster from the base backup, replaying archived WAL up
to a recovery target (a point in time), then promoted. The primary holds Jan Server's
schema (every migration) and rows written before and after the base backup; the restored
cluster has those before the target and none after, and its migrations are current."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from functions.common import migrate
from tests.pg import Cluster, as_postgres, bindir, free_port


@pytest.fixture
def root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="jan-pitr-"))
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")
    try:
        yield path
    finally:
        for datadir in (path / "primary", path / "restored"):
            if (datadir / "postmaster.pid").exists():
                with contextlib.suppress(subprocess.CalledProcessError):
                    Cluster(datadir, 0, bindir()).stop("immediate")
        shutil.rmtree(path, ignore_errors=True)


async def organizations(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return {r["id"] for r in await conn.fetch("SELECT id FROM organizations")}
    finally:
        await conn.close()


async def test_base_backup_and_wal_replay_restore_to_a_point_in_time(root: Path) -> None:
    archive = root / "archive"  # the object store's WAL folder
    as_postgres("mkdir", "-m", "0700", str(archive), str(root / "base"))
    primary = Cluster(root / "primary", free_port(), bindir())
    primary.initdb(
        "wal_level = replica\narchive_mode = on\nfsync = off\n"
        f"archive_command = 'test ! -f {archive}/%f && cp %p {archive}/%f'\n"
    )
    primary.start()
    dsn = primary.dsn.rpartition("/")[0] + "/jan"
    admin = await asyncpg.connect(primary.dsn)
    await admin.execute("CREATE DATABASE jan")
    await admin.close()
    conn = await asyncpg.connect(dsn)
    try:
        await migrate.apply(conn)
        insert = "INSERT INTO organizations (id, name) VALUES ($1, $1)"
        await conn.execute(insert, "org_before_backup")
        # The base backup, taken live; like barman's, without WAL of its own (-X none):
        # pg_basebackup returns once the WAL it needs is in the archive.
        await asyncio.to_thread(
            as_postgres,
            str(primary.bindir / "pg_basebackup"),
            *("-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres"),
            *("-D", str(root / "base" / "data"), "-X", "none", "--checkpoint=fast"),
        )
        await conn.execute(insert, "org_after_backup")  # in the archived WAL only
        target = await conn.fetchval("SELECT now()")  # the point to restore to
        await asyncio.sleep(0.2)
        await conn.execute("DELETE FROM organizations WHERE id = 'org_before_backup'")  # oops
        await conn.execute(insert, "org_too_late")
        # Close the segment, and wait until the archiver has copied it.
        segment = await conn.fetchval("SELECT pg_walfile_name(pg_switch_wal())")
        for _ in range(100):
            if (archive / segment).exists():
                break
            await asyncio.sleep(0.1)
        assert (archive / segment).exists()
    finally:
        await conn.close()
    assert await organizations(dsn) == {"org_after_backup", "org_too_late"}
    primary.stop("immediate")  # the disaster: only the backup and the archive are left

    restored = Cluster(root / "restored", free_port(), bindir())
    as_postgres("cp", "-a", str(root / "base" / "data"), str(restored.datadir))
    with open(restored.datadir / "postgresql.conf", "a") as conf:
        conf.write(
            "archive_mode = off\n"  # a restored cluster writes to a new archive, if any
            f"restore_command = 'cp {archive}/%f %p'\n"
            f"recovery_target_time = '{target.isoformat()}'\n"
            "recovery_target_action = 'promote'\n"
        )
    as_postgres("touch", str(restored.datadir / "recovery.signal"))
    restored.start()
    restored_dsn = restored.dsn.rpartition("/")[0] + "/jan"
    for _ in range(100):  # replay, then promotion
        conn = await asyncpg.connect(restored.dsn)
        try:
            if not await conn.fetchval("SELECT pg_is_in_recovery()"):
                break
        finally:
            await conn.close()
        await asyncio.sleep(0.1)
    # Before the target: kept (the one written after the base backup came from the WAL).
    # After it: the mistake undone, the late row absent.
    assert await organizations(restored_dsn) == {"org_before_backup", "org_after_backup"}
    conn = await asyncpg.connect(restored_dsn)
    try:
        status = await migrate.status(conn, migrate.load())
        assert status.current and status.applied == [m.version for m in migrate.load()]
        await conn.execute("INSERT INTO organizations (id, name) VALUES ('org_new', 'x')")
    finally:
        await conn.close()
    restored.stop()
