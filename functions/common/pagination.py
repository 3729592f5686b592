"""Cursor pagination as OpenAI's list endpoints do it: ``after`` (an object ID), ``limit``
(1 to 100, default 20), ``order`` (``asc``/``desc``), answered as ``{object: "list", data,
first_id, last_id, has_more}``.

One way for every list: read the query with ``Page.of(request)``, fetch ``page.fetch``
rows (one more than asked: that is how ``has_more`` is known), then ``page.answer(rows,
render)``. The SQL stays with the caller's store; ``page.comparison`` and ``page.direction``
are the two constant fragments a keyset query needs. A cursor that names nothing the
caller can see is a 400 (``page.unknown_cursor()``): an empty page would read as "no more".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from starlette.requests import Request

from functions.common.errors import InvalidRequest

Row = TypeVar("Row")
Order = Literal["asc", "desc"]
DEFAULT_LIMIT = 20
MAX_LIMIT = 100


@dataclass(frozen=True, slots=True)
class Page:
    after: str | None
    limit: int
    order: Order

    @classmethod
    def of(
        cls, request: Request, *, default_order: Order = "desc", default_limit: int = DEFAULT_LIMIT
    ) -> Page:
        """The page a list request asks for; 400 for a bad ``limit`` or ``order``."""
        return cls(
            after=request.query_params.get("after") or None,
            limit=limit_param(request, default=default_limit),
            order=order_param(request, default=default_order),
        )

    @property
    def fetch(self) -> int:
        """How many rows to read: one more than the page, to learn ``has_more``."""
        return self.limit + 1

    @property
    def comparison(self) -> str:
        """The keyset operator for rows after the cursor (constant SQL)."""
        return ">" if self.order == "asc" else "<"

    @property
    def direction(self) -> str:
        """``ORDER BY`` direction (constant SQL)."""
        return "ASC" if self.order == "asc" else "DESC"

    def split(self, rows: Sequence[Row]) -> tuple[list[Row], bool]:
        """The page's rows, and whether more follow (``rows`` were read with ``fetch``)."""
        return list(rows[: self.limit]), len(rows) > self.limit

    def answer(
        self, rows: Sequence[Row], render: Callable[[Row], dict[str, Any]], *, id_key: str = "id"
    ) -> dict[str, Any]:
        """OpenAI's list envelope for rows read with ``fetch``."""
        kept, more = self.split(rows)
        return list_page([render(r) for r in kept], has_more=more, id_key=id_key)

    def unknown_cursor(self, what: str, *, within: str | None = None) -> InvalidRequest:
        """The error for an ``after`` that names no ``what`` the caller can see: "No item 'x'
        to list after.", or with ``within`` (a list inside a parent) "No item 'x' in this
        conversation."."""
        where = f"in {within}" if within is not None else "to list after"
        return InvalidRequest(f"No {what} '{self.after}' {where}.", param="after")


def list_page(data: list[dict[str, Any]], *, has_more: bool, id_key: str = "id") -> dict[str, Any]:
    """OpenAI's list envelope."""
    return {
        "object": "list",
        "data": data,
        "first_id": data[0][id_key] if data else None,
        "last_id": data[-1][id_key] if data else None,
        "has_more": has_more,
    }


def limit_param(
    request: Request, *, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT, minimum: int = 1
) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest("limit must be an integer.", param="limit") from None
    if not minimum <= value <= maximum:
        raise InvalidRequest(f"limit must be between {minimum} and {maximum}.", param="limit")
    return value


def order_param(request: Request, *, default: Order = "desc") -> Order:
    value = request.query_params.get("order", default)
    if value == "asc":
        return "asc"
    if value == "desc":
        return "desc"
    raise InvalidRequest("order must be 'asc' or 'desc'.", param="order")
