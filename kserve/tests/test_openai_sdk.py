"""End to end: the official OpenAI SDK against ``python -m jan_predictor`` under uvicorn."""

from __future__ import annotations

import json

import openai
import pytest

from tests.conftest import MODEL, Server


@pytest.fixture
def sdk(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/openai/v1", api_key="unused", max_retries=0)


def test_models(sdk: openai.OpenAI) -> None:
    assert [m.id for m in sdk.models.list()] == [MODEL]
    assert sdk.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("gpt-9")


def test_chat(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is 2 + 2?"}],
        max_completion_tokens=16,
        temperature=0,
    )
    assert completion.model == MODEL
    assert completion.choices[0].message.content
    assert completion.usage is not None
    assert completion.usage.completion_tokens <= 16


def test_streamed_chat_with_usage(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Tell me about cats."}],
        max_tokens=20,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    usage = chunks[-1].usage
    assert usage is not None
    assert 0 < usage.completion_tokens <= 20
    assert chunks[-1].choices == []


def test_completions(sdk: openai.OpenAI) -> None:
    completion = sdk.completions.create(model=MODEL, prompt="1, 2, 3,", max_tokens=6, temperature=0)
    assert completion.choices[0].text.startswith(" 4")
    streamed = "".join(
        c.choices[0].text
        for c in sdk.completions.create(
            model=MODEL, prompt="1, 2, 3,", max_tokens=6, temperature=0, stream=True
        )
    )
    assert streamed == completion.choices[0].text


def test_tool_call(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "weather",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string", "maxLength": 20}},
                        "required": ["city"],
                    },
                },
            }
        ],
        tool_choice="required",
        max_tokens=40,
        temperature=0,
    )
    calls = completion.choices[0].message.tool_calls
    assert calls
    assert calls[0].type == "function"
    assert calls[0].function.name == "weather"
    assert "city" in json.loads(calls[0].function.arguments)


def test_errors(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        sdk.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert not_found.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as too_long:
        sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hello " * 1500}], stream=True
        )
    assert too_long.value.code == "context_length_exceeded"
