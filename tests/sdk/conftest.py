"""The whole app on a real port with the chat area's fake model server (``FakeUpstream``:
chat, audio, images, moderations, rerank, score, vLLM's ``/tokenize``) as its built-in one."""

from __future__ import annotations

from tests.chat.conftest import builtin, settings, upstreams

__all__ = ["builtin", "settings", "upstreams"]
