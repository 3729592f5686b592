"""`GET /v1/organization/usage/completions`: the usage ledger in OpenAI's usage shape.

Time is cut into buckets of ``bucket_width`` (``1m``, ``1h``, ``1d``, aligned to UTC);
each bucket lists one result per group (``group_by`` any of project_id, user_id,
api_key_id, model) or one overall result, and empty buckets are listed too. ``page`` is
the start of the next bucket, from ``next_page``. Hour and day buckets are summed from the
hourly rollup (a few rows an hour however many requests, and kept when the per-request
rows' retention ends); minute buckets from the per-request rows.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from functions.admin import store
from functions.admin.call import AdminDeps, admin_call
from functions.common.errors import InvalidRequest
from functions.common.http import JSON
from functions.common.routing import Operation

WIDTHS = {"1m": 60, "1h": 3600, "1d": 86400}
LIMITS = {"1m": (60, 1440), "1h": (24, 168), "1d": (7, 31)}  # (default, maximum)
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
        "project_id": row.get("project_id") if "project_id" in groups else None,
        "user_id": row.get("user_id") if "user_id" in groups else None,
        "api_key_id": row.get("api_key_id") if "api_key_id" in groups else None,
        "model": row.get("model") if "model" in groups else None,
        "batch": None,
    }


async def usage_completions(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Completions usage (OpenAI's usage API shape)
    description: >
      `1h` and `1d` buckets are answered from the hourly rollup, so they count whole hours
      (a `start_time` or `end_time` inside an hour counts that hour) and outlive the
      per-request rows (`usage_detail` retention, `/v1/organization/data_retention`);
      `1m` buckets count the per-request rows.
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
    width_name = request.query_params.get("bucket_width", "1d")
    if width_name not in WIDTHS:
        raise InvalidRequest("'bucket_width' must be one of 1m, 1h, 1d.", param="bucket_width")
    width = WIDTHS[width_name]
    start = _int_param(request, "start_time", required=True)
    assert start is not None
    end = _int_param(request, "end_time")
    if end is None:
        end = int(time.time())
    if end <= start:
        raise InvalidRequest("'end_time' must be after 'start_time'.", param="end_time")
    default_limit, max_limit = LIMITS[width_name]
    limit = _int_param(request, "limit")
    if limit is None:
        limit = default_limit
    if not 1 <= limit <= max_limit:
        raise InvalidRequest(f"'limit' must be between 1 and {max_limit}.", param="limit")
    groups = _list_param(request, "group_by")
    if any(g not in GROUPS for g in groups):
        raise InvalidRequest(f"'group_by' accepts {', '.join(GROUPS)}.", param="group_by")
    groups = [g for g in GROUPS if g in groups]  # canonical order

    first = start - start % width
    page = request.query_params.get("page")
    if page is not None:
        # isascii: str.isdigit() also accepts digits such as '²' that int() refuses. A cursor
        # from this query lies before its end.
        cursor = int(page) if page.isascii() and page.isdigit() else -1
        if not first <= cursor < end or cursor % width:
            raise InvalidRequest("'page' is not a cursor from this query.", param="page")
        first = cursor
    count = min(limit, math.ceil((end - first) / width))
    stop = min(first + count * width, end)

    filters = {column: _list_param(request, param) for param, column in FILTERS.items()}
    # A usage report tolerates replica lag (the ledger itself is written in batches).
    rows = await call.runtime.db.read(
        lambda db: store.usage_buckets(
            db,
            organization_id=call.organization_id,
            start=datetime.fromtimestamp(max(first, start), UTC),
            stop=datetime.fromtimestamp(stop, UTC),
            width=width,
            groups=groups,
            filters=filters,
        )
    )
    by_bucket: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_bucket.setdefault(int(row["bucket"]), []).append(_result(dict(row), groups))
    data = [
        {
            "object": "bucket",
            "start_time": b,
            "end_time": b + width,
            "results": by_bucket.get(b, []),
        }
        for b in range(first, stop, width)
    ]
    has_more = stop < end
    return JSON(
        {
            "object": "page",
            "data": data,
            "has_more": has_more,
            "next_page": str(stop) if has_more else None,
        }
    )


ROUTES: list[Operation[AdminDeps]] = [
    Operation("GET", "/v1/organization/usage/completions", usage_completions),
]
