"""The playground in the browser, signed in with a project key: model output that tries to
run script runs nothing; Stop cancels the request up to the model; the Responses mode
shows each server-side tool call; conversations are listed and reopened; a guest can
sign in and chat; the system prompt, temperature and max tokens reach the model."""

from __future__ import annotations

import asyncio

from playwright.async_api import Page, expect

from tests.console.conftest import Console, screen
from tests.responses.upstream import Reply, ScriptedUpstream
from tests.tools.fakes import FakeSerper

HOSTILE = (
    'Here: <img src=x onerror="window.xssRan=1;alert(1)"> and '
    "<script>window.xssRan=2</script> then **bold**, `code`, "
    "[a link](javascript:window.xssRan=3) and [a real one](https://jan.ai/server).\n\n"
    "- <svg onload=window.xssRan=4>\n- item two"
)


async def send(page: Page, text: str) -> None:
    await page.get_by_role("textbox", name="Message").fill(text)
    await page.get_by_role("button", name="Send").click()


async def test_model_output_runs_nothing(console: Console, upstream: ScriptedUpstream) -> None:
    page = await console.open("#/playground")
    await console.sign_in(page, console.tenant.project_key)
    upstream.script.append(Reply(text=HOSTILE))
    await send(page, "Say something dangerous")
    answer = page.locator(".msg.assistant").last
    await expect(answer).to_contain_text("item two")
    await expect(answer.get_by_test_id("stats")).to_be_visible()
    # The markup arrived as text: shown literally, no element made from it.
    await expect(answer).to_contain_text('<img src=x onerror="window.xssRan=1;alert(1)">')
    await expect(answer).to_contain_text("<script>window.xssRan=2</script>")
    assert await answer.locator("img, script, svg, iframe").count() == 0
    assert await answer.locator(".md strong").inner_text() == "bold"
    links = answer.locator("a")
    assert await links.count() == 1  # the javascript: one is text
    assert await links.get_attribute("href") == "https://jan.ai/server"
    assert await links.get_attribute("rel") == "noopener noreferrer nofollow"
    await page.wait_for_timeout(300)
    assert await page.evaluate("window.xssRan") is None
    assert not console.errors  # no dialog, no page error
    assert not [m for m in console.console if m.startswith("error")], console.console
    await screen(page, "playground-markdown")


async def test_stop_cancels_the_stream(console: Console, upstream: ScriptedUpstream) -> None:
    page = await console.open()
    await console.sign_in(page, console.tenant.project_key)
    await expect(page.get_by_role("heading", name="Playground")).to_be_visible()
    words = " ".join(f"word{i}" for i in range(200))
    upstream.script.append(Reply(text=words, delay=0.05))
    await send(page, "Talk for a long time")
    answer = page.locator(".msg.assistant").last
    await expect(answer).to_contain_text("word3")
    await page.get_by_role("button", name="Stop").click()
    await expect(answer).to_contain_text("Stopped.")
    await expect(page.get_by_role("button", name="Send")).to_be_enabled()
    for _ in range(50):  # the gateway closed its upstream request too
        if upstream.streams_closed:
            break
        await asyncio.sleep(0.1)
    assert upstream.streams_closed == 1
    assert "word199" not in await answer.inner_text()


async def test_responses_tools_and_conversations(
    console: Console, upstream: ScriptedUpstream, serper: tuple[FakeSerper, str]
) -> None:
    page = await console.open("#/playground")
    await console.sign_in(page, console.tenant.project_key)
    await page.get_by_role("combobox", name="Mode", exact=True).select_option("responses")
    await page.get_by_role("checkbox", name="Web search").check()
    upstream.script.append(Reply(tool_calls=[("web_search", '{"q": "jan server"}')]))
    upstream.script.append(Reply(text="Jan Server is **self-hosted**."))
    await send(page, "What is Jan Server?")
    answer = page.locator(".msg.assistant").last
    await expect(answer).to_contain_text("Jan Server is self-hosted.")
    call = answer.get_by_test_id("tool-call")
    await expect(call).to_contain_text("web_search_call")
    await expect(call).to_contain_text("jan server")
    await call.locator("summary").click()
    await expect(call).to_contain_text("Self-hosted OpenAI-compatible platform")
    assert serper[0].requests  # the server ran the search
    await expect(answer.get_by_test_id("stats")).to_contain_text("output tokens")
    conversation = page.get_by_role("link", name="What is Jan Server?")
    await expect(conversation).to_be_visible()
    await screen(page, "playground-responses")

    # A new chat, then the conversation reopened: its messages and tool call are back.
    await page.get_by_role("link", name="New chat").click()
    await expect(page.locator(".msg")).to_have_count(0)
    await conversation.click()
    await expect(page.locator(".msg.user")).to_contain_text("What is Jan Server?")
    reopened = page.locator(".msg.assistant").last
    await expect(reopened).to_contain_text("Jan Server is self-hosted.")
    await expect(reopened.get_by_test_id("tool-call")).to_contain_text("jan server")
    # And it goes on, in the same conversation.
    await send(page, "Thanks")
    await expect(page.locator(".msg.assistant").last).to_contain_text("echo: Thanks")
    shown = [m.get("content") for m in upstream.requests[-1]["messages"]]
    assert "What is Jan Server?" in shown and shown[-1] == "Thanks"  # the history came along


async def test_guest_signs_in_and_chats(console: Console) -> None:
    page = await console.open()
    await page.get_by_role("button", name="Continue as a guest").click()
    await expect(page.get_by_role("heading", name="Playground")).to_be_visible()
    assert await page.evaluate("localStorage.length") == 0
    await send(page, "Hi")
    await expect(page.locator(".msg.assistant").last).to_contain_text("echo: Hi")
    await page.get_by_role("link", name="Tools").click()
    await expect(page.get_by_role("heading", name="Tools")).to_be_visible()
    await screen(page, "tools")
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("button", name="Continue as a guest")).to_be_visible()
    assert await page.evaluate("sessionStorage.length") == 0


async def test_system_prompt_temperature_and_max_tokens_reach_the_model(
    console: Console, upstream: ScriptedUpstream
) -> None:
    page = await console.open("#/playground")
    await console.sign_in(page, console.tenant.project_key)
    # Checked before sending: nothing goes out.
    await page.get_by_role("textbox", name="Temperature").fill("3")
    await send(page, "Too hot")
    await expect(page.get_by_text("Temperature must be a number from 0 to 2.")).to_be_visible()
    assert not upstream.requests
    await page.get_by_role("textbox", name="Temperature").fill("0.3")
    await page.get_by_role("textbox", name="Max tokens").fill("50")
    await page.get_by_role("textbox", name="System prompt").fill("Answer briefly.")
    await send(page, "Hello")
    await expect(page.locator(".msg.assistant").last).to_contain_text("echo: Hello")
    sent = upstream.requests[-1]
    assert sent["messages"][0] == {"role": "system", "content": "Answer briefly."}
    assert sent["temperature"] == 0.3
    assert 50 in (sent.get("max_tokens"), sent.get("max_completion_tokens"))
