"""The predictor's Starlette app: one route table, built by ``create_app``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route

from jan_predictor.embeddings import EmbeddingsService
from jan_predictor.engine import Pool
from jan_predictor.errors import (
    APIError,
    handle_api_error,
    handle_http_exception,
    handle_unexpected,
)
from jan_predictor.health import Health
from jan_predictor.metrics import Metrics
from jan_predictor.openai_api import OpenAIService
from jan_predictor.settings import Settings

logger = logging.getLogger("jan_predictor")


def create_app(settings: Settings) -> Starlette:
    """Build the app; the models load in the background once it starts (see ``/v2/health``)."""
    metrics = Metrics(settings.model_name)
    pool = Pool(settings, metrics)
    embeddings = EmbeddingsService(settings, metrics)
    openai = OpenAIService(settings, pool, embeddings, metrics)
    health = Health(pool, embeddings, settings.model_name)

    routes = [
        Route("/openai/v1/chat/completions", openai.chat_completions, methods=["POST"]),
        Route("/openai/v1/completions", openai.completions, methods=["POST"]),
        Route("/openai/v1/embeddings", embeddings.embeddings, methods=["POST"]),
        Route("/openai/v1/models", openai.list_models, methods=["GET"]),
        Route("/openai/v1/models/{model_id:path}", openai.get_model, methods=["GET"]),
        # vLLM's tokenizer, beside the OpenAI base URL as vLLM serves it beside ``/v1``.
        Route("/openai/tokenize", openai.tokenize, methods=["POST"]),
        Route("/v2/health/live", health.live, methods=["GET"]),
        Route("/v2/health/ready", health.ready, methods=["GET"]),
        Route("/v2/models/{model_name}/ready", health.model_ready, methods=["GET"]),
        Route("/metrics", metrics.endpoint, methods=["GET"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Loading runs beside the server so that liveness answers meanwhile.
        loading = asyncio.create_task(_load(pool, embeddings))
        try:
            yield
        finally:
            loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loading
            pool.close()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            APIError: handle_api_error,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
    )
    app.state.pool = pool
    app.state.embeddings = embeddings
    app.state.metrics = metrics
    return app


async def _load(pool: Pool, embeddings: EmbeddingsService) -> None:
    """The embedding model (about 0.1 s), then the chat model's instances. Not side by side:
    while llama-cpp-python loads a model it points the process's stdout and stderr at
    /dev/null (``verbose=False``), so whatever another thread logs meanwhile is lost."""
    try:
        await _load_embeddings(embeddings)
        await _load_chat(pool)
    finally:
        pool.settled.set()


async def _load_chat(pool: Pool) -> None:
    try:
        await pool.load()
    except Exception as exc:
        pool.load_error = "the model failed to load"
        logger.error("model load failed", exc_info=exc)


async def _load_embeddings(embeddings: EmbeddingsService) -> None:
    try:
        await embeddings.load()
    except Exception as exc:
        embeddings.load_error = "the embedding model failed to load"
        logger.error("embedding model load failed", exc_info=exc)
