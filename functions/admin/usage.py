"""`GET /v1/organization/usage/completions` and `GET /v1/organization/costs`: the usage
ledger in OpenAI's usage and costs shapes.

Time is cut into buckets of ``bucket_width`` (usage: ``1m``, ``1h``, ``1d``; costs: ``1d``;
aligned to UTC); each bucket lists one result per group (``group_by``) or one overall
result, and empty buckets are listed too. ``page`` is the start of the next bucket, from
``next_page``. Hour and day buckets are read from the hourly rollup (``usage_hourly``,
written in the same transaction as the ledger's rows, so as fresh), minute buckets and
queries starting within an hour from the ledger's rows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from functions.admin import store
from functions.admin.call import AdminDeps, admin_call
from functions.common.errors import InvalidRequest
from functions.common.http import JSON
from functions.common.routing import Operation
from functions.services import pricing

WIDTHS = {"1m": 60, "1h": 3600, "1d": 86400}
LIMITS = {"1m": (60, 1440), "1h": (24, 168), "1d": (7, 31)}  # (default, maximum)
COST_WIDTHS = {"1d": 86400}
COST_LIMITS = {"1d": (7, 180)}
GROUPS = store.USAGE_COLUMNS  # project_id, user_id, api_key_id, model
FILTERS = {"project_ids": "project_id", "user_ids": "user_id", "api_key_ids": "api_key_id",
           "models": "model"}  # fmt: skip


MAX_UNIX_SECONDS = 253402300799  # 9999-12-31T23:59:59Z


def _int_param(request: Request, name: str, *, required: bool = False) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        if required:
            raise InvalidRequest(f"Missing required parameter: '{name}'.", param=name)
        return None
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"'{name}' must be an integer.", param=name) from None
    if value < 0:
        raise InvalidRequest(f"'{name}' must not be negative.", param=name)
    if value > MAX_UNIX_SECONDS:  # beyond what datetime (and PostgreSQL's range) can hold
        raise InvalidRequest(f"'{name}' must be at most {MAX_UNIX_SECONDS}.", param=name)
    return value


def _list_param(request: Request, name: str) -> list[str]:
    values = request.query_params.getlist(name) + request.query_params.getlist(f"{name}[]")
    return [v for raw in values for v in raw.split(",") if v]


def _result(row: dict[str, Any] | None, groups: list[str]) -> dict[str, Any]:
    row = row or {}
    return {
        "object": "organization.usage.completions.result",
        "input_tokens": int(row.get("input_tokens") or 0),
        "output_tokens": int(row.get("output_tokens") or 0),
        "input_cached_tokens": int(row.get("input_cached_tokens") or 0),
        "input_audio_tokens": 0,
        "output_audio_tokens": 0,
        "num_model_requests": int(row.get("requests") or 0),
        "reserved_tokens": int(row.get("reserved_tokens") or 0),
        "project_id": row.get("project_id") if "project_id" in groups else None,
        "user_id": row.get("user_id") if "user_id" in groups else None,
        "api_key_id": row.get("api_key_id") if "api_key_id" in groups else None,
        "model": row.get("model") if "model" in groups else None,
        "batch": None,
    }


@dataclass(frozen=True, slots=True)
class Window:
    """The buckets a usage or costs query answers on this page."""

    start: int  # the query's start_time
    first: int  # this page's first bucket
    stop: int  # where this page ends
    end: int  # the query's end_time
    width: int

    @classmethod
    def of(
        cls, request: Request, widths: Mapping[str, int], limits: Mapping[str, tuple[int, int]]
    ) -> Window:
        """Read and check ``bucket_width``, ``start_time``, ``end_time``, ``limit`` and
        ``page`` (400 with the parameter named for any bad one)."""
        width_name = request.query_params.get("bucket_width", "1d")
        if width_name not in widths:
            raise InvalidRequest(
                f"'bucket_width' must be one of {', '.join(widths)}.", param="bucket_width"
            )
        width = widths[width_name]
        start = _int_param(request, "start_time", required=True)
        assert start is not None
        end = _int_param(request, "end_time")
        if end is None:
            end = int(time.time())
        if end <= start:
            raise InvalidRequest("'end_time' must be after 'start_time'.", param="end_time")
        default_limit, max_limit = limits[width_name]
        limit = _int_param(request, "limit")
        if limit is None:
            limit = default_limit
        if not 1 <= limit <= max_limit:
            raise InvalidRequest(f"'limit' must be between 1 and {max_limit}.", param="limit")
        first = start - start % width
        page = request.query_params.get("page")
        if page is not None:
            # isascii: str.isdigit() also accepts digits such as '²' that int() refuses. A
            # cursor from this query lies before its end.
            cursor = int(page) if page.isascii() and page.isdigit() else -1
            if not first <= cursor < end or cursor % width:
                raise InvalidRequest("'page' is not a cursor from this query.", param="page")
            first = cursor
        count = min(limit, math.ceil((end - first) / width))
        return cls(start, first, min(first + count * width, end), end, width)

    @property
    def since(self) -> datetime:
        return datetime.fromtimestamp(max(self.first, self.start), UTC)

    @property
    def until(self) -> datetime:
        return datetime.fromtimestamp(self.stop, UTC)

    @property
    def hourly(self) -> bool:
        """Whether the hourly rollup answers exactly: whole hours from start to stop."""
        return (
            self.width % 3600 == 0
            and max(self.first, self.start) % 3600 == 0
            # Ending mid-hour only when that is now: the rollup holds nothing after it.
            and (self.stop % 3600 == 0 or self.stop >= time.time())
        )

    def page(self, by_bucket: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
        """OpenAI's page of buckets, empty ones included."""
        data = [
            {
                "object": "bucket",
                "start_time": b,
                "end_time": b + self.width,
                "results": by_bucket.get(b, []),
            }
            for b in range(self.first, self.stop, self.width)
        ]
        has_more = self.stop < self.end
        return {
            "object": "page",
            "data": data,
            "has_more": has_more,
            "next_page": str(self.stop) if has_more else None,
        }


def _groups(request: Request, allowed: tuple[str, ...]) -> list[str]:
    groups = _list_param(request, "group_by")
    if any(g not in allowed for g in groups):
        raise InvalidRequest(f"'group_by' accepts {', '.join(allowed)}.", param="group_by")
    return [g for g in allowed if g in groups]  # canonical order


async def usage_completions(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Completions usage (OpenAI's usage API shape)
    description: >-
      Jan extension: each result also has `reserved_tokens`, the tokens the rate limiter
      reserved at admission (input estimate plus max output) for those requests, next to
      the input and output tokens they used.
    tags: [admin]
    parameters:
      - name: start_time
        in: query
        required: true
        schema: {type: integer, minimum: 0, maximum: 253402300799}
      - {name: end_time, in: query, schema: {type: integer, minimum: 0, maximum: 253402300799}}
      - {name: bucket_width, in: query, schema: {type: string, enum: [1m, 1h, 1d]}}
      - {name: group_by, in: query, schema: {type: array, items: {type: string}}}
      - {name: project_ids, in: query, schema: {type: array, items: {type: string}}}
      - {name: user_ids, in: query, schema: {type: array, items: {type: string}}}
      - {name: api_key_ids, in: query, schema: {type: array, items: {type: string}}}
      - {name: models, in: query, schema: {type: array, items: {type: string}}}
      - {name: limit, in: query, schema: {type: integer}}
      - {name: page, in: query, schema: {type: string}}
    responses:
      200: {description: "`{object: page, data: [bucket], has_more, next_page}`"}
      400: {description: Invalid parameters.}
    """
    call = await admin_call(deps, request, write=False)
    window = Window.of(request, WIDTHS, LIMITS)
    groups = _groups(request, GROUPS)
    filters = {column: _list_param(request, param) for param, column in FILTERS.items()}
    # A usage report tolerates replica lag (the ledger itself is written in batches).
    rows = await call.runtime.db.read(
        lambda db: store.usage_buckets(
            db,
            organization_id=call.organization_id,
            start=window.since,
            stop=window.until,
            width=window.width,
            groups=groups,
            filters=filters,
            hourly=window.hourly,
        )
    )
    by_bucket: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_bucket.setdefault(int(row["bucket"]), []).append(_result(dict(row), groups))
    return JSON(window.page(by_bucket))


COST_GROUPS = ("project_id", "line_item", "api_key_id")
COST_FILTERS = {"project_ids": "project_id", "api_key_ids": "api_key_id"}
LINE_ITEMS = (("input", "input"), ("cached input", "cached_input"), ("output", "output"))


def _cost(value: Any, groups: list[str], row: asyncpg.Record) -> dict[str, Any]:
    return {
        "object": "organization.costs.result",
        "amount": {"value": pricing.usd(value), "currency": "usd"},
        "line_item": None,
        "project_id": row["project_id"] if "project_id" in groups else None,
        "api_key_id": row["api_key_id"] if "api_key_id" in groups else None,
        "quantity": None,
        "quantity_unit": None,
    }


async def costs(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Costs (OpenAI's costs API shape)
    description: >-
      What the organization's model calls cost, per day: each call's cost is recorded at
      the price in force when it was made (`/v1/organization/model_prices`, a Jan
      extension), so a later price change does not rewrite it; models without a price
      cost nothing. With `group_by=line_item`, one result per model and token kind
      (`<model>, input` for uncached input tokens, `<model>, cached input`,
      `<model>, output`) with the tokens as `quantity` (`quantity_unit: tokens`).
    tags: [admin]
    parameters:
      - name: start_time
        in: query
        required: true
        schema: {type: integer, minimum: 0, maximum: 253402300799}
      - {name: end_time, in: query, schema: {type: integer, minimum: 0, maximum: 253402300799}}
      - {name: bucket_width, in: query, schema: {type: string, enum: [1d]}}
      - name: group_by
        in: query
        schema: {type: array, items: {type: string, enum: [project_id, line_item, api_key_id]}}
      - {name: project_ids, in: query, schema: {type: array, items: {type: string}}}
      - {name: api_key_ids, in: query, schema: {type: array, items: {type: string}}}
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 180}}
      - {name: page, in: query, schema: {type: string}}
    responses:
      200:
        description: "`{object: page, data: [bucket of organization.costs.result], has_more,
          next_page}`"
      400: {description: Invalid parameters.}
    """
    call = await admin_call(deps, request, write=False)
    window = Window.of(request, COST_WIDTHS, COST_LIMITS)
    groups = _groups(request, COST_GROUPS)
    by_line = "line_item" in groups
    columns = [g for g in groups if g != "line_item"] + (["model"] if by_line else [])
    filters = {column: _list_param(request, param) for param, column in COST_FILTERS.items()}
    rows = await call.runtime.db.read(
        lambda db: store.cost_buckets(
            db,
            organization_id=call.organization_id,
            start=window.since,
            stop=window.until,
            width=window.width,
            groups=columns,
            filters=filters,
        )
    )
    by_bucket: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        results = by_bucket.setdefault(int(row["bucket"]), [])
        if not by_line:
            results.append(_cost(row["cost"], groups, row))
            continue
        for label, kind in LINE_ITEMS:
            quantity = int(row[f"{kind}_tokens"])
            if not quantity and not row[f"{kind}_cost"]:
                continue
            result = _cost(row[f"{kind}_cost"], groups, row)
            result["line_item"] = f"{row['model']}, {label}"
            result["quantity"] = quantity
            result["quantity_unit"] = "tokens"
            results.append(result)
    return JSON(window.page(by_bucket))


ROUTES: list[Operation[AdminDeps]] = [
    Operation("GET", "/v1/organization/usage/completions", usage_completions),
    Operation("GET", "/v1/organization/costs", costs),
]
