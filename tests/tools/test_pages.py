"""Page fetching against local pages: Markdown, redirects, caps, timeouts and SSRF refusals."""

from __future__ import annotations

import asyncio

import pytest

from tests.tools.conftest import MakeBox


async def test_html_becomes_markdown_without_page_chrome(make_box: MakeBox, site: str) -> None:
    box, principal = await make_box()
    result = await box.call(principal, "fetch_webpage", {"url": f"{site}/article"})
    assert not result.is_error, result.text
    assert result.structured is not None
    content = result.structured["content"]
    assert content.startswith("# Server-side tools")
    assert "**web search**" in content
    assert f"[page fetching]({site}/docs/fetch)" in content  # links made absolute
    assert "- google_search\n- fetch_webpage" in content
    for noise in ("alert(1)", "color:red", "About", "© Jan"):
        assert noise not in content
    assert result.structured["title"] == "Jan tools"
    assert result.structured["format"] == "markdown"
    assert result.text.startswith(f"Title: Jan tools\nURL: {site}/article\n\n# Server-side")


async def test_scrape_gives_text_unless_markdown_is_asked_for(make_box: MakeBox, site: str) -> None:
    box, principal = await make_box()
    plain = await box.call(principal, "scrape", {"url": f"{site}/article"})
    assert plain.structured is not None and plain.structured["format"] == "text"
    assert "Server-side tools\nJan runs" in plain.structured["content"]
    assert "**" not in plain.structured["content"]
    marked = await box.call(
        principal, "scrape", {"url": f"{site}/article", "includeMarkdown": True}
    )
    assert marked.structured is not None and "**web search**" in marked.structured["content"]


async def test_redirects_are_followed_hop_by_hop(make_box: MakeBox, site: str) -> None:
    box, principal = await make_box()
    result = await box.call(principal, "fetch_webpage", {"url": f"{site}/hop/3"})
    assert not result.is_error, result.text
    assert result.structured is not None
    assert result.structured["final_url"] == f"{site}/article"
    too_many = await box.call(principal, "fetch_webpage", {"url": f"{site}/hop/9"})
    assert too_many.is_error and "Too many redirects" in too_many.text


async def test_huge_page_is_capped(make_box: MakeBox, site: str) -> None:
    box, principal = await make_box(jan_tool_result_max_chars=200_000)
    result = await box.call(principal, "scrape", {"url": f"{site}/huge"})
    assert not result.is_error
    assert result.structured is not None and result.structured["truncated"] is True
    assert result.structured["content"].count("x") == 64 * 1024  # jan_fetch_max_bytes
    assert result.text.endswith("[output truncated]")


async def test_result_is_cut_to_the_size_cap(make_box: MakeBox, site: str) -> None:
    box, principal = await make_box(jan_tool_result_max_chars=1000)
    result = await box.call(principal, "scrape", {"url": f"{site}/huge"})
    assert len(result.text) == 1000 and result.text.endswith("[output truncated]")
    assert result.structured is not None and len(result.structured["content"]) == 1000


async def test_slow_page_times_out_as_a_tool_error(make_box: MakeBox, site: str) -> None:
    box, principal = await make_box(jan_tool_timeout_seconds=0.5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await box.call(principal, "fetch_webpage", {"url": f"{site}/slow"})
    assert result.is_error and "timed out after 0.5 seconds" in result.text
    assert loop.time() - started < 2


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
        "http://10.0.0.7/",
        "http://[::1]:9/",
        "http://[::ffff:192.168.0.1]/",
        "http://0.0.0.0:9/",
        "http://127.0.0.2:9/",  # loopback, though not the allow-listed address
    ],
)
async def test_redirect_to_a_private_address_is_refused(
    make_box: MakeBox, site: str, target: str
) -> None:
    box, principal = await make_box(jan_fetch_allowed_hosts=("127.0.0.1/32",))
    result = await box.call(principal, "fetch_webpage", {"url": f"{site}/to?url={target}"})
    assert result.is_error
    assert "private or reserved address" in result.text


async def test_loopback_is_refused_unless_allow_listed(make_box: MakeBox, site: str) -> None:
    box, principal = await make_box(jan_fetch_allowed_hosts=())
    result = await box.call(principal, "fetch_webpage", {"url": f"{site}/article"})
    assert result.is_error and "private or reserved address (127.0.0.1)" in result.text


async def test_bad_urls_and_content_are_tool_errors(make_box: MakeBox, site: str) -> None:
    box, principal = await make_box()
    cases = {
        "file:///etc/passwd": "Only http and https",
        "http://user:pw@127.0.0.1/": "credentials",
        f"{site}/image": "image/png",
        f"{site}/missing": "HTTP 404",
        "http://no-such-host.invalid/": "Could not resolve",
    }
    for url, expected in cases.items():
        result = await box.call(principal, "fetch_webpage", {"url": url})
        assert result.is_error and expected in result.text, (url, result.text)
    missing = await box.call(principal, "fetch_webpage", {})
    assert missing.is_error and "Invalid argument url" in missing.text
