"""The OpenAI surface, through the real ASGI app and the real model."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import EMBEDDING_MODEL, MODEL, sse_events

pytestmark = pytest.mark.anyio

HELLO = [{"role": "user", "content": "Say hello."}]


async def test_models_list_and_get(client: httpx.AsyncClient) -> None:
    listed = (await client.get("/openai/v1/models")).json()
    assert listed["object"] == "list"
    # The chat model first: a gateway's health probe asks the first model listed.
    assert [m["id"] for m in listed["data"]] == [MODEL, EMBEDDING_MODEL]
    assert {m["object"] for m in listed["data"]} == {"model"}
    assert listed["data"][1]["dimensions"] == 256

    embedding = await client.get(f"/openai/v1/models/{EMBEDDING_MODEL}")
    assert embedding.status_code == 200
    assert embedding.json()["id"] == EMBEDDING_MODEL

    one = await client.get(f"/openai/v1/models/{MODEL}")
    assert one.status_code == 200
    assert one.json()["id"] == MODEL

    missing = await client.get("/openai/v1/models/gpt-9")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"


async def test_chat_completion(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/openai/v1/chat/completions",
        json={"model": MODEL, "messages": HELLO, "max_tokens": 12, "temperature": 0},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == MODEL
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].strip()
    assert choice["finish_reason"] in {"stop", "length"}
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0
    assert 0 < usage["completion_tokens"] <= 12
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.parametrize("max_tokens", [5, 200])
async def test_streamed_chat_matches_and_reports_usage(
    client: httpx.AsyncClient, max_tokens: int
) -> None:
    request: dict[str, Any] = {
        "model": MODEL,
        "messages": HELLO,
        "max_completion_tokens": max_tokens,
        "temperature": 0,
    }
    whole = (await client.post("/openai/v1/chat/completions", json=request)).json()

    streamed = await client.post(
        "/openai/v1/chat/completions",
        json={**request, "stream": True, "stream_options": {"include_usage": True}},
    )
    assert streamed.status_code == 200
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = sse_events(streamed.text)
    assert events[-1] == "[DONE]"
    chunks, usage_chunk = events[:-2], events[-2]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == MODEL for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == whole["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == whole["usage"]


async def test_stream_without_usage_has_no_usage_chunk(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/openai/v1/chat/completions",
        json={"messages": HELLO, "max_tokens": 4, "stream": True},
    )
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    assert all(event == "[DONE]" or event["choices"] for event in events)


async def test_completions(client: httpx.AsyncClient) -> None:
    request = {"model": MODEL, "prompt": "1, 2, 3, 4,", "max_tokens": 8, "temperature": 0}
    whole = await client.post("/openai/v1/completions", json=request)
    assert whole.status_code == 200, whole.text
    body = whole.json()
    assert body["object"] == "text_completion"
    assert body["model"] == MODEL
    assert body["choices"][0]["text"].startswith(" 5")
    assert body["usage"]["completion_tokens"] == 8

    streamed = await client.post(
        "/openai/v1/completions",
        json={**request, "stream": True, "stream_options": {"include_usage": True}},
    )
    events = sse_events(streamed.text)
    assert events[-1] == "[DONE]"
    text = "".join(e["choices"][0]["text"] for e in events[:-2])
    assert text == body["choices"][0]["text"]
    assert events[-2]["usage"] == body["usage"]


async def test_stop_and_seed(client: httpx.AsyncClient) -> None:
    request = {"prompt": "1, 2, 3, 4,", "max_tokens": 20, "temperature": 0, "stop": [" 7"]}
    body = (await client.post("/openai/v1/completions", json=request)).json()
    assert body["choices"][0]["text"] == " 5, 6,"
    assert body["choices"][0]["finish_reason"] == "stop"

    sampled = {"messages": HELLO, "max_tokens": 16, "temperature": 1.0, "seed": 7}
    first = (await client.post("/openai/v1/chat/completions", json=sampled)).json()
    second = (await client.post("/openai/v1/chat/completions", json=sampled)).json()
    assert first["choices"][0]["message"] == second["choices"][0]["message"]


async def test_named_tool_choice_returns_a_tool_call(client: httpx.AsyncClient) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    response = await client.post(
        "/openai/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
            "tools": [tool],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "max_tokens": 40,
            "temperature": 0,
        },
    )
    assert response.status_code == 200, response.text
    message = response.json()["choices"][0]["message"]
    call = message["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert isinstance(json.loads(call["function"]["arguments"])["city"], str)


async def test_response_format_json_schema(client: httpx.AsyncClient) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": ["red", "green", "blue"]}},
        "required": ["answer"],
    }
    response = await client.post(
        "/openai/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": "Name a colour, as JSON."}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "c", "schema": schema},
            },
            "max_tokens": 60,
            "temperature": 0,
        },
    )
    assert response.status_code == 200, response.text
    content = response.json()["choices"][0]["message"]["content"]
    assert json.loads(content)["answer"] in {"red", "green", "blue"}


async def test_default_system_prompt_is_applied() -> None:
    from jan_predictor import create_app
    from tests.conftest import make_settings, running

    system = "You answer every question about astronomy with great care and precision."
    async with running(create_app(make_settings(default_system_prompt=system))) as client:

        async def prompt_tokens(messages: list[dict[str, str]]) -> int:
            body = (
                await client.post(
                    "/openai/v1/chat/completions",
                    json={"messages": messages, "max_tokens": 1},
                )
            ).json()
            return int(body["usage"]["prompt_tokens"])

        implicit = await prompt_tokens(HELLO)
        explicit = await prompt_tokens([{"role": "system", "content": system}, *HELLO])
        other = await prompt_tokens([{"role": "system", "content": "Be brief."}, *HELLO])
    assert implicit == explicit
    assert other < explicit
