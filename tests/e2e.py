"""Real processes shared by the end-to-end tests of several areas: the CPU predictor
(SmolLM2-135M over llama.cpp) starts once per session, whichever suites use it; each suite
starts its own gateway (``gateway_process``) over its own database.

``predictor_url`` is made available to every test directory by ``tests/conftest.py``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from functions.common.settings import Settings
from tests.pg import free_port

__all__ = ["ROOT", "free_port", "gateway_process", "predictor_url", "stop", "wait_ready"]

ROOT = Path(__file__).resolve().parents[1]
PREDICTOR_PYTHON = ROOT / "kserve" / ".venv" / "bin" / "python"


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"{url}: process exited ({proc.returncode}); log:\n{log.read_text()[-3000:]}"
            )
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} not ready after {seconds}s; log:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def predictor_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not PREDICTOR_PYTHON.exists():
        pytest.fail(
            f"{PREDICTOR_PYTHON} is missing: build the predictor's environment with "
            "`make -C kserve env` (or `make env`) before running the end-to-end tests."
        )
    port = free_port()
    log = tmp_path_factory.mktemp("predictor") / "predictor.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(PREDICTOR_PYTHON), "-m", "jan_predictor"],
            cwd=ROOT / "kserve",
            env={**os.environ, "PORT": str(port), "PREDICTOR_HOST": "127.0.0.1"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", proc, log, 120)
        yield f"http://127.0.0.1:{port}/openai/v1"
    finally:
        stop(proc)


@contextlib.contextmanager
def gateway_process(settings: Settings, *, predictor_url: str, data_dir: Path) -> Iterator[str]:
    """`python -m functions serve all` (hypercorn through func-python, as Knative runs it)
    with the database and secrets of ``settings``, its model the predictor; yields the
    gateway's base URL. Its log is ``data_dir/gateway.log``."""
    port = free_port()
    secrets = {
        "DB_POSTGRESQL_WRITE_DSN": settings.db_postgresql_write_dsn,
        "JWT_SECRET": settings.jwt_secret,
        "APIKEY_SECRET": settings.apikey_secret,
        "MODEL_PROVIDER_SECRET": settings.model_provider_secret,
    }
    env = {
        **os.environ,
        **{name: value.get_secret_value() for name, value in secrets.items() if value is not None},
        "JAN_INFERENCE_MODEL_URL": predictor_url,
        "JAN_DATA_DIR": str(data_dir),
        "JAN_FUNCTION": "all",
        "JAN_LOG_LEVEL": "WARNING",
        "JAN_SHUTDOWN_DRAIN_SECONDS": "0",  # nothing to drain for: stop at once
        "LISTEN_ADDRESS": f"127.0.0.1:{port}",
    }
    log = data_dir / "gateway.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "functions", "serve", "all"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{base_url}/readyz", process, log, 60)
        yield base_url
    finally:
        stop(process)
