"""KServe's V2 health endpoints: live while the process serves, ready once the model is loaded."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from jan_predictor.engine import Pool
from jan_predictor.errors import ModelNotFound


class Health:
    def __init__(self, pool: Pool, model_name: str) -> None:
        self.pool = pool
        self.model_name = model_name

    async def live(self, request: Request) -> Response:
        if self.pool.load_error is not None:
            return JSONResponse({"live": False, "error": self.pool.load_error}, status_code=503)
        return JSONResponse({"live": True})

    async def ready(self, request: Request) -> Response:
        ready = self.pool.ready
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    async def model_ready(self, request: Request) -> Response:
        name = request.path_params["model_name"]
        if name != self.model_name:
            raise ModelNotFound(f"The model '{name}' does not exist.", param="model")
        ready = self.pool.ready
        return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 503)
