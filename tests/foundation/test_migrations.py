"""Migrations: ordered, recorded, applied once under concurrency, edits refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from functions.common import migrate


def _write(directory: Path, name: str, sql: str) -> None:
    (directory / name).write_text(sql)


async def test_applies_in_order_once_even_when_instances_race(
    database_dsn: str, tmp_path: Path
) -> None:
    _write(tmp_path, "0001_a.sql", "CREATE TABLE t_a (id int);")
    _write(
        tmp_path, "0002_b.sql", "INSERT INTO t_a VALUES (1); SELECT pg_sleep(0.2);"
    )  # slow, so the race is real
    conn0 = await asyncpg.connect(database_dsn)
    await conn0.execute("DROP TABLE schema_migrations")  # start from an empty ledger
    migrations = migrate.load(tmp_path)

    async def instance() -> list[int]:
        conn = await asyncpg.connect(database_dsn)
        try:
            return await migrate.apply(conn, migrations)
        finally:
            await conn.close()

    results = await asyncio.gather(*(instance() for _ in range(5)))
    assert sorted(v for r in results for v in r) == [1, 2]  # each applied exactly once
    assert await conn0.fetchval("SELECT count(*) FROM t_a") == 1
    state = await migrate.status(conn0, migrations)
    assert state.current and state.applied == [1, 2]
    await conn0.close()


async def test_changed_applied_file_is_refused(database_dsn: str, tmp_path: Path) -> None:
    conn = await asyncpg.connect(database_dsn)
    await conn.execute("DROP TABLE schema_migrations")
    _write(tmp_path, "0001_a.sql", "CREATE TABLE t_b (id int);")
    await migrate.apply(conn, migrate.load(tmp_path))
    _write(tmp_path, "0001_a.sql", "CREATE TABLE t_b (id bigint);")
    with pytest.raises(migrate.MigrationError, match="changed after it was applied"):
        await migrate.apply(conn, migrate.load(tmp_path))
    await conn.close()


async def test_failed_migration_rolls_back_and_is_not_recorded(
    database_dsn: str, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(database_dsn)
    await conn.execute("DROP TABLE schema_migrations")
    _write(tmp_path, "0001_ok.sql", "CREATE TABLE t_c (id int);")
    _write(tmp_path, "0002_bad.sql", "CREATE TABLE t_d (id int); SELECT * FROM missing_table;")
    with pytest.raises(asyncpg.UndefinedTableError):
        await migrate.apply(conn, migrate.load(tmp_path))
    assert await conn.fetchval("SELECT to_regclass('t_d')") is None
    assert [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")] == [1]
    await conn.close()


def test_bad_names_and_duplicates_are_refused(tmp_path: Path) -> None:
    _write(tmp_path, "1_x.sql", "")
    with pytest.raises(migrate.MigrationError, match=r"NNNN_name\.sql"):
        migrate.load(tmp_path)
    (tmp_path / "1_x.sql").unlink()
    _write(tmp_path, "0001_x.sql", "")
    _write(tmp_path, "0001_y.sql", "")
    with pytest.raises(migrate.MigrationError, match="two migrations"):
        migrate.load(tmp_path)


async def test_project_migrations_apply_to_an_empty_database(database_dsn: str) -> None:
    conn = await asyncpg.connect(database_dsn)
    state = await migrate.status(conn, migrate.load())
    assert state.current  # the template was built by apply(); nothing left over
    assert state.applied == [m.version for m in migrate.load()]
    await conn.close()
