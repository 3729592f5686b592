"""Small request/response helpers shared by the areas."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from functions.common.errors import InvalidRequest


class JSON(Response):
    """JSON response encoded with orjson (faster than the stdlib encoder)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


def query_list(request: Request, name: str) -> list[str]:
    """A repeated query parameter, sent as ``name=a&name=b`` or ``name[]=a&name[]=b``."""
    return request.query_params.getlist(name) + request.query_params.getlist(f"{name}[]")


async def json_body(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says what is wrong."""
    raw = await request.body()
    if not raw:
        raise InvalidRequest("Request body is empty; expected a JSON object.")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"Request body is not valid JSON: {exc.msg}.") from None
    if not isinstance(data, dict):
        raise InvalidRequest("Request body must be a JSON object.")
    return data
