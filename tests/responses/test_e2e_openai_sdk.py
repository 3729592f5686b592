"""End to end: the official `openai` SDK against the gateway process, whose Responses and
Conversations areas call the real CPU predictor (SmolLM2-135M over llama.cpp)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.responses.processes import REAL_MODEL, Callers, Process


@pytest.fixture
def sdk(gateway: Process, callers: Callers) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{gateway.base_url}/v1", api_key=callers.owner_token, max_retries=0, timeout=120
    ) as client:
        yield client


def test_conversation_history_is_used(sdk: openai.OpenAI) -> None:
    conv = sdk.conversations.create(
        metadata={"suite": "e2e"}, items=[{"role": "user", "content": "My name is Ada."}]
    )
    added = sdk.conversations.items.create(
        conv.id,
        items=[{"type": "message", "role": "assistant", "content": "Nice to meet you, Ada."}],
    )
    assert added.data[0].type == "message"
    first = sdk.responses.create(
        model=REAL_MODEL, conversation=conv.id, input="What is my name?", max_output_tokens=24
    )
    assert first.status in ("completed", "incomplete") and first.output_text
    second = sdk.responses.create(
        model=REAL_MODEL, conversation=conv.id, input="Say it again.", max_output_tokens=24
    )
    # The second turn carried the whole conversation: more prompt tokens than the first.
    assert first.usage is not None and second.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens
    items = sdk.conversations.items.list(conv.id, order="asc", limit=100)
    assert [i.type for i in items.data] == ["message"] * 6
    assert [i.role for i in items.data[2:]] == ["user", "assistant"] * 2  # type: ignore[union-attr]
    assert items.data[5].id == second.output[0].id
    assert sdk.conversations.retrieve(conv.id).metadata == {"suite": "e2e"}


def test_stream_event_order(sdk: openai.OpenAI) -> None:
    events = list(
        sdk.responses.create(
            model=REAL_MODEL, input="Name a colour.", max_output_tokens=32, stream=True
        )
    )
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    # A 32-token cap may cut the answer short: then it ends `incomplete`, in the same order.
    assert kinds[-4:-1] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response  # type: ignore[union-attr]
    assert text and final.output_text == text
    assert sdk.responses.retrieve(final.id).output_text == text


def test_stream_left_early_is_stored_cancelled(sdk: openai.OpenAI) -> None:
    stream = sdk.responses.create(
        model=REAL_MODEL,
        input="Write a long story about the sea.",
        max_output_tokens=1500,
        stream=True,
    )
    with stream:
        created = next(iter(stream))
        assert created.type == "response.created"
        assert sdk.responses.retrieve(created.response.id).status == "in_progress"
        for event in stream:
            if event.type == "response.output_text.delta":
                break
    # Leaving the block closed the connection: the gateway stops the run and stores it.
    got = created.response
    for _ in range(100):
        got = sdk.responses.retrieve(created.response.id)
        if got.status != "in_progress":
            break
        time.sleep(0.1)
    assert got.status == "cancelled"
    assert [item.status for item in got.output] == ["incomplete"]  # type: ignore[union-attr]


def test_previous_response_id_chain(sdk: openai.OpenAI) -> None:
    first = sdk.responses.create(
        model=REAL_MODEL, input="Remember the word 'plum'.", max_output_tokens=16
    )
    second = sdk.responses.create(
        model=REAL_MODEL,
        previous_response_id=first.id,
        input="Which word?",
        max_output_tokens=16,
    )
    assert second.previous_response_id == first.id
    assert first.usage is not None and second.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens
    inputs = sdk.responses.input_items.list(second.id)
    assert [i.type for i in inputs.data] == ["message"]
    assert sdk.responses.retrieve(second.id).output_text == second.output_text


def test_function_tool_round_trip(sdk: openai.OpenAI) -> None:
    tools: Any = [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        }
    ]
    asked = sdk.responses.create(
        model=REAL_MODEL,
        input="What is the weather in Oslo?",
        tools=tools,
        tool_choice={"type": "function", "name": "get_weather"},
        max_output_tokens=64,
    )
    calls = [o for o in asked.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    # The test plays the tool.
    answered = sdk.responses.create(
        model=REAL_MODEL,
        previous_response_id=asked.id,
        tools=tools,
        input=[
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "Sunny, 21 C"}
        ],
        max_output_tokens=32,
    )
    assert answered.status in ("completed", "incomplete") and answered.output_text


def test_background_polled_and_cancelled(sdk: openai.OpenAI) -> None:
    queued = sdk.responses.create(
        model=REAL_MODEL, input="Say hi.", background=True, max_output_tokens=16
    )
    assert queued.status == "queued"
    got = queued
    for _ in range(600):
        got = sdk.responses.retrieve(queued.id)
        if got.status not in ("queued", "in_progress"):
            break
        time.sleep(0.1)
    assert got.status in ("completed", "incomplete") and got.output_text

    long = sdk.responses.create(
        model=REAL_MODEL,
        input="Write a long story about the sea.",
        background=True,
        max_output_tokens=1500,
    )
    cancelled = sdk.responses.cancel(long.id)
    assert cancelled.status == "cancelled"
    time.sleep(0.5)
    assert sdk.responses.retrieve(long.id).status == "cancelled"


def test_bad_input_gets_openai_errors(
    sdk: openai.OpenAI, gateway: Process, callers: Callers
) -> None:
    with pytest.raises(openai.NotFoundError) as unknown:
        sdk.responses.create(model=REAL_MODEL, input="x", conversation="conv_doesnotexist")
    assert unknown.value.body["param"] == "conversation"  # type: ignore[index]

    with openai.OpenAI(
        base_url=f"{gateway.base_url}/v1", api_key=callers.member_token, max_retries=0
    ) as other:
        mine = sdk.conversations.create(items=[{"role": "user", "content": "private"}])
        item_id = sdk.conversations.items.list(mine.id).data[0].id
        assert item_id is not None
        with pytest.raises(openai.NotFoundError):
            other.conversations.items.retrieve(item_id, conversation_id=mine.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.create(model=REAL_MODEL, input="x", conversation=mine.id)

    wizard: Any = {"type": "message", "role": "wizard", "content": "x"}
    with pytest.raises(openai.BadRequestError) as malformed:
        sdk.conversations.items.create(mine.id, items=[wizard])
    assert malformed.value.body["param"] == "items[0].role"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        sdk.responses.create(model="no-such-model", input="x")


def test_input_tokens_are_the_real_models_count(sdk: openai.OpenAI) -> None:
    """The gateway asks the predictor's tokenizer (its `/openai/tokenize`), over the same
    prompt the response then sends: the count is the prompt tokens the model evaluates."""
    asked: dict[str, Any] = {
        "model": REAL_MODEL,
        "instructions": "Answer in one word.",
        "input": [{"role": "user", "content": "What colour is the sky on a clear day?"}],
    }
    counted = sdk.responses.input_tokens.count(**asked)
    assert counted.object == "response.input_tokens"
    assert not (counted.model_extra or {}).get("jan_estimated")
    made = sdk.responses.create(**asked, max_output_tokens=4, store=False)
    assert made.usage is not None and made.usage.input_tokens == counted.input_tokens
    # `truncation: auto` against the predictor's real context window: a history far
    # longer than it still gets an answer, from its latest items.
    history: list[Any] = [
        {"role": "user", "content": f"Note {n}: " + "lorem ipsum dolor sit amet " * 60}
        for n in range(20)
    ]
    history.append({"role": "user", "content": "Say hi."})
    whole = sdk.responses.input_tokens.count(model=REAL_MODEL, input=history)
    cut = sdk.responses.input_tokens.count(model=REAL_MODEL, input=history, truncation="auto")
    assert cut.input_tokens < whole.input_tokens
    answered = sdk.responses.create(
        model=REAL_MODEL, input=history, truncation="auto", max_output_tokens=4, store=False
    )
    assert answered.truncation == "auto" and answered.status in ("completed", "incomplete")
    assert answered.usage is not None and answered.usage.input_tokens <= cut.input_tokens

    # The predictor has no log probabilities: asking for them is a 400 naming `include`.
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.responses.create(
            model=REAL_MODEL, input="hi", include=["message.output_text.logprobs"], store=False
        )
    assert refused.value.param == "include"
