"""The tool box: the tools' catalog and the one way to call them, with the project's limits.

Both the MCP endpoint and the Responses engine call tools through ``ToolBox.call``, which
checks the project's enablement and daily quota, validates the arguments, bounds the time
and caps the output. Every failure comes back as a ``ToolResult`` with ``is_error`` set;
``call`` raises only for our own bugs.

    box = ToolBox(runtime, outbound)   # built once by the app factory
    specs = await box.available(principal)           # what this project may call
    result = await box.call(principal, "google_search", {"q": "jan.ai"})
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from pydantic import BaseModel, ValidationError

from functions.common.housekeeping import Housekeeping
from functions.common.netguard import AddressPolicy
from functions.common.outbound import Outbound
from functions.common.principal import Principal
from functions.common.runtime import Component, NotOpen, Runtime
from functions.services.toolbox import pages, search, store
from functions.services.toolbox.base import ToolError, ToolLimits, ToolResult, cap_text
from functions.services.toolbox.fetch import fetch_client

log = logging.getLogger(__name__)

# Tool families, named as the Responses built-ins; per-project enablement is by family.
WEB_SEARCH = "web_search"
FETCH = "fetch"
FAMILIES = (WEB_SEARCH, FETCH)


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    family: str
    title: str
    description: str
    input_schema: dict[str, Any]
    args: type[BaseModel]
    run: Callable[[ToolBox, Any], Awaitable[ToolResult]]


class ToolBox(Component):
    """Process-wide: the clients the tools use and the limits from settings."""

    def __init__(self, runtime: Runtime, outbound: Outbound) -> None:
        self.runtime = runtime
        self.outbound = outbound
        self.settings = runtime.settings
        self.limits = ToolLimits.from_settings(runtime.settings)
        self.policy = AddressPolicy.from_entries(self.limits.allowed_hosts)
        self._fetch_client: httpx.AsyncClient | None = None

    @property
    def fetch_client(self) -> httpx.AsyncClient:
        if self._fetch_client is None:
            raise NotOpen("the tool box is not started")
        return self._fetch_client

    async def start(self) -> None:
        self._fetch_client = fetch_client()

    def register_sweeps(self, keeper: Housekeeping) -> None:
        """The daily tool-call counters this box fills are swept after a few days."""
        keeper.add("tools.call_counters", store.sweep_old_counters)

    async def stop(self) -> None:
        if self._fetch_client is not None:
            await self._fetch_client.aclose()
            self._fetch_client = None

    # --- catalog ----------------------------------------------------------------------
    def spec(self, name: str) -> ToolSpec | None:
        return CATALOG.get(name)

    async def available(self, principal: Principal) -> list[ToolSpec]:
        """The tools this principal's project has enabled."""
        return enabled_specs(await self._project_settings(principal))

    # --- calling ----------------------------------------------------------------------
    async def call(self, principal: Principal, name: str, arguments: Any) -> ToolResult:
        """Run one tool for ``principal``'s project; failures come back as error results."""
        spec = CATALOG.get(name)
        if spec is None:
            return ToolResult.error(f"Unknown tool {name!r}. Available: {', '.join(CATALOG)}.")
        try:
            args = _parse_args(spec, arguments)
            await self._admit(principal, spec)
            async with asyncio.timeout(self.limits.timeout_seconds):
                result = await spec.run(self, args)
        except ToolError as exc:
            return ToolResult.error(exc.message)
        except TimeoutError:
            return ToolResult.error(
                f"The {name} tool timed out after {self.limits.timeout_seconds:g} seconds."
            )
        return ToolResult(
            text=cap_text(result.text, self.limits.result_max_chars),
            structured=_cap_structured(result.structured, self.limits.result_max_chars),
            is_error=result.is_error,
        )

    async def _admit(self, principal: Principal, spec: ToolSpec) -> None:
        organization_id, project_id = _tenant(principal)
        settings = await self._project_settings(principal)
        if settings.enabled_tools is not None and spec.family not in settings.enabled_tools:
            raise ToolError(f"The {spec.name} tool is not enabled for this project.")
        quota = daily_quota(self.limits, settings, guest=principal.is_guest)
        allowed = await store.take_call(
            self.runtime.db.writer,
            organization_id=organization_id,
            project_id=project_id,
            quota=quota,
        )
        if not allowed:
            raise ToolError(
                f"This project has used its {quota} tool calls for today; try again tomorrow."
            )

    async def _project_settings(self, principal: Principal) -> store.ProjectToolSettings:
        organization_id, project_id = _tenant(principal)
        return await self.runtime.db.read(
            lambda ex: store.get_settings(
                ex, organization_id=organization_id, project_id=project_id
            )
        )


def daily_quota(limits: ToolLimits, settings: store.ProjectToolSettings, *, guest: bool) -> int:
    """The daily tool calls a project may make (0: unlimited): the one rule that both the
    settings answer and every call's admission use.

    The project's own value, else its organization owner's, else the server default; never
    above the organization owner's ceiling, the operator's (JAN_TOOL_CALLS_PER_DAY_MAX),
    nor for a guest above JAN_GUEST_TOOL_CALLS_PER_DAY. Values stored before a ceiling
    existed or was lowered are held to it here, not trusted."""
    quota = settings.daily_call_quota
    if quota is None:
        ceiling = settings.daily_call_quota_ceiling
        quota = limits.default_daily_calls if ceiling is None else ceiling
    quota = capped(quota, settings.daily_call_quota_ceiling)
    quota = capped(quota, limits.max_daily_calls)
    return capped(quota, limits.guest_daily_calls) if guest else quota


def capped(quota: int, ceiling: int | None) -> int:
    """``quota`` held to ``ceiling``; 0 is unlimited in both, None is no ceiling."""
    if not ceiling:
        return quota
    return ceiling if quota == 0 or quota > ceiling else quota


def enabled_specs(settings: store.ProjectToolSettings) -> list[ToolSpec]:
    """The tools a project with these settings may call."""
    enabled = settings.enabled_tools
    return [s for s in CATALOG.values() if enabled is None or s.family in enabled]


def _cap_structured(structured: dict[str, Any] | None, limit: int) -> dict[str, Any] | None:
    """Structured output obeys the same size cap: a page's content is cut, and anything
    else that is still too large is dropped (the text form carries the result)."""
    if structured is None or len(orjson.dumps(structured)) <= limit:
        return structured
    content = structured.get("content")
    if isinstance(content, str):
        capped = {**structured, "content": cap_text(content, limit), "truncated": True}
        if len(orjson.dumps(capped)) <= limit + 4096:
            return capped
    return None


def _tenant(principal: Principal) -> tuple[str, str]:
    if principal.project_id is None:
        raise ToolError("Tools are used within a project; this credential names none.")
    return principal.organization_id, principal.project_id


def _parse_args(spec: ToolSpec, arguments: Any) -> BaseModel:
    if isinstance(arguments, str | bytes):
        try:
            arguments = orjson.loads(arguments or b"{}")
        except orjson.JSONDecodeError as exc:
            raise ToolError(f"The arguments of {spec.name} are not valid JSON.") from exc
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise ToolError(f"The arguments of {spec.name} must be a JSON object.")
    try:
        return spec.args.model_validate(arguments)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "arguments"
        raise ToolError(f"Invalid argument {where} for {spec.name}: {first['msg']}.") from None


# --- the tools -----------------------------------------------------------------------------
async def _google_search(box: ToolBox, args: search.SearchArgs) -> ToolResult:
    found = await search.web_search(box.outbound.client, box.settings, args)
    return ToolResult(text=search.render_results(found), structured=found)


def _page_tool(default_markdown: bool) -> Callable[[ToolBox, Any], Awaitable[ToolResult]]:
    async def run(box: ToolBox, args: pages.PageArgs) -> ToolResult:
        return await pages.read_page(
            box.fetch_client,
            args,
            policy=box.policy,
            max_bytes=box.limits.fetch_max_bytes,
            default_markdown=default_markdown,
        )

    return run


CATALOG: dict[str, ToolSpec] = {
    spec.name: spec
    for spec in (
        ToolSpec(
            name="google_search",
            family=WEB_SEARCH,
            title="Web search",
            description=(
                "Search the web (Google results through Serper, or a SearXNG instance). "
                "Returns titles, links and snippets of the top results."
            ),
            input_schema=search.SEARCH_SCHEMA,
            args=search.SearchArgs,
            run=_google_search,
        ),
        ToolSpec(
            name="scrape",
            family=FETCH,
            title="Scrape a web page",
            description=(
                "Fetch a public web page and return its readable text, or Markdown when "
                "includeMarkdown is true."
            ),
            input_schema=pages.page_schema(default_markdown=False),
            args=pages.PageArgs,
            run=_page_tool(default_markdown=False),
        ),
        ToolSpec(
            name="fetch_webpage",
            family=FETCH,
            title="Fetch a web page",
            description=(
                "Fetch a public web page and return its main content as Markdown "
                "(plain text when includeMarkdown is false)."
            ),
            input_schema=pages.page_schema(default_markdown=True),
            args=pages.PageArgs,
            run=_page_tool(default_markdown=True),
        ),
    )
}
