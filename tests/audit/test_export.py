"""`jan-server export audit|usage`: JSON lines on stdout for a SIEM or a warehouse, as an
operator runs it (a real process on a real database): the time window and organization
filters, the API's shape for audit events, every ledger column for usage, and a stream in
constant memory (a server-side cursor) however large the export."""

from __future__ import annotations

import os
import subprocess
import time
from datetime import datetime

import httpx
import orjson

from functions.common.runtime import Runtime
from tests.audit.support import events
from tests.factories import create_tenant
from tests.foundation.test_cli import JAN, _env, run

SECRETS = {"JWT_SECRET": "a", "APIKEY_SECRET": "b", "MODEL_PROVIDER_SECRET": "c"}


def export(dsn: str, *args: str) -> list[dict[str, object]]:
    r = run("export", *args, DB_POSTGRESQL_WRITE_DSN=dsn, **SECRETS)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert f"exported {len(lines)} " in r.stderr
    return [orjson.loads(line) for line in lines]


async def insert_usage(runtime: Runtime, organization_id: str, count: int, at: str) -> None:
    await runtime.db.writer.execute(
        """
        INSERT INTO usage_completions (created_at, organization_id, project_id, model,
            operation, streamed, input_tokens, output_tokens, latency_ms, status)
        SELECT $2::timestamptz + make_interval(secs => i), $1, 'proj_x', 'm1',
               'chat.completions', false, i % 100, 7, 5, 200
        FROM generate_series(1, $3) i
        """,
        organization_id,
        datetime.fromisoformat(at),
        count,
    )


async def test_audit_export_matches_the_api(
    client: httpx.AsyncClient, runtime: Runtime, database_dsn: str
) -> None:
    mine, other = await create_tenant(runtime), await create_tenant(runtime)
    for tenant in (mine, other):
        for name in ("a", "b"):
            await client.post(
                "/v1/organization/projects", json={"name": name}, headers=tenant.admin_headers
            )
    listed = await events(client, mine.admin_headers)
    since = str(int(time.time()) - 60)
    exported = export(
        database_dsn, "audit", "--since", since, "--organization", mine.organization_id
    )
    assert exported == [{"organization_id": mine.organization_id, **e} for e in reversed(listed)]
    everyone = export(database_dsn, "audit", "--since", since)
    assert len(everyone) == 4
    assert {e["organization_id"] for e in everyone} == {mine.organization_id, other.organization_id}
    assert export(database_dsn, "audit", "--since", since, "--until", since) == []
    assert export(database_dsn, "audit", "--since", "2999-01-01") == []


async def test_usage_export_window_and_columns(
    client: httpx.AsyncClient, runtime: Runtime, database_dsn: str
) -> None:
    tenant = await create_tenant(runtime)
    await insert_usage(runtime, tenant.organization_id, 1500, "2025-03-01T00:00:00+00:00")
    await insert_usage(runtime, "org_elsewhere", 10, "2025-03-01T00:00:00+00:00")
    rows = export(
        database_dsn,
        "usage",
        "--since",
        "2025-03-01T00:00:00Z",
        "--until",
        "2025-03-01T00:20:00",  # naive: UTC
        "--organization",
        tenant.organization_id,
    )
    assert len(rows) == 1199  # seconds 1..1199: the window's end is excluded
    assert rows[0]["created_at"] == "2025-03-01T00:00:01Z"
    assert [r["created_at"] for r in rows] == sorted(str(r["created_at"]) for r in rows)
    assert rows[0]["organization_id"] == tenant.organization_id
    assert {"input_tokens", "output_tokens", "model", "status", "cost_picodollars"} <= set(rows[0])
    assert len(export(database_dsn, "usage", "--since", "1740787200")) == 1510


def test_a_bad_instant_is_one_line(database_dsn: str) -> None:
    r = run("export", "usage", "--since", "last tuesday", DB_POSTGRESQL_WRITE_DSN=database_dsn)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "ISO 8601" in r.stderr
    r = run("export", "everything", "--since", "0", DB_POSTGRESQL_WRITE_DSN=database_dsn)
    assert r.returncode == 2


def peak_rss_kib(dsn: str, *args: str) -> tuple[int, int]:
    """(lines written, the export's peak resident memory in KiB), reading its output as
    it comes."""
    env = _env(DB_POSTGRESQL_WRITE_DSN=dsn, **SECRETS)
    proc = subprocess.Popen([*JAN, "export", *args], env=env, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    with proc.stdout:
        lines = sum(1 for _ in proc.stdout)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0
    return lines, usage.ru_maxrss


async def test_a_large_export_streams_in_constant_memory(
    client: httpx.AsyncClient, runtime: Runtime, database_dsn: str
) -> None:
    tenant = await create_tenant(runtime)
    await insert_usage(runtime, tenant.organization_id, 300_000, "2025-01-01T00:00:00+00:00")
    ten_seconds = ("--since", "2025-01-01", "--until", "2025-01-01T00:00:10Z")
    small, small_rss = peak_rss_kib(database_dsn, "usage", *ten_seconds)
    large, large_rss = peak_rss_kib(database_dsn, "usage", "--since", "2025-01-01")
    assert (small, large) == (9, 300_000)
    # 300 000 rows are about 120 MB of JSON (and more as Python objects): held at once,
    # they would show; streamed, the process grows by its cursor's batch at most.
    print(f"export peak RSS: {small_rss} KiB for 9 rows, {large_rss} KiB for 300000")
    assert large_rss - small_rss < 40 * 1024, (small_rss, large_rss)
