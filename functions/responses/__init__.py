"""The `responses` area: OpenAI's Responses API, computed through the inference router,
stored in PostgreSQL, with background runs claimed from the database."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from functions.common import housekeeping
from functions.common.db import Executor
from functions.common.runtime import Runtime
from functions.responses import handlers as h
from functions.responses import store
from functions.responses.worker import BackgroundWorker
from functions.services.toolbox import executor as jan_tools


def routes(runtime: Runtime) -> list[BaseRoute]:
    worker = BackgroundWorker()
    runtime.services[BackgroundWorker] = worker
    runtime.on_start(worker.start)
    runtime.on_drain(worker.drain)
    runtime.on_stop(worker.stop)
    jan_tools.register(runtime)  # web_search, fetch and Jan's MCP tools, run server-side
    abandoned_after = runtime.settings.jan_response_abandoned_after_seconds

    async def fail_abandoned(ex: Executor, *, limit: int) -> int:
        return await store.fail_abandoned(ex, older_than_seconds=abandoned_after, limit=limit)

    housekeeping.register(runtime, "responses.abandoned", fail_abandoned)
    return [
        Route("/v1/responses", h.create_response, methods=["POST"]),
        Route("/v1/responses/{response_id}", h.get_response, methods=["GET"]),
        Route("/v1/responses/{response_id}", h.delete_response, methods=["DELETE"]),
        Route("/v1/responses/{response_id}/input_items", h.list_input_items, methods=["GET"]),
        Route("/v1/responses/{response_id}/cancel", h.cancel_response, methods=["POST"]),
    ]
