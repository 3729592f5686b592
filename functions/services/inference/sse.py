"""Server-sent events from an upstream: framed into complete events, passed through.

The relay forwards the upstream's bytes as they came, cut only at event boundaries (so
an error event of ours can always follow cleanly). Only the few events that matter are
looked at — the one carrying non-null ``"usage"`` (to read the token counts), an
``"error"``, the ``[DONE]`` marker — found by a scan of each block for each (three
literal-prefix searches in C: one alternation regex is several times slower on a long
block); everything before the first of them goes out untouched, without splitting or
decoding.
The usage-only final chunk is dropped when the gateway asked for usage on the client's
behalf.

Framing looks at each byte once: a read that ends on an event boundary (the usual case)
is passed on as it is; the reads of an event not complete yet wait, unsearched, until
one brings its end, and are joined once then. An event still without its end past
``max_event`` bytes (``JAN_UPSTREAM_MAX_EVENT_BYTES``) stops the stream
(``failures.TooLarge``), so an upstream cannot make the gateway buffer or rescan without
bound.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from functions.services.inference.failures import TooLarge

DONE = b"[DONE]"
DONE_EVENT = b"data: [DONE]\n\n"
MAX_EVENT_BYTES = 1024 * 1024  # JAN_UPSTREAM_MAX_EVENT_BYTES' default
# What makes an event worth a look; a false hit (the word in a model's text) only costs
# decoding that event.
_USAGE = re.compile(rb'"usage"\s*:\s*\{')  # not the `"usage":null` of every chunk
_ERROR = re.compile(rb'"error"')


def first_notable(data: bytes) -> int:
    """Where the first notable thing in ``data`` starts, or -1."""
    end = len(data)
    found = _USAGE.search(data)
    if found is not None:
        end = found.start()
    found = _ERROR.search(data, 0, end)
    if found is not None:
        end = found.start()
    done = data.find(DONE, 0, end)
    if done >= 0:
        return done
    return end if end < len(data) else -1


class EventSplitter:
    """Incremental SSE framing: feed raw bytes, get the complete events among them (one
    block of bytes ending with a blank line, or b""); the rest waits for the next read.
    Raises ``TooLarge`` when the bytes waiting for an event's end exceed ``max_event``.

    Each read is searched once, alone: the bytes already waiting hold no boundary (else
    they would have gone out), so only a boundary that starts on their last byte needs a
    look at them. They are kept as the reads that brought them and joined once, when
    their event completes."""

    __slots__ = ("_buf", "_cr", "_more", "_size", "max_event")

    def __init__(self, max_event: int = MAX_EVENT_BYTES) -> None:
        self._buf = b""  # the first read of an unfinished event, if any
        self._more: list[bytes] | None = None  # its further reads, if any
        self._size = 0  # how many bytes wait, while there are further reads
        self._cr = False  # the last read ended with b"\r", held back (CRLF framing)
        self.max_event = max_event

    def feed(self, data: bytes) -> bytes:
        if self._cr or b"\r" in data:  # CRLF framing (rare): normalise so boundaries are b"\n\n"
            data = self._normalise(data)
        cut = data.rfind(b"\n\n")
        buf = self._buf
        if not buf:  # the usual case: nothing waiting
            if cut < 0:
                rest, block = data, b""
            else:
                cut += 2
                if cut == len(data):
                    return data
                rest, block = data[cut:], data[:cut]
        else:
            more = self._more
            if cut >= 0:
                cut += 2
            elif data[:1] == b"\n" and (more[-1] if more else buf)[-1:] == b"\n":
                cut = 1  # a boundary across two reads
            else:
                if data:  # (never an empty part: the last part's last byte matters)
                    size = (self._size if more else len(buf)) + len(data)
                    if size > self.max_event:
                        raise TooLarge("event", self.max_event)
                    if more is None:
                        self._more = [data]
                    else:
                        more.append(data)
                    self._size = size
                return b""
            head = data[:cut] if cut < len(data) else data
            if more is None:
                block = buf + head
            else:
                more.append(head)
                block = b"".join((buf, *more))
                self._more = None
            rest = data[cut:]
        if len(rest) > self.max_event:
            raise TooLarge("event", self.max_event)
        self._buf = rest
        return block

    def _normalise(self, data: bytes) -> bytes:
        if self._cr:
            data = b"\r" + data
            self._cr = False
        if data.endswith(b"\r"):  # its b"\n" may come with the next read
            data = data[:-1]
            self._cr = True
        return data.replace(b"\r\n", b"\n")

    @property
    def pending(self) -> bytes:
        return b"".join((self._buf, *(self._more or ())))


def has_data(block: bytes) -> bool:
    """Whether a block of complete events carries a data field (comments alone do not)."""
    return block.startswith(b"data:") or b"\ndata:" in block


def payload_of(event: bytes) -> bytes | None:
    """The data of one event (its ``data:`` lines joined), None when it has none."""
    if event.startswith(b"data:") and b"\n" not in event:  # the common case
        return event[6:] if event[5:6] == b" " else event[5:]
    lines = [
        line[6:] if line[5:6] == b" " else line[5:]
        for line in event.split(b"\n")
        if line.startswith(b"data:")
    ]
    return b"\n".join(lines) if lines else None


def payloads(block: bytes) -> list[bytes]:
    """The data payloads of a block of complete events (for callers that decode them)."""
    out = []
    for event in block.split(b"\n\n"):
        payload = payload_of(event) if event else None
        if payload is not None:
            out.append(payload)
    return out


class StreamTally:
    """Watches the events of one stream: usage, errors, the end marker."""

    __slots__ = ("done", "error", "keep_usage_chunk", "usage")

    def __init__(self, *, keep_usage_chunk: bool) -> None:
        self.keep_usage_chunk = keep_usage_chunk
        self.usage: dict[str, Any] | None = None
        self.error = False
        self.done = False

    def render(self, block: bytes) -> bytes:
        """The bytes to send the client for a block of complete events (may be empty).
        Nothing after ``[DONE]`` is sent."""
        found = first_notable(block)
        if found < 0:
            return block
        boundary = block.rfind(b"\n\n", 0, found)
        start = boundary + 2 if boundary >= 0 else 0
        out = [block[:start]]
        for event in block[start:].split(b"\n\n"):
            if not event:
                continue
            payload = payload_of(event)
            if payload is not None:
                if payload == DONE:
                    self.done = True
                    out.append(DONE_EVENT)
                    break
                if first_notable(payload) >= 0 and not self._inspect(payload):
                    continue
            out.append(event + b"\n\n")
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
