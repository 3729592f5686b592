"""``/openai/tokenize`` (vLLM's shape), through the real ASGI app and the real model."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import MODEL  # the app of `client` has a 1024-token context

pytestmark = pytest.mark.anyio

URL = "/openai/tokenize"
CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Name three colours, please."},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


async def tokenize(client: httpx.AsyncClient, **body: Any) -> Any:
    r = await client.post(URL, json={"model": MODEL, **body})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize(
    "messages",
    [CHAT, CHAT[1:], [*CHAT, {"role": "assistant", "content": "Red."}, CHAT[1]]],
    ids=["with-system", "default-system", "turns"],
)
async def test_a_chats_count_is_the_prompt_a_completion_evaluates(
    client: httpx.AsyncClient, messages: list[dict[str, str]]
) -> None:
    counted = await tokenize(client, messages=messages)
    assert counted["count"] == len(counted["tokens"]) > 0
    assert counted["max_model_len"] == 1024
    assert counted["token_strs"] is None
    done = await client.post(
        "/openai/v1/chat/completions",
        json={"model": MODEL, "messages": messages, "max_tokens": 1, "temperature": 0},
    )
    assert done.status_code == 200, done.text
    assert done.json()["usage"]["prompt_tokens"] == counted["count"]


async def test_tools_and_the_generation_prompt_count(client: httpx.AsyncClient) -> None:
    with_tools = await tokenize(client, messages=CHAT, tools=TOOLS)
    done = await client.post(
        "/openai/v1/chat/completions",
        json={"model": MODEL, "messages": CHAT, "tools": TOOLS, "max_tokens": 1},
    )
    assert done.status_code == 200, done.text
    assert done.json()["usage"]["prompt_tokens"] == with_tools["count"]
    plain = await tokenize(client, messages=CHAT)
    unopened = await tokenize(client, messages=CHAT, add_generation_prompt=False)
    assert plain["count"] > unopened["count"]
    assert plain["tokens"][: unopened["count"]] == unopened["tokens"]


async def test_a_plain_prompt_and_token_strings(client: httpx.AsyncClient) -> None:
    counted = await tokenize(client, prompt="Hello world", return_token_strs=True)
    assert "".join(counted["token_strs"]).endswith("Hello world")
    bare = await tokenize(client, prompt="Hello world", add_special_tokens=False)
    assert bare["count"] <= counted["count"]
    assert counted["tokens"][-bare["count"] :] == bare["tokens"]


async def test_refusals(client: httpx.AsyncClient) -> None:
    for body, status, param in (
        ({"model": "gpt-9", "prompt": "x"}, 404, "model"),
        ({"model": MODEL}, 400, "messages"),
        ({"model": MODEL, "prompt": "x", "messages": CHAT}, 400, "messages"),
        ({"model": MODEL, "messages": [{"role": "user", "content": 5}]}, 400, None),
    ):
        r = await client.post(URL, json=body)
        assert r.status_code == status, (body, r.text)
        if param is not None:
            assert r.json()["error"]["param"] == param
