"""Versioned SQL migrations: ``migrations/NNNN_name.sql``, applied in order.

Each file runs in its own transaction and is recorded with its checksum in
``schema_migrations``. A session-level advisory lock serialises instances that start at
the same time, so each migration is applied exactly once. A file changed after it was
applied is refused: landed migrations are never edited, a new one is added instead.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from functions.common.db import AnyConnection

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Any constant unique to this application; derived from its name for readability.
ADVISORY_LOCK_KEY = (
    int.from_bytes(hashlib.sha256(b"jan-server migrations").digest()[:8], "big") >> 1
)

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    """The migrations on disk and in the database disagree."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class Status:
    applied: list[int]
    pending: list[Migration]

    @property
    def current(self) -> bool:
        return not self.pending


def default_directory() -> Path:
    """Inside an installed wheel the files sit in the package; in a checkout, at the top."""
    packaged = Path(__file__).resolve().parent.parent / "migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "migrations"


def load(directory: Path | None = None) -> list[Migration]:
    directory = directory or default_directory()
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: expected NNNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"two migrations numbered {version:04d}")
        found[version] = Migration(version, match.group(2), path.read_text())
    return [found[v] for v in sorted(found)]


async def status(conn: AnyConnection, migrations: list[Migration]) -> Status:
    """Compare disk and database; raise if an applied file has changed."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations") if exists else []
    applied = {r["version"]: r["checksum"] for r in rows}
    for m in migrations:
        if m.version in applied and applied[m.version] != m.checksum:
            raise MigrationError(
                f"migration {m.version:04d}_{m.name} changed after it was applied; "
                "add a new migration instead of editing a landed one"
            )
    pending = [m for m in migrations if m.version not in applied]
    return Status(applied=sorted(applied), pending=pending)


async def apply(conn: AnyConnection, migrations: list[Migration] | None = None) -> list[int]:
    """Apply pending migrations under the advisory lock; return the versions applied."""
    migrations = load() if migrations is None else migrations
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    try:
        await conn.execute(_CREATE_TABLE)
        # Re-read under the lock: another instance may have just applied them.
        pending = (await status(conn, migrations)).pending
        done: list[int] = []
        for m in pending:
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    m.version,
                    m.name,
                    m.checksum,
                )
            log.info("migration applied", extra={"version": m.version, "migration": m.name})
            done.append(m.version)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
