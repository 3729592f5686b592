"""The whole app over ASGI with the chat area's fake upstream (``FakeUpstream``, whose own
answers conform) as its built-in model server."""

from __future__ import annotations

from tests.chat.conftest import builtin, settings, upstreams

__all__ = ["builtin", "settings", "upstreams"]
