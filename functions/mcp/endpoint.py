"""``/v1/mcp``: authenticate like the model APIs, then hand the request to the MCP SDK.

A plain ASGI endpoint (``RawEndpoint``, not a request/response handler) because the SDK's
transport writes its own response. Only POST is routed: a
stateless server has no session to DELETE, and the SDK would hold a GET stream open
forever with nothing to send, so both get the router's 405 (which the spec allows).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from functions.common.errors import ServiceUnavailable, Unauthorized
from functions.common.principal import require_project
from functions.mcp.deps import MCPDeps


async def mcp_endpoint(deps: MCPDeps, scope: Scope, receive: Receive, send: Send) -> None:
    """
    summary: MCP Streamable HTTP endpoint (JSON-RPC messages)
    description: >
      Model Context Protocol over Streamable HTTP, stateless, with JSON responses.
      Methods initialize, ping, tools/list, tools/call (and server/discover for the
      2026 protocol). Tools: google_search, scrape, fetch_webpage, as enabled for the
      project. Tool failures are results with isError true. Authenticate with a
      project API key or a user token (OpenAI-Project header).
    tags: [mcp]
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            description: A JSON-RPC 2.0 request or notification.
            required: [jsonrpc, method]
            properties:
              jsonrpc: {type: string, enum: ["2.0"]}
              id: {oneOf: [{type: string}, {type: integer}]}
              method:
                type: string
                enum: [initialize, notifications/initialized, ping, tools/list, tools/call]
              params:
                type: object
                properties:
                  protocolVersion: {type: string}
                  capabilities: {type: object}
                  clientInfo: {type: object}
                  name: {type: string, enum: [google_search, scrape, fetch_webpage]}
                  arguments: {type: object}
    responses:
      200:
        description: JSON-RPC response.
        content: {application/json: {schema: {type: object}}}
      202: {description: Notification accepted.}
      401:
        description: Missing or invalid credential.
        content: {application/json: {schema: {$ref: '#/components/schemas/Error'}}}
      403:
        description: The credential acts in no project (e.g. an admin key).
        content: {application/json: {schema: {$ref: '#/components/schemas/Error'}}}
    """
    request = Request(scope, receive)
    try:
        principal = await deps.identity.authenticate(request)
    except Unauthorized as exc:
        # MCP clients look for the challenge to know a bearer token is wanted.
        exc.headers.setdefault("WWW-Authenticate", 'Bearer realm="jan-server"')
        raise
    require_project(principal)
    manager = deps.server.manager
    if manager is None:
        raise ServiceUnavailable("The MCP server is starting; retry shortly.")
    scope.setdefault("state", {})["principal"] = principal
    await manager.handle_request(scope, receive, send)
