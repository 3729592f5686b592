"""Real processes shared by the end-to-end tests of several areas: the CPU predictor
(SmolLM2-135M over llama.cpp) starts once per session, whichever suites use it.

``predictor_url`` is made available to every test directory by ``tests/conftest.py``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PREDICTOR_PYTHON = ROOT / "kserve" / ".venv" / "bin" / "python"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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
