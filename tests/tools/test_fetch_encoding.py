"""Compressed pages: decoded within the fetch cap, so a decompression bomb cannot inflate
the process (a small gzip body of zeros would otherwise expand to hundreds of MB)."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.tools.conftest import MakeBox
from tests.tools.http_server import serve

BOMB_INFLATED = 100 * 1024 * 1024  # 100 MB of one letter, about 100 KB gzipped
CAP = 64 * 1024  # tests/tools/conftest.py's jan_fetch_max_bytes
TEXT = "Jan fetches compressed pages too. " * 200


def _gzip_bomb() -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"x" * (1024 * 1024)
    parts = [packer.compress(block) for _ in range(BOMB_INFLATED // len(block))]
    return b"".join([*parts, packer.flush()])


def _packed(data: bytes, wbits: int) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return packer.compress(data) + packer.flush()


BOMB = _gzip_bomb()


async def _bomb(request: Request) -> Response:
    async def body() -> AsyncIterator[bytes]:
        for at in range(0, len(BOMB), 16 * 1024):  # sent in pieces, as a server streams it
            yield BOMB[at : at + 16 * 1024]

    headers = {"Content-Encoding": "gzip", "Content-Length": str(len(BOMB))}
    return StreamingResponse(body(), media_type="text/plain", headers=headers)


_ENCODED = {
    "gzip": _packed(TEXT.encode(), 16 + zlib.MAX_WBITS),
    "x-gzip": _packed(TEXT.encode(), 16 + zlib.MAX_WBITS),
    "deflate": _packed(TEXT.encode(), zlib.MAX_WBITS),  # zlib-wrapped, as the RFC says
    "raw-deflate": _packed(TEXT.encode(), -zlib.MAX_WBITS),  # what some servers send
}


async def _encoded(request: Request) -> Response:
    name = request.path_params["coding"]
    coding = "deflate" if name == "raw-deflate" else name
    return Response(_ENCODED[name], media_type="text/plain", headers={"Content-Encoding": coding})


async def _brotli(request: Request) -> Response:
    return Response(b"\x1b\x03", media_type="text/plain", headers={"Content-Encoding": "br"})


async def _corrupt(request: Request) -> Response:
    return Response(
        b"not gzip at all", media_type="text/plain", headers={"Content-Encoding": "gzip"}
    )


SITE = Starlette(
    routes=[
        Route("/bomb", _bomb),
        Route("/encoded/{coding}", _encoded),
        Route("/brotli", _brotli),
        Route("/corrupt", _corrupt),
    ]
)


@pytest.fixture
async def packed_site() -> AsyncIterator[str]:
    async with serve(SITE) as base:
        yield base


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/self/status")


async def test_gzip_bomb_is_inflated_only_up_to_the_cap(
    make_box: MakeBox, packed_site: str
) -> None:
    box, principal = await make_box(jan_tool_result_max_chars=200_000)
    assert len(BOMB) < 200 * 1024
    # VmHWM is the process's peak resident size; writing 5 to clear_refs resets it to the
    # current size, so the peak read afterwards is this call's.
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    result = await box.call(principal, "scrape", {"url": f"{packed_site}/bomb"})
    peak = _status_kib("VmHWM")
    assert not result.is_error, result.text
    assert result.structured is not None and result.structured["truncated"] is True
    assert result.structured["content"] == "x" * CAP + "\n\n[output truncated]"
    growth_mib = (peak - before) / 1024
    assert growth_mib < 8, f"peak RSS grew by {growth_mib:.1f} MiB fetching a {CAP} B page"


@pytest.mark.parametrize("coding", sorted(_ENCODED))
async def test_compressed_pages_are_decoded(
    make_box: MakeBox, packed_site: str, coding: str
) -> None:
    box, principal = await make_box()
    result = await box.call(principal, "scrape", {"url": f"{packed_site}/encoded/{coding}"})
    assert not result.is_error, result.text
    assert result.structured is not None
    assert result.structured["content"] == TEXT
    assert result.structured["truncated"] is False


async def test_unsupported_or_corrupt_encoding_is_a_tool_error(
    make_box: MakeBox, packed_site: str
) -> None:
    box, principal = await make_box()
    brotli = await box.call(principal, "scrape", {"url": f"{packed_site}/brotli"})
    assert brotli.is_error and "unsupported content encoding 'br'" in brotli.text
    corrupt = await box.call(principal, "scrape", {"url": f"{packed_site}/corrupt"})
    assert corrupt.is_error and "gzip encoding is corrupt" in corrupt.text
