"""Errors come back in OpenAI's envelope with the right status."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from jan_predictor import create_app
from tests.conftest import make_settings, running

pytestmark = pytest.mark.anyio


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert "Traceback" not in error["message"]
    return error


@pytest.mark.parametrize("stream", [False, True])
async def test_prompt_beyond_the_context_window_is_400(
    client: httpx.AsyncClient, stream: bool
) -> None:
    long = "hello " * 1500
    chat = await client.post(
        "/openai/v1/chat/completions",
        json={"messages": [{"role": "user", "content": long}], "stream": stream},
    )
    error = assert_error(chat, 400, "context_length_exceeded")
    assert error["param"] == "messages"
    assert "1024" in error["message"]

    completion = await client.post(
        "/openai/v1/completions", json={"prompt": long, "stream": stream}
    )
    assert assert_error(completion, 400, "context_length_exceeded")["param"] == "prompt"


async def test_unknown_model_is_404(client: httpx.AsyncClient) -> None:
    for path, body in [
        (
            "/openai/v1/chat/completions",
            {"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]},
        ),
        ("/openai/v1/completions", {"model": "gpt-9", "prompt": "x"}),
    ]:
        error = assert_error(await client.post(path, json=body), 404, "model_not_found")
        assert error["param"] == "model"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": 3}, "temperature"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        ({"messages": [{"role": "user", "content": "x"}], "logprobs": True}, "logprobs"),
        ({"messages": [{"role": "user", "content": "x"}], "logit_bias": {"abc": 1}}, "logit_bias"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
                ]
            },
            "messages.0.content",
        ),
        (
            {
                "messages": [{"role": "user", "content": "x"}],
                "tool_choice": {"type": "function", "function": {"name": "nope"}},
            },
            "tool_choice",
        ),
    ],
)
async def test_invalid_chat_fields_are_400(
    client: httpx.AsyncClient, body: dict[str, Any], param: str
) -> None:
    response = await client.post("/openai/v1/chat/completions", json=body)
    assert_error(response, 400, response.json()["error"]["code"])
    assert response.json()["error"]["param"] == param
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_bad_json_is_400(client: httpx.AsyncClient) -> None:
    for content in [b'{"messages": [', b"[1, 2]", b""]:
        response = await client.post(
            "/openai/v1/chat/completions",
            content=content,
            headers={"content-type": "application/json"},
        )
        assert_error(response, 400, "invalid_request")


async def test_unknown_token_ids_are_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/openai/v1/completions", json={"prompt": [1, 2, 10**9]})
    assert assert_error(response, 400, "invalid_request")["param"] == "prompt"


async def test_oversized_body_is_413() -> None:
    app = create_app(make_settings(max_request_bytes=2048))
    async with running(app) as client:
        response = await client.post("/openai/v1/completions", json={"prompt": "x" * 4096})
        assert_error(response, 413, "request_too_large")


async def test_unknown_path_and_method(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/openai/v1/nothing"), 404, "not_found")
    assert_error(await client.get("/openai/v1/chat/completions"), 405, "method_not_allowed")
