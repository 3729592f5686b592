"""Server-sent events from an upstream: split into events, read usage, re-frame.

The router passes each event's ``data`` through byte for byte; only events that carry
``"usage"`` are decoded (to read the token counts), and the usage-only final chunk is
dropped when the gateway asked for usage on the client's behalf.
"""

from __future__ import annotations

from typing import Any

import orjson

DONE = b"[DONE]"
DONE_EVENT = b"data: [DONE]\n\n"


class EventSplitter:
    """Incremental SSE parser: feed raw bytes, get the data payloads of complete events."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf + data if self._buf else data
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        if b"\n\n" not in buf:
            self._buf = buf
            return []
        *events, self._buf = buf.split(b"\n\n")
        out = []
        for event in events:
            if event.startswith(b"data:") and b"\n" not in event:  # the common case
                out.append(event[6:] if event[5:6] == b" " else event[5:])
                continue
            lines = [
                line[6:] if line[5:6] == b" " else line[5:]
                for line in event.split(b"\n")
                if line.startswith(b"data:")
            ]
            if lines:
                out.append(b"\n".join(lines))
        return out

    @property
    def pending(self) -> bytes:
        return self._buf


class StreamTally:
    """Watches the payloads of one stream: usage, errors, the end marker."""

    __slots__ = ("done", "error", "keep_usage_chunk", "usage")

    def __init__(self, *, keep_usage_chunk: bool) -> None:
        self.keep_usage_chunk = keep_usage_chunk
        self.usage: dict[str, Any] | None = None
        self.error = False
        self.done = False

    def render(self, payloads: list[bytes]) -> bytes:
        """The bytes to send the client for these payloads (may be empty)."""
        out = []
        for payload in payloads:
            if payload == DONE:
                self.done = True
                out.append(DONE_EVENT)
                continue
            # Decode only events that may carry usage or an error (rare: the last ones).
            interesting = b'"error"' in payload or (
                b'"usage"' in payload and b'"usage":null' not in payload
            )
            if interesting and not self._inspect(payload):
                continue
            out.append(b"data: " + payload + b"\n\n")
        return b"".join(out)

    def _inspect(self, payload: bytes) -> bool:
        """Read usage/error from an event; False when the event is not for the client."""
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return True
        if not isinstance(chunk, dict):
            return True
        if chunk.get("error") is not None:
            self.error = True
            return True
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
            if not self.keep_usage_chunk and not chunk.get("choices"):
                return False
        return True


def error_event(body: dict[str, Any]) -> bytes:
    """An OpenAI-style error event (the SDKs raise on ``{"error": …}`` in a stream)."""
    return b"data: " + orjson.dumps(body) + b"\n\n"
