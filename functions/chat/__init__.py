"""The `chat` area: OpenAI's model APIs (chat completions, completions, embeddings,
models) through the inference router, with the usage ledger.

Other areas call models through ``functions.services.inference.api`` (see its docstring).
"""

from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute, Route, compile_path

from functions.chat import handlers
from functions.common.runtime import Runtime
from functions.services.inference.service import inference


def routes(runtime: Runtime) -> list[BaseRoute]:
    async def start(rt: Runtime) -> None:
        # Opened with the runtime so the first request finds the catalog loaded.
        await inference(rt)

    runtime.on_start(start)
    return [
        Route("/v1/chat/completions", handlers.chat_completions, methods=["POST"]),
        Route("/v1/completions", handlers.completions, methods=["POST"]),
        Route("/v1/embeddings", handlers.embeddings, methods=["POST"]),
        Route("/v1/models", handlers.list_models, methods=["GET"]),
        _ModelRoute("/v1/models/{model}", handlers.retrieve_model, methods=["GET"]),
    ]


class _ModelRoute(Route):
    """``/v1/models/{model}`` where the model may contain slashes (``org/model`` names
    from the Hugging Face hub are common with vLLM), while the documented path stays
    OpenAI's."""

    def __init__(self, path: str, endpoint: Any, **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.path_regex, self.path_format, self.param_convertors = compile_path(
            path.replace("{model}", "{model:path}")
        )
