"""Fixtures: the real app over the real model, in-process (ASGI) and as a uvicorn subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette

from jan_predictor import Settings, create_app
from jan_predictor.engine import Pool

MODEL = "smollm2-135m-instruct"
EMBEDDING_MODEL = "wordllama-l2-supercat"
AppFactory = Callable[..., Any]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_settings(**overrides: Any) -> Settings:
    """Settings for a test: two one-thread instances unless told otherwise."""
    values: dict[str, Any] = {"instances": 2, "threads_per_instance": 1, "context_size": 1024}
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan, wait for the model, and yield a client bound to it."""
    async with app.router.lifespan_context(app):
        pool: Pool = app.state.pool
        with anyio.fail_after(60):
            await pool.settled.wait()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://predictor") as client:
            yield client


def sse_events(body: str) -> list[Any]:
    """The JSON payloads of a server-sent event stream, ``"[DONE]"`` kept as a string."""
    events: list[Any] = []
    for block in body.split("\n\n"):
        if block.startswith("data: "):
            data = block.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """A client for an app with default test settings and the model loaded."""
    async with running(create_app(make_settings())) as c:
        yield c


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, base_url: str, process: subprocess.Popen[bytes]) -> None:
        self.base_url = base_url
        self.process = process

    def metric(self, name: str) -> float:
        """The value of a series (``name{labels}`` exactly), or of the first series of ``name``."""
        text = httpx.get(f"{self.base_url}/metrics").text
        for line in text.splitlines():
            series, _, value = line.rpartition(" ")
            if series == name or series.startswith(name + "{"):
                return float(value)
        raise AssertionError(f"metric {name} not found")


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    """``python -m jan_predictor`` on a free port, as a container would run it."""
    port = _free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "PREDICTOR_INSTANCES": "2",
        "PREDICTOR_CONTEXT_SIZE": "1024",
        "PREDICTOR_LOG_LEVEL": "warning",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "jan_predictor", "--host", "127.0.0.1"], env=env
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "the predictor exited"
            try:
                if httpx.get(f"{base_url}/v2/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the predictor never became ready"
            time.sleep(0.1)
        yield Server(base_url, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
