"""Rate limits and budgets: OpenAI's project rate limits per model, with Jan's organization
defaults and limits per API key, user and service account; OpenAI's hard spend limits and
Jan's token budgets (organization, project, API key, user; a day or a month); enforced on
every model call and held across instances.

- ``rules``: definitions → the counters a call must fit (its ``Plan``);
- ``limiter``: admission and reconciliation (``Limiter``, ``Ticket``), memory or shared
  mode, and the slack bound (its docstring);
- ``shared``: the shared stores (Redis, PostgreSQL);
- ``store``: the SQL of the definitions; ``definitions``: the admin side.

``Inference.call`` admits every call (chat completions, completions, embeddings, and each
round of a response) and ``LedgerEntry.write`` settles it, streamed or not.
"""

from functions.services.limits.limiter import ADMITTED, Limiter, Ticket

__all__ = ["ADMITTED", "Limiter", "Ticket", "current_headers", "current_raw_headers"]


def current_headers() -> dict[str, str]:
    """The ``x-ratelimit-*`` headers of the current request's last admitted model call
    (none when no limit applied)."""
    ticket = ADMITTED.get()
    return ticket.headers() if ticket is not None else {}


def current_raw_headers() -> list[tuple[bytes, bytes]]:
    """The same, as ASGI header pairs (encoded once, for the hot path)."""
    ticket = ADMITTED.get()
    return ticket.raw_headers() if ticket is not None else []
