"""Rate limits as the Administration API shows and takes them: the ``project.rate_limit``
ID of a model, the body fields of a change, and the ``rate_limits`` field of keys, users
and service accounts (a Jan extension); likewise the ``token_budgets`` of keys and users
(tokens a calendar day and month, UTC)."""

from __future__ import annotations

import re
from typing import Any

from functions.common.db import Executor
from functions.common.errors import InvalidRequest
from functions.services.limits import store
from functions.services.limits.rules import FIELDS, UNSET

# OpenAI fields Jan Server does not offer: images and audio count as requests and tokens
# like any call, and there is no Batch API.
NOT_APPLICABLE = (
    "max_images_per_1_minute",
    "max_audio_megabytes_per_1_minute",
    "batch_1_day_max_input_tokens",
)
MAX_VALUE = 10**15
# The token budgets' fields, and the period of each.
TOKEN_BUDGET_FIELDS = {"tokens_per_day": "day", "tokens_per_month": "month"}
MAX_CONCURRENT = 1_000_000
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_HEX = re.compile(r"[0-9a-f]{2}")


def rate_limit_id(model: str) -> str:
    """``rl-`` and the model's name (as OpenAI's ``rl-ada``), any character outside
    ``A-Za-z0-9._-`` written ``~xx`` per UTF-8 byte, so the ID is one path segment."""
    return "rl-" + _UNSAFE.sub(lambda m: "".join(f"~{b:02x}" for b in m[0].encode()), model)


def model_of(rate_limit_id_: str) -> str | None:
    """The model of a rate-limit ID; None when it is not one ``rate_limit_id`` makes."""
    if not rate_limit_id_.startswith("rl-") or len(rate_limit_id_) > 3 + 3 * 4 * 256:
        return None
    body, raw, i = rate_limit_id_[3:], bytearray(), 0
    while i < len(body):
        if body[i] == "~":
            pair = body[i + 1 : i + 3]
            if not _HEX.fullmatch(pair):
                return None
            raw.append(int(pair, 16))
            i += 3
        else:
            raw += body[i].encode()
            i += 1
    try:
        model = raw.decode()
    except UnicodeDecodeError:
        return None
    if not model or len(model) > 256 or rate_limit_id(model) != rate_limit_id_:
        return None  # not canonical (``~41`` for ``A``), or too long
    return model


def limit_changes(body: dict[str, Any], *, extra: tuple[str, ...] = ()) -> dict[str, int | None]:
    """The limits a change sets: each an integer ≥ 0 (0: no limit) or null (not set).
    Fields of OpenAI's that do not apply here, and unknown fields, are refused."""
    for name in NOT_APPLICABLE:
        if name in body:
            raise InvalidRequest(
                f"'{name}' does not apply: Jan Server serves no image, audio or batch endpoints.",
                param=name,
            )
    known = set(FIELDS) | set(extra)
    for name in body:
        if name not in known:
            raise InvalidRequest(f"Unrecognized request argument supplied: {name}", param=name)
    changes: dict[str, int | None] = {}
    for name in FIELDS:
        if name not in body:
            continue
        value = body[name]
        top = MAX_CONCURRENT if name == "max_concurrent_requests" else MAX_VALUE
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top
        ):
            raise InvalidRequest(
                f"'{name}' must be an integer from 0 (no limit) to {top}, or null.", param=name
            )
        changes[name] = value
    return changes


def budget_changes(body: dict[str, Any]) -> dict[str, int | None]:
    """The token budgets a change sets, by period: each an integer ≥ 0 or null (0 and null:
    none). Unknown fields are refused."""
    for name in body:
        if name not in TOKEN_BUDGET_FIELDS:
            raise InvalidRequest(f"Unrecognized request argument supplied: {name}", param=name)
    changes: dict[str, int | None] = {}
    for name, period in TOKEN_BUDGET_FIELDS.items():
        if name not in body:
            continue
        value = body[name]
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_VALUE
        ):
            raise InvalidRequest(
                f"'{name}' must be an integer from 0 (no budget) to {MAX_VALUE}, or null.",
                param=name,
            )
        changes[period] = value or None
    return changes


def token_budgets(by_period: dict[str, int]) -> dict[str, int]:
    """As the API shows them: both fields, 0 for none."""
    return {name: by_period.get(period, 0) for name, period in TOKEN_BUDGET_FIELDS.items()}


async def attach(
    ex: Executor,
    *,
    organization_id: str,
    column: store.Subject,
    objects: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Add each object's ``rate_limits`` (0: no limit of that kind) to it, in place, and
    for keys and users their ``token_budgets``."""
    ids = [o["id"] for o in objects]
    found = await store.subject_limits(ex, organization_id=organization_id, column=column, ids=ids)
    budgets: dict[str, dict[str, int]] | None = None
    if column == "api_key_id" or column == "user_id":
        budgets = await store.token_budgets_of(
            ex, organization_id=organization_id, column=column, ids=ids
        )
    for obj in objects:
        obj["rate_limits"] = found.get(obj["id"], UNSET).effective()
        if budgets is not None:
            obj["token_budgets"] = token_budgets(budgets.get(obj["id"], {}))
    return objects
