"""OpenAPI 3 document built from the handlers' docstrings, and Swagger UI served locally.

Each handler's docstring is a YAML OpenAPI operation; the document is generated from the
routes the app really has, so a route cannot silently go undocumented (a test checks).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from functions import __version__
from functions.common.http import JSON

_BASE: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "Jan Server API",
        "version": __version__,
        "description": "OpenAI-compatible API and administration API of Jan Server.",
    },
    "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "API key or JWT"}
        },
        "schemas": {
            "Error": {
                "type": "object",
                "properties": {
                    "error": {
                        "type": "object",
                        "properties": {
                            "message": {"type": "string"},
                            "type": {"type": "string"},
                            "param": {"type": "string", "nullable": True},
                            "code": {"type": "string", "nullable": True},
                        },
                    }
                },
            },
            # One input item of the Responses and Conversations APIs (the common shapes).
            "InputItem": {
                "type": "object",
                "properties": {
                    "type": {
                        "type": "string",
                        "enum": [
                            "message",
                            "function_call",
                            "function_call_output",
                            "item_reference",
                        ],
                    },
                    "role": {
                        "type": "string",
                        "enum": ["user", "assistant", "system", "developer"],
                    },
                    "content": {
                        "oneOf": [
                            {"type": "string"},
                            {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "type": {
                                            "type": "string",
                                            "enum": ["input_text", "output_text", "input_image"],
                                        },
                                        "text": {"type": "string"},
                                        "image_url": {"type": "string"},
                                    },
                                },
                            },
                        ]
                    },
                    "id": {"type": "string"},
                    "call_id": {"type": "string"},
                    "name": {"type": "string"},
                    "arguments": {"type": "string"},
                    "output": {"type": "string"},
                },
            },
            # Jan extension: what a model provider declares about its engines.
            "JanProviderOptions": {
                "type": "object",
                "description": (
                    "Jan extension. `priority`: the engines take vLLM's `priority` body "
                    "field (the project's priority is forwarded, 0 when it has none); "
                    "`prompt_cache_key`: they take `prompt_cache_key` in the body (the "
                    "request's affinity key is forwarded; `x-session-id` always is); "
                    "`context_window` (every model) and `context_windows` (per model): "
                    "their context window in tokens, for context-window fallbacks."
                ),
                "properties": {
                    "priority": {"type": "boolean", "default": False},
                    "prompt_cache_key": {"type": "boolean", "default": False},
                    "context_window": {"type": "integer", "minimum": 1, "nullable": True},
                    "context_windows": {
                        "type": "object",
                        "additionalProperties": {"type": "integer", "minimum": 1},
                    },
                },
            },
        },
    },
    "security": [{"bearer": []}],
}


def openapi_document(routes: list[BaseRoute]) -> dict[str, Any]:
    # Imported here: YAML and the generator are needed only when a document is built,
    # not on every cold start of every area.
    import yaml
    from starlette.schemas import SchemaGenerator

    class Generator(SchemaGenerator):
        """Starlette's generator, naming the handler whose docstring is not valid YAML."""

        def parse_docstring(self, func_or_method: Callable[..., Any]) -> dict[str, Any]:
            try:
                return super().parse_docstring(func_or_method)
            except yaml.YAMLError as exc:
                name = f"{func_or_method.__module__}.{func_or_method.__qualname__}"
                raise ValueError(f"{name}: docstring is not valid OpenAPI YAML: {exc}") from None

    document: dict[str, Any] = Generator(_BASE).get_schema(routes)
    _declare_path_parameters(document)
    return document


_PATH_PARAMETER = re.compile(r"{([^}:]+)")


def _declare_path_parameters(document: dict[str, Any]) -> None:
    """OpenAPI requires every ``{name}`` of a path to be declared; handlers describe the
    ones that need words, and the rest are declared here as required strings (clients and
    generated SDKs otherwise see no parameter at all)."""
    for path, operations in document.get("paths", {}).items():
        names = _PATH_PARAMETER.findall(path)
        if not names:
            continue
        for operation in operations.values():
            parameters = operation.setdefault("parameters", [])
            declared = {p.get("name") for p in parameters if p.get("in") == "path"}
            parameters.extend(
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in names
                if name not in declared
            )


class ApiDocs:
    """The OpenAPI document of the whole API, whichever areas this instance serves (one
    base URL serves the whole API, so its description must too). Built on first request
    from the route tables ``describe`` returns, then kept."""

    def __init__(self, describe: Callable[[], list[BaseRoute]]) -> None:
        self._describe = describe
        self._document: dict[str, Any] | None = None

    def document(self) -> dict[str, Any]:
        if self._document is None:
            self._document = openapi_document(self._describe())
        return self._document


class HasDocs(Protocol):
    @property
    def docs(self) -> ApiDocs: ...


async def openapi_json(deps: HasDocs, request: Request) -> Response:
    """
    summary: This OpenAPI document
    tags: [ops]
    security: []
    responses:
      200: {description: OpenAPI 3 document.}
    """
    return JSON(deps.docs.document())


_INDEX = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Jan Server API</title>
<link rel="stylesheet" href="swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="swagger-ui-bundle.js"></script>
<script src="swagger-ui-standalone-preset.js"></script>
<script>
window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "StandaloneLayout"});
</script></body></html>
"""


async def swagger_index(deps: HasDocs, request: Request) -> Response:
    """
    summary: Swagger UI
    tags: [ops]
    security: []
    responses:
      200: {description: HTML page.}
    """
    return HTMLResponse(_INDEX)


def swagger_assets() -> Mount:
    return Mount("/api/swagger", app=StaticFiles(directory=str(swagger_ui_path)), name="swagger")
