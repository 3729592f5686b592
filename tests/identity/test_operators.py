"""Bootstrap (default organization, first keys printed once) and `jan-server admin`."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from functions.app import create_app
from functions.common.runtime import Runtime
from functions.common.settings import Settings
from tests.factories import bearer


async def _start(settings: Settings) -> Runtime:
    runtime = Runtime(settings)
    create_app(runtime)
    await runtime.open()
    return runtime


async def test_default_organization_is_created_once(settings: Settings) -> None:
    for _ in range(2):
        runtime = await _start(settings)
        count = await runtime.db.writer.fetchval(
            "SELECT count(*) FROM organizations WHERE is_default"
        )
        await runtime.close()
        assert count == 1


async def test_embedded_first_start_prints_keys_once(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    embedded = settings.model_copy(update={"jan_embedded": True})
    runtime = await _start(embedded)
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("JAN_")]
    assert [line.split("=")[0] for line in lines] == ["JAN_ADMIN_KEY", "JAN_PROJECT_KEY"]
    admin_key = lines[0].split("=", 1)[1]
    project_key = lines[1].split("=", 1)[1]
    assert admin_key.startswith("sk-admin-") and project_key.startswith("sk-proj-")
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.get("/v1/organization/projects", headers=bearer(admin_key))
        assert r.status_code == 200 and len(r.json()["data"]) == 1
    await runtime.close()
    again = await _start(embedded)
    await again.close()
    assert "JAN_" not in capsys.readouterr().out


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_POSTGRESQL", "JAN_"))}
    for name in ("db_postgresql_write_dsn", "jwt_secret", "apikey_secret", "model_provider_secret"):
        value = getattr(settings, name)
        env[name.upper()] = value.get_secret_value()
    return subprocess.run(
        [sys.executable, "-m", "functions", "admin", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


async def test_admin_cli(settings: Settings) -> None:
    runtime = await _start(settings)  # migrated, default organization
    try:
        r = _cli(settings, "create-org", "--name", "Acme", "--owner-email", "Ceo@Acme.test")
        assert r.returncode == 0, r.stderr
        org_line, key_line = r.stdout.strip().splitlines()
        org_id = org_line.removeprefix("organization: ")
        assert org_id.startswith("org_") and key_line.startswith("sk-admin-")
        assert key_line not in r.stderr  # never in the logs
        assert r.stdout.count(key_line[len("sk-admin-") :]) == 1  # once, alone on its line
        r = _cli(settings, "create-admin-key", "--org", org_id)
        assert r.returncode == 0 and r.stdout.strip().startswith("sk-admin-")
        second_key = r.stdout.strip()
        assert r.stdout == second_key + "\n" and second_key not in r.stderr
        r = _cli(settings, "create-admin-key", "--org", "org_missing")
        assert r.returncode == 1 and "no organization" in r.stderr
        listing = _cli(settings, "list-orgs").stdout
        assert org_id in listing and "Acme" in listing and "(default)" in listing
        assert "sk-" not in listing  # never shown again
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            users = await client.get("/v1/organization/users", headers=bearer(second_key))
            assert [u["email"] for u in users.json()["data"]] == ["ceo@acme.test"]
            assert users.json()["data"][0]["role"] == "owner"
    finally:
        await runtime.close()
