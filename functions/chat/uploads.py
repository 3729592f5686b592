"""Multipart uploads (audio to transcribe, images to edit), streamed to the model server as
they arrive: only as much is read first as it takes to find the ``model`` field, which
says where the upload goes. The SDKs send their fields before the file, so that is a few
hundred bytes; a client that sends the file first has it held in memory until the field
comes (bounded by ``JAN_MAX_BODY_BYTES``, like every body)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from starlette.requests import Request

from functions.common import errors
from functions.services.inference.bodies import Upload

_BOUNDARY = re.compile(r'boundary="?([^";,]+)"?', re.IGNORECASE)
_NAME = re.compile(rb'\bname="([^"]*)"', re.IGNORECASE)
_MAX_MODEL_BYTES = 1024


class _ModelField:
    """Finds the ``model`` field in a multipart body fed a chunk at a time, looking at
    each byte a bounded number of times."""

    def __init__(self, boundary: bytes) -> None:
        self.delimiter = b"--" + boundary
        self.buffer = bytearray()
        self.at = 0  # where the next part's delimiter is looked for

    def feed(self, chunk: bytes) -> str | None:
        self.buffer += chunk
        buffer, delimiter = self.buffer, self.delimiter
        while True:
            start = buffer.find(delimiter, self.at)
            if start < 0:
                self.at = max(self.at, len(buffer) - len(delimiter))
                return None
            head_end = buffer.find(b"\r\n\r\n", start)
            if head_end < 0:
                return None  # the part's headers are not all here yet
            head = bytes(buffer[start:head_end])
            name = _NAME.search(head)
            if name is not None and name.group(1) == b"model" and b"filename=" not in head:
                value_end = buffer.find(b"\r\n" + delimiter, head_end + 4)
                if value_end < 0:
                    if len(buffer) - head_end > _MAX_MODEL_BYTES:
                        raise errors.InvalidRequest("'model' is too long.", param="model")
                    return None
                try:
                    return bytes(buffer[head_end + 4 : value_end]).decode()
                except UnicodeDecodeError:
                    raise errors.InvalidRequest("'model' is not UTF-8.", param="model") from None
            self.at = head_end + 4


async def open_upload(request: Request) -> tuple[str, Upload]:
    """The upload's ``model`` and the upload itself (what was read, then the rest)."""
    content_type = request.headers.get("content-type", "")
    boundary = _BOUNDARY.search(content_type)
    if not content_type.lower().startswith("multipart/form-data") or boundary is None:
        raise errors.InvalidRequest("The request body must be multipart/form-data.")
    finder = _ModelField(boundary.group(1).encode("latin-1"))
    stream: AsyncIterator[bytes] = request.stream()
    model = None
    async for chunk in stream:
        model = finder.feed(chunk)
        if model is not None:
            break
    if not model:
        raise errors.InvalidRequest("Missing required parameter: 'model'.", param="model")
    length = request.headers.get("content-length")
    size = int(length) if length is not None and length.isdigit() else None
    return model, Upload(bytes(finder.buffer), stream, content_type, size)
