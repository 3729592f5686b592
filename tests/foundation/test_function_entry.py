"""The Knative function entry, driven through func-python's own ASGI application."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import pytest
from func_python.http import ASGIApplication
from starlette.types import Message

from functions import entry
from functions.common.db import AnyConnection
from functions.common.runtime import Component
from functions.common.settings import Settings
from functions.entry import new


class Lifespan:
    """Plays the server's side of the ASGI lifespan protocol, as hypercorn does."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        self.task = asyncio.create_task(
            self.app(
                {"type": "lifespan", "asgi": {"version": "3.0"}}, self.inbox.get, self.outbox.put
            )
        )
        await self.inbox.put({"type": "lifespan.startup"})
        assert (await self.outbox.get())["type"] == "lifespan.startup.complete"

    async def shutdown(self) -> None:
        await self.inbox.put({"type": "lifespan.shutdown"})
        assert (await self.outbox.get())["type"] == "lifespan.shutdown.complete"
        assert self.task is not None
        await self.task


async def test_func_python_drives_start_ready_handle_stop(settings: Settings) -> None:
    function = new(settings)
    drained: list[str] = []

    class Queued(Component):
        async def drain(self, conn: AnyConnection) -> None:
            # Work queued in memory must reach the database although stop() is synchronous.
            await conn.execute("INSERT INTO system_settings (key, value) VALUES ('drained', '1')")
            drained.append("yes")

    function.runtime.manage(Queued())
    asgi = ASGIApplication(function)
    transport = httpx.ASGITransport(app=asgi, raise_app_exceptions=False)
    lifespan = Lifespan(asgi)
    await lifespan.startup()
    async with httpx.AsyncClient(transport=transport, base_url="http://fn") as client:
        # func-python answers these itself from alive()/ready().
        assert (await client.get("/health/liveness")).status_code == 200
        for _ in range(100):
            if (await client.get("/health/readiness")).status_code == 200:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("never became ready")
        assert (await client.get("/readyz")).status_code == 200
        missing = await client.get("/v1/nope")
        assert missing.status_code == 404 and "error" in missing.json()
    await lifespan.shutdown()
    assert drained == ["yes"]
    assert function.ready()[0] is False
    assert settings.db_postgresql_write_dsn is not None
    conn = await asyncpg.connect(settings.db_postgresql_write_dsn.get_secret_value())
    assert await conn.fetchval("SELECT value = '1' FROM system_settings WHERE key = 'drained'")
    await conn.close()


async def test_not_ready_while_the_database_is_down_and_requests_get_503(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydantic import SecretStr

    from tests.pg import free_port

    down = settings.model_copy(
        update={
            "db_postgresql_write_dsn": SecretStr(f"postgresql://postgres@127.0.0.1:{free_port()}/x")
        }
    )
    function = new(down)
    asgi = ASGIApplication(function)
    lifespan = Lifespan(asgi)
    await lifespan.startup()
    monkeypatch.setattr(entry, "OPEN_WAIT_SECONDS", 0.3)  # restored even if the test fails
    transport = httpx.ASGITransport(app=asgi, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://fn") as client:
        assert (await client.get("/health/readiness")).status_code == 500
        assert (await client.get("/healthcheck")).status_code == 200  # liveness needs no DB
        assert (await client.get("/openapi.json")).status_code == 200  # nor the API docs
        assert (await client.get("/api/swagger/swagger-ui.css")).status_code == 200
        r = await client.get("/v1/organization/projects")
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "service_unavailable"
        assert r.headers["retry-after"] == "2"
    await lifespan.shutdown()


async def test_a_request_cancelled_while_waiting_for_the_database_stays_cancelled(
    settings: Settings,
) -> None:
    from pydantic import SecretStr

    from tests.pg import free_port

    down = settings.model_copy(
        update={
            "db_postgresql_write_dsn": SecretStr(f"postgresql://postgres@127.0.0.1:{free_port()}/x")
        }
    )
    function = new(down)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/v1/organization/projects", "headers": []}
    request = asyncio.create_task(function.handle(scope, receive, send))
    await asyncio.sleep(0.2)  # waiting for the database to open
    request.cancel()
    await asyncio.gather(request, return_exceptions=True)
    function.stop()
    assert request.cancelled()  # not swallowed and answered with a 503 on a dead request
    assert sent == []
