"""KServe's V2 health endpoints: live while the process serves, ready once both models (chat
and embeddings) are loaded."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from jan_predictor.embeddings import EmbeddingsService
from jan_predictor.engine import Pool
from jan_predictor.errors import ModelNotFound


class Health:
    def __init__(self, pool: Pool, embeddings: EmbeddingsService, model_name: str) -> None:
        self.pool = pool
        self.embeddings = embeddings
        self.model_name = model_name

    async def live(self, request: Request) -> Response:
        error = self.pool.load_error or self.embeddings.load_error
        if error is not None:
            return JSONResponse({"live": False, "error": error}, status_code=503)
        return JSONResponse({"live": True})

    async def ready(self, request: Request) -> Response:
        ready = self.pool.ready and self.embeddings.ready
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    async def model_ready(self, request: Request) -> Response:
        name = request.path_params["model_name"]
        if name == self.model_name:
            ready = self.pool.ready
        elif name == self.embeddings.name:
            ready = self.embeddings.ready
        else:
            raise ModelNotFound(f"The model '{name}' does not exist.", param="model")
        return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 503)
