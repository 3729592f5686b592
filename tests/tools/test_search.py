"""google_search through local stand-ins for Serper and SearXNG speaking their APIs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.tools.conftest import MakeBox
from tests.tools.fakes import SERPER_KEY, FakeSearxng, FakeSerper
from tests.tools.http_server import serve

ALL_ARGS: dict[str, Any] = {
    "q": "jan server",
    "gl": "de",
    "hl": "en",
    "location": "Berlin, Germany",
    "num": 3,
    "page": 2,
    "tbs": "qdr:w",
    "autocorrect": False,
}


@pytest.fixture
async def searxng() -> AsyncIterator[tuple[FakeSearxng, str]]:
    fake = FakeSearxng()
    async with serve(fake.app) as base:
        yield fake, base


async def test_serper_gets_every_argument_and_the_key(
    make_box: MakeBox, serper: tuple[FakeSerper, str]
) -> None:
    fake, base = serper
    box, principal = await make_box(serper_url=base, serper_api_key=SERPER_KEY)
    result = await box.call(principal, "google_search", ALL_ARGS)
    assert not result.is_error, result.text
    headers, body = fake.requests[0]
    assert body == ALL_ARGS  # tbs included: the original dropped it
    assert headers["x-api-key"] == SERPER_KEY
    assert result.structured is not None
    assert result.structured["provider"] == "serper"
    assert result.structured["results"][0] == {
        "position": 1,
        "title": "Jan Server",
        "link": "https://jan.ai/server",
        "snippet": "Self-hosted OpenAI-compatible platform.",
        "date": "Jan 2, 2026",
    }
    assert result.structured["answer_box"] == {"answer": "Jan Server is self-hosted."}
    assert result.text.startswith("Answer: Jan Server is self-hosted.")
    assert "1. Jan Server (Jan 2, 2026)\n   https://jan.ai/server" in result.text


async def test_only_given_arguments_are_sent(
    make_box: MakeBox, serper: tuple[FakeSerper, str]
) -> None:
    fake, base = serper
    box, principal = await make_box(serper_url=base, serper_api_key=SERPER_KEY)
    await box.call(principal, "google_search", {"q": "just this"})
    assert fake.requests[0][1] == {"q": "just this"}


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (500, "search provider failed (HTTP 500)"),
        (429, "rate limiting"),
        (403, "refused this server's credentials"),
    ],
)
async def test_provider_failures_are_tool_errors(
    make_box: MakeBox, serper: tuple[FakeSerper, str], status: int, message: str
) -> None:
    fake, base = serper
    fake.fail_with = status
    box, principal = await make_box(serper_url=base, serper_api_key=SERPER_KEY)
    result = await box.call(principal, "google_search", {"q": "x"})
    assert result.is_error and message in result.text
    assert SERPER_KEY not in result.text


async def test_unreachable_or_unconfigured_provider_is_a_tool_error(make_box: MakeBox) -> None:
    box, principal = await make_box(serper_url="http://127.0.0.1:9", serper_api_key=SERPER_KEY)
    down = await box.call(principal, "google_search", {"q": "x"})
    assert down.is_error and "could not be reached" in down.text
    box, principal = await make_box(serper_api_key=None, searxng_url=None)
    unset = await box.call(principal, "google_search", {"q": "x"})
    assert unset.is_error and "not configured" in unset.text


async def test_searxng_is_used_when_configured(
    make_box: MakeBox, searxng: tuple[FakeSearxng, str], serper: tuple[FakeSerper, str]
) -> None:
    fake, base = searxng
    box, principal = await make_box(
        searxng_url=base, serper_url=serper[1], serper_api_key=SERPER_KEY
    )
    result = await box.call(principal, "google_search", ALL_ARGS)
    assert not result.is_error, result.text
    assert serper[0].requests == []
    assert fake.queries == [
        {
            "q": "jan server",
            "format": "json",
            "pageno": "2",
            "language": "en-DE",
            "time_range": "week",
        }
    ]
    assert result.structured is not None and result.structured["provider"] == "searxng"
    assert [r["link"] for r in result.structured["results"]] == [
        "https://example.org/1",
        "https://example.org/2",
        "https://example.org/3",
    ]  # num=3 applied here: SearXNG has no result-count parameter
    assert result.structured["results"][0]["date"] == "2026-01-02T00:00:00"


async def test_bad_arguments_are_tool_errors(make_box: MakeBox) -> None:
    box, principal = await make_box(serper_api_key=SERPER_KEY)
    for args, where in (({}, "q"), ({"q": "x", "num": 0}, "num"), ("not json", "JSON")):
        result = await box.call(principal, "google_search", args)
        assert result.is_error and where in result.text, result.text
