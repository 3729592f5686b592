"""The `responses` area: OpenAI's Responses API, computed through the inference service,
stored in PostgreSQL, with background runs claimed from the database."""

from __future__ import annotations

from functions.common.db import Executor
from functions.common.housekeeping import Housekeeping
from functions.common.routing import Operation
from functions.common.runtime import Runtime
from functions.common.settings import Settings
from functions.responses import handlers as h
from functions.responses import store
from functions.responses.handlers import ResponsesDeps
from functions.responses.model import RouterModel
from functions.responses.worker import BackgroundWorker
from functions.services.identity import Identity
from functions.services.inference.service import Inference
from functions.services.toolbox.executor import JanToolExecutor
from functions.services.toolbox.server import ToolRegistry
from functions.services.toolbox.toolbox import ToolBox

__all__ = ["ROUTES", "ResponsesDeps", "build", "register_sweeps"]

_ONE = "/v1/responses/{response_id}"
ROUTES: list[Operation[ResponsesDeps]] = [
    Operation("POST", "/v1/responses", h.create_response),
    Operation("POST", "/v1/responses/input_tokens", h.count_input_tokens),
    Operation("GET", _ONE, h.get_response),
    Operation("DELETE", _ONE, h.delete_response),
    Operation("GET", _ONE + "/input_items", h.list_input_items),
    Operation("POST", _ONE + "/cancel", h.cancel_response),
]


def build(
    runtime: Runtime, identity: Identity, inference: Inference, toolbox: ToolBox
) -> ResponsesDeps:
    """The area's services: the model behind the inference router, the server-side tools
    (web_search, fetch and Jan's MCP tools), the background worker."""
    model = RouterModel(inference)
    tools = ToolRegistry([JanToolExecutor(toolbox)])
    worker = BackgroundWorker(runtime, model, tools)
    return ResponsesDeps(runtime, identity, model, tools, worker)


def register_sweeps(keeper: Housekeeping, settings: Settings) -> None:
    """Foreground responses left in progress by a crashed instance become failed."""
    abandoned_after = settings.jan_response_abandoned_after_seconds

    async def fail_abandoned(ex: Executor, *, limit: int) -> int:
        return await store.fail_abandoned(ex, older_than_seconds=abandoned_after, limit=limit)

    keeper.add("responses.abandoned", fail_abandoned)
