"""End to end: the official OpenAI SDK against ``python -m jan_predictor`` under uvicorn."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest

from tests.conftest import EMBEDDING_MODEL, MODEL, Server


@pytest.fixture
def sdk(server: Server) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{server.base_url}/openai/v1", api_key="unused", max_retries=0
    ) as client:
        yield client


def test_models(sdk: openai.OpenAI) -> None:
    assert [m.id for m in sdk.models.list()] == [MODEL, EMBEDDING_MODEL]
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


def test_embeddings_default_base64_float_and_dimensions(sdk: openai.OpenAI) -> None:
    """The SDK asks for base64 unless told otherwise and decodes it to floats itself."""
    texts = ["The cat sat on the mat.", "A kitten is sitting on a rug."]
    default = sdk.embeddings.create(model=EMBEDDING_MODEL, input=texts)
    floats = sdk.embeddings.create(model=EMBEDDING_MODEL, input=texts, encoding_format="float")
    assert default.model == floats.model == EMBEDDING_MODEL
    assert [len(d.embedding) for d in default.data] == [256, 256]
    for a, b in zip(default.data, floats.data, strict=True):
        assert a.index == b.index
        assert a.embedding == pytest.approx(b.embedding, abs=1e-6)
    assert default.usage.prompt_tokens == floats.usage.total_tokens > 0
    short = sdk.embeddings.create(model=EMBEDDING_MODEL, input=texts[0], dimensions=64)
    assert len(short.data[0].embedding) == 64
    assert sum(x * x for x in short.data[0].embedding) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(openai.BadRequestError):
        sdk.embeddings.create(model=EMBEDDING_MODEL, input="x", dimensions=1024)
