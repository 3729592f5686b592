"""Graceful shutdown (``functions.common.shutdown``): two real ``jan-server serve chat``
processes (hypercorn, then uvicorn) share one port through ``SO_REUSEPORT`` while clients
keep sending plain and streamed chat completions through it; one of them gets SIGTERM.
Its readiness says "draining" while it still serves (each answer with ``Connection:
close``), then it closes and finishes what it has; two streams and a plain request too
long for its grace are cut — the streams with an error event and ``[DONE]``, the request
with the 503 envelope — and recorded in the usage ledger with 503. No client meets a
refused or reset connection, every stream ends with ``[DONE]``, and the stopped process
logs no traceback and no error."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest

from functions.common.runtime import Runtime
from tests.chat.fakes import FakeUpstream
from tests.conftest import make_settings
from tests.e2e import ROOT
from tests.factories import bearer, create_tenant
from tests.pg import free_port

DRAIN_SECONDS = 1.0
GRACE_SECONDS = 1.5
CHUNK_SECONDS = 0.05
STREAM_CHUNKS = 10  # m1's streams: half a second, well within the grace
LONG_CHUNKS = 2000  # the model "long" streams for 100 s: always cut
STUCK_SECONDS = 100.0  # the model "stuck" answers plain requests after this: always cut
CLIENTS = 8  # half plain, half streamed
DONE = "data: [DONE]\n\n"


@dataclass
class Instance:
    process: asyncio.subprocess.Process
    own_url: str  # the address only this instance listens on (its probes)
    log: Path


@dataclass
class Load:
    """What the clients saw."""

    statuses: list[int] = field(default_factory=list)
    streams: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    upstream = FakeUpstream("builtin", models=("m1", "long", "stuck"))
    upstream.chunk_delay = CHUNK_SECONDS
    upstream.stream_chunks = STREAM_CHUNKS
    upstream.chunks_by_model = {"long": LONG_CHUNKS}
    upstream.delay_by_model = {"stuck": STUCK_SECONDS}
    await upstream.start()
    yield upstream
    await upstream.stop()


def _environment(dsn: str, upstream: str) -> dict[str, str]:
    settings = make_settings(dsn)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAN_", "REDIS_", "DB_"))}
    env.update(
        {
            "DB_POSTGRESQL_WRITE_DSN": dsn,
            "JWT_SECRET": settings.jwt_secret.get_secret_value(),  # type: ignore[union-attr]
            "APIKEY_SECRET": settings.apikey_secret.get_secret_value(),  # type: ignore[union-attr]
            "MODEL_PROVIDER_SECRET": settings.model_provider_secret.get_secret_value(),  # type: ignore[union-attr]
            "JAN_INFERENCE_MODEL_URL": upstream,
            "JAN_LOG_LEVEL": "INFO",
            "JAN_SHUTDOWN_DRAIN_SECONDS": str(DRAIN_SECONDS),
            "JAN_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
        }
    )
    return env


async def start(env: dict[str, str], shared: int, log: Path, server: str) -> Instance:
    """A ``jan-server serve chat`` on the shared port and one of its own, once ready."""
    own = free_port()
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "functions", "serve", "chat", "--server", server,
            "--listen", f"127.0.0.1:{shared},127.0.0.1:{own}",
            env=env, cwd=ROOT, stdout=out, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    instance = Instance(process, f"http://127.0.0.1:{own}", log)
    try:
        await _ready(instance)
    except BaseException:
        await stop(instance)
        raise
    return instance


async def stop(instance: Instance) -> None:
    if instance.process.returncode is None:
        instance.process.kill()
    await instance.process.wait()


async def _ready(instance: Instance) -> None:
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            if instance.process.returncode is not None:
                pytest.fail(f"instance exited: {instance.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{instance.own_url}/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    pytest.fail(f"instance not ready: {instance.log.read_text()[-3000:]}")


async def plain(
    url: str, key: str, load: Load, done: asyncio.Event, model: str = "m1", once: bool = False
) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(timeout=30) as client:
        while not done.is_set():
            try:
                answer = await client.post(url, json=body, headers=bearer(key))
            except httpx.TransportError as exc:
                load.errors.append(repr(exc))
                continue
            load.statuses.append(answer.status_code)
            if once:
                load.streams.append(answer.text)  # the body, to read the error from
                return


async def streamed(
    url: str, key: str, load: Load, done: asyncio.Event, model: str = "m1", once: bool = False
) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    async with httpx.AsyncClient(timeout=30) as client:
        while not done.is_set():
            try:
                async with client.stream("POST", url, json=body, headers=bearer(key)) as answer:
                    text = "".join([part async for part in answer.aiter_text()])
            except httpx.TransportError as exc:
                load.errors.append(repr(exc))
                continue
            load.statuses.append(answer.status_code)
            load.streams.append(text)
            if once:
                return


def events(text: str) -> list[str]:
    return [e for e in text.split("\n\n") if e]


@pytest.mark.parametrize("server", ["hypercorn", "uvicorn"])
async def test_a_restart_under_load_refuses_nothing_and_ends_every_stream(
    server: str, database_dsn: str, fake: FakeUpstream, tmp_path: Path
) -> None:
    env = _environment(database_dsn, fake.base_url)
    shared = free_port()
    url = f"http://127.0.0.1:{shared}/v1/chat/completions"
    runtime = Runtime(make_settings(database_dsn, jan_migrate_on_start=False))
    await runtime.open()
    try:
        key = (await create_tenant(runtime)).project_key
    finally:
        await runtime.close()

    old = await start(env, shared, tmp_path / "old.log", server)
    done = asyncio.Event()
    load, cut, stuck = Load(), Load(), Load()
    tasks: list[asyncio.Task[None]] = []
    try:
        # Two streams and a plain request too long for the grace, on the old instance (the
        # only one yet).
        tasks += [
            asyncio.create_task(streamed(url, key, cut, done, model="long", once=True))
            for _ in range(2)
        ]
        tasks.append(asyncio.create_task(plain(url, key, stuck, done, model="stuck", once=True)))
        while fake.calls < 3:
            await asyncio.sleep(0.05)
        new = await start(env, shared, tmp_path / "new.log", server)
        try:
            tasks += [
                asyncio.create_task((plain if n % 2 else streamed)(url, key, load, done))
                for n in range(CLIENTS)
            ]
            while len(load.statuses) < 50:  # both instances under load
                await asyncio.sleep(0.05)
            old.process.send_signal(signal.SIGTERM)

            # Draining: readiness says so while the listener still serves.
            async with httpx.AsyncClient(timeout=2) as probe:
                ready = await probe.get(f"{old.own_url}/readyz")
                assert ready.status_code == 503, ready.text
                assert ready.json()["message"] == "draining"
                served = await probe.post(
                    old.own_url + "/v1/chat/completions",
                    json={"model": "m1", "messages": [{"role": "user", "content": "hi"}]},
                    headers=bearer(key),
                )
                assert served.status_code == 200, served.text
                assert served.headers["connection"] == "close"

            assert await asyncio.wait_for(old.process.wait(), 30) == 0
            seen = len(load.statuses)
            while len(load.statuses) < seen + 50:  # and the new one goes on serving
                await asyncio.sleep(0.05)
            done.set()
            await asyncio.gather(*tasks)
        finally:
            done.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await stop(new)
    finally:
        await stop(old)

    assert load.errors == [] and cut.errors == [] and stuck.errors == []
    assert set(load.statuses) == {200} and cut.statuses == [200, 200]
    assert load.streams and all(s.endswith(DONE) for s in load.streams)
    for stream in cut.streams:
        *_, last, end = events(stream)
        assert end == DONE.strip()
        error = orjson.loads(last.removeprefix("data: "))["error"]
        assert error["code"] == "service_unavailable", error
    # The plain request the cut ended: the 503 envelope.
    assert stuck.statuses == [503]
    assert orjson.loads(stuck.streams[0])["error"]["code"] == "service_unavailable"
    log = old.log.read_text()
    assert "Traceback" not in log and '"level":"error"' not in log, log[-3000:]
    assert '"status":500' not in log  # the access log has the cut request's 503

    conn = await asyncpg.connect(database_dsn)
    try:
        rows = await conn.fetch("SELECT model, status, streamed FROM usage_completions")
    finally:
        await conn.close()
    assert sorted(r["status"] for r in rows if r["model"] == "long") == [503, 503]
    assert [(r["status"], r["streamed"]) for r in rows if r["model"] == "stuck"] == [(503, False)]
    assert 499 not in {r["status"] for r in rows}
