"""The `jan-server` command as an operator uses it: real processes, real databases."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.pg import free_port

JAN = [sys.executable, "-m", "functions"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_POSTGRESQL", "JAN_"))}
    env.update(extra)
    return env


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*JAN, *args], capture_output=True, text=True, env=_env(**env), timeout=120, check=False
    )


def test_help_on_every_command() -> None:
    for args in ([], ["serve"], ["migrate"], ["version"], ["admin"], ["export"]):
        r = run(*args, "--help")
        assert r.returncode == 0 and "usage: jan-server" in r.stdout, args


def test_bad_flags_and_configuration_exit_with_one_line() -> None:
    bad_flag = run("serve", "--nope")
    assert bad_flag.returncode == 2
    assert bad_flag.stderr.count("\n") == 1 and "--nope" in bad_flag.stderr
    bad_area = run("serve", "kitchen")
    assert bad_area.returncode == 2 and bad_area.stderr.count("\n") == 1
    bad_config = run("migrate", "status", JAN_FUNCTION="kitchen")
    assert bad_config.returncode == 2
    assert bad_config.stderr.strip().startswith("jan-server: configuration error: JAN_FUNCTION")
    no_secrets = run("admin", "list-orgs", DB_POSTGRESQL_WRITE_DSN="postgresql://x/y")
    assert no_secrets.returncode == 2 and "JWT_SECRET" in no_secrets.stderr


def test_version() -> None:
    r = run("version", JAN_COMMIT="abc123")
    assert r.returncode == 0 and "abc123" in r.stdout and "Python 3.11" in r.stdout


def test_embedded_postgres_and_generated_secrets(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = run("migrate", "apply", JAN_DATA_DIR=str(data))
    assert first.returncode == 0, first.stderr
    assert "pending: 0" in first.stdout
    secrets = data / "secrets.json"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    before = secrets.read_text()
    again = run("migrate", "status", JAN_DATA_DIR=str(data))
    assert again.returncode == 0 and "applied 0" not in again.stdout
    assert secrets.read_text() == before  # generated once, then kept
    assert (data / "postgres" / "PG_VERSION").exists()


def test_migrate_against_an_external_database_needs_no_secrets(database_dsn: str) -> None:
    """The migration Job has the database's DSN only (manifests/base/migrate-job.yaml)."""
    r = run("migrate", "status", DB_POSTGRESQL_WRITE_DSN=database_dsn)
    assert r.returncode == 0 and "pending: 0" in r.stdout, r.stderr
    r = run("migrate", "apply", DB_POSTGRESQL_WRITE_DSN=database_dsn)
    assert r.returncode == 0 and "applied 0 migration(s)" in r.stdout, r.stderr


def test_knative_refuses_an_embedded_database(tmp_path: Path) -> None:
    """`func deploy` of func.yaml gives the pod no DSN: under Knative (K_SERVICE) that is a
    configuration error, not an embedded PostgreSQL lost at the first scale to zero."""
    r = run("serve", JAN_DATA_DIR=str(tmp_path / "data"), K_SERVICE="jan-server")
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and "DB_POSTGRESQL_WRITE_DSN must be set" in r.stderr
    assert not (tmp_path / "data" / "postgres").exists()


@pytest.mark.parametrize("server", ["hypercorn", "uvicorn"])
def test_serve_then_stop_on_sigterm(database_dsn: str, server: str) -> None:
    """hypercorn through func-python is how Knative serves us; uvicorn is the alternative."""
    port = free_port()
    env = _env(
        DB_POSTGRESQL_WRITE_DSN=database_dsn,
        JWT_SECRET="jwt-secret-value-1",
        APIKEY_SECRET="apikey-secret-value-2",
        MODEL_PROVIDER_SECRET="provider-value-3",
        PORT=str(port),
        JAN_FUNCTION="all",
        JAN_SHUTDOWN_DRAIN_SECONDS="0",  # SIGTERM below: exit without the 30 s drain
    )
    proc = subprocess.Popen(
        [*JAN, "serve", "--server", server],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # func-python answers /health/readiness itself; under uvicorn our own /readyz does.
    readiness = "/health/readiness" if server == "hypercorn" else "/readyz"
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}{readiness}", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "server never became ready"
            time.sleep(0.2)
        assert httpx.get(f"{base}/readyz").json()["status"] == "ok"
        r = httpx.get(f"{base}/v1/version", headers={"X-Request-ID": "cli-test-1"})
        assert r.headers["x-request-id"] == "cli-test-1"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"serving all on 0.0.0.0:{port}" in out
    assert f"web console at http://127.0.0.1:{port}/console/" in out
    assert "Unclosed" not in err  # pools and client sessions closed on the way out
    log_lines = [line for line in err.splitlines() if '"request_id":"cli-test-1"' in line]
    assert log_lines, "access log line with the request ID"
    for secret in ("jwt-secret-value-1", "apikey-secret-value-2", "provider-value-3"):
        assert secret not in err and secret not in out  # settings are logged masked


def test_knative_port_decides_where_the_function_listens() -> None:
    """func-python binds LISTEN_ADDRESS alone (func's buildpack sets it to [::]:8080);
    Knative sends traffic to PORT, the container's port."""
    from functions.entry import listen_on_knative_port

    env = {"K_SERVICE": "jan-chat", "PORT": "8123", "LISTEN_ADDRESS": "0.0.0.0:8080"}
    listen_on_knative_port(env)
    assert env["LISTEN_ADDRESS"] == "0.0.0.0:8123"
    env = {"K_SERVICE": "jan-chat", "PORT": "8123"}
    listen_on_knative_port(env)
    assert env["LISTEN_ADDRESS"] == "[::]:8123,0.0.0.0:8123"
    local = {"PORT": "8123", "LISTEN_ADDRESS": "127.0.0.1:9000"}  # not on Knative: as given
    listen_on_knative_port(local)
    assert local["LISTEN_ADDRESS"] == "127.0.0.1:9000"
