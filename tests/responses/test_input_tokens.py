"""`POST /v1/responses/input_tokens`, `truncation: "auto"` and `include`, over ASGI with real
PostgreSQL and a scripted model server whose `/tokenize` answers as vLLM's does."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conversations.tenants import Tenant
from tests.responses.helpers import create, sse_events
from tests.responses.upstream import MODEL, Reply, ScriptedUpstream, prompt_tokens

URL = "/v1/responses/input_tokens"
WEATHER = {
    "type": "function",
    "name": "weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


async def count(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> Any:
    r = await client.post(URL, json=body, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


async def test_the_count_is_the_tokenizers_for_the_prompt_a_response_would_send(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream
) -> None:
    first = await create(client, tenant.user, input="My name is Ada.", instructions="Be brief.")
    asked = {
        "model": MODEL,
        "input": [{"role": "user", "content": "What is my name, and the weather in Paris?"}],
        "instructions": "Answer in French.",
        "previous_response_id": first["id"],
        "tools": [WEATHER],
    }
    counted = await count(client, tenant.user, **asked)
    [tokenized] = upstream.tokenized
    assert counted == {"object": "response.input_tokens", "input_tokens": prompt_tokens(tokenized)}
    # The tokenizer saw exactly the prompt the response itself then sends: the new
    # instructions, the chain's input and output, the new input, the tools.
    await create(client, tenant.user, **asked)
    sent = upstream.requests[-1]
    assert tokenized["messages"] == sent["messages"] and tokenized["tools"] == sent["tools"]
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user"]
    assert tokenized["model"] == MODEL and tokenized["add_generation_prompt"] is True
    assert (
        counted["input_tokens"]
        > (await count(client, tenant.user, model=MODEL, input="x"))["input_tokens"]
    )
    # A conversation's history counts too; the count itself stores nothing.
    conv = await client.post(
        "/v1/conversations",
        json={"items": [{"role": "user", "content": "one two three four"}]},
        headers=tenant.user,
    )
    in_conversation = await count(
        client, tenant.user, model=MODEL, conversation=conv.json()["id"], input="five"
    )
    assert upstream.tokenized[-1]["messages"] == [
        {"role": "user", "content": "one two three four"},
        {"role": "user", "content": "five"},
    ]
    assert in_conversation["input_tokens"] == 4 + 4 + 4 + 1
    items = await client.get(f"/v1/conversations/{conv.json()['id']}/items", headers=tenant.user)
    assert len(items.json()["data"]) == 1
    assert len(upstream.requests) == 2  # counting called no model


async def test_without_a_tokenizer_or_a_model_the_count_is_an_estimate(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream
) -> None:
    upstream.tokenizer = False
    estimated = await count(client, tenant.user, model=MODEL, input="Tell me a joke.")
    assert estimated["jan_estimated"] is True and estimated["object"] == "response.input_tokens"
    assert 0 < estimated["input_tokens"] < 50
    longer = await count(client, tenant.user, model=MODEL, input="Tell me a joke. " * 20)
    assert longer["input_tokens"] > estimated["input_tokens"]
    upstream.tokenizer = True
    no_model = await count(client, tenant.user, input="Tell me a joke.")
    assert no_model == estimated and upstream.tokenized == []


async def test_refusals_are_openai_errors(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream
) -> None:
    for body, status, param in (
        ({"model": "no-such-model", "input": "hi"}, 404, "model"),
        ({"model": MODEL, "input": "hi", "previous_response_id": "resp_nope"}, 404, None),
        ({"model": MODEL, "input": "hi", "truncation": "sometimes"}, 400, "truncation"),
        ({"model": MODEL, "input": 7}, 400, "input"),
        ({"model": 7, "input": "hi"}, 400, "model"),
    ):
        r = await client.post(URL, json=body, headers=tenant.user)
        assert r.status_code == status, (body, r.text)
        if param is not None:
            assert r.json()["error"]["param"] == param
    assert (await client.post(URL, json={"input": "hi"})).status_code == 401
    assert upstream.tokenized == []


async def test_truncation_auto_drops_the_oldest_items_to_fit_the_context_window(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream
) -> None:
    history = [
        {"role": "user", "content": f"message number {n} " + "word " * 20} for n in range(10)
    ]
    history.append({"role": "user", "content": "And now?"})
    # Each old message is 4 + 23 tokens; the window holds the last three and the answer.
    upstream.context_window = 3 * 27 + 20
    body = {"input": history, "instructions": "Be brief.", "max_output_tokens": 16}
    resp = await create(client, tenant.user, truncation="auto", **body)
    assert resp["truncation"] == "auto" and resp["status"] == "completed"
    sent = upstream.requests[-1]["messages"]
    assert sent[0] == {"role": "system", "content": "Be brief."}
    assert sent[-1]["content"] == "And now?" and len(sent) < len(history) + 1
    assert prompt_tokens({"messages": sent}) + 16 <= upstream.context_window
    assert sent[1]["content"].startswith("message number") and len(sent) >= 3
    # Kept as given: the response's input items are all there.
    items = await client.get(
        f"/v1/responses/{resp['id']}/input_items?limit=100", headers=tenant.user
    )
    assert len(items.json()["data"]) == len(history)
    # The count is of what would be sent, truncated alike (a count has no
    # `max_output_tokens`: the prompt may take the whole window but for one token).
    del body["max_output_tokens"]
    counted = await count(client, tenant.user, model=MODEL, truncation="auto", **body)
    await create(client, tenant.user, truncation="auto", **body)
    longer = upstream.requests[-1]["messages"]
    assert counted["input_tokens"] == prompt_tokens({"messages": longer})
    assert len(sent) <= len(longer) < len(history) + 1
    # `disabled` (the default) sends everything.
    resp = await create(client, tenant.user, **body)
    assert resp["truncation"] == "disabled"
    assert len(upstream.requests[-1]["messages"]) == len(history) + 1


async def test_a_tokenizer_without_the_window_truncates_to_the_one_models_states(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream
) -> None:
    """llama.cpp's `/tokenize` answers tokens only: the window is then the one context-window
    fallbacks use, the provider's declared or its `/models` (vLLM's `max_model_len`)."""
    upstream.tokenizer_states_window = False
    upstream.context_window = 3 * 27 + 20
    history = [
        {"role": "user", "content": f"message number {n} " + "word " * 20} for n in range(10)
    ]
    body = {"input": history, "max_output_tokens": 16}
    resp = await create(client, tenant.user, truncation="auto", **body)
    assert resp["status"] == "completed"
    sent = upstream.requests[-1]["messages"]
    assert 1 <= len(sent) < len(history)
    assert prompt_tokens({"messages": sent}) + 16 <= upstream.context_window
    counted = await count(client, tenant.user, model=MODEL, input=history)
    assert counted["input_tokens"] == prompt_tokens({"messages": [*history]})
    assert "jan_estimated" not in counted


async def test_truncation_keeps_tool_results_with_their_calls(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream
) -> None:
    filler = "word " * 40
    items: list[dict[str, Any]] = [
        {"role": "user", "content": filler},
        {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": filler},
        {"role": "user", "content": "Thanks."},
    ]
    upstream.context_window = 30
    await create(client, tenant.user, input=items, tools=[WEATHER], truncation="auto")
    sent = upstream.requests[-1]["messages"]
    assert sent == [{"role": "user", "content": "Thanks."}]


async def test_without_a_known_context_window_auto_drops_nothing(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream
) -> None:
    upstream.tokenizer = False
    history = [{"role": "user", "content": "word " * 50} for _ in range(5)]
    resp = await create(client, tenant.user, input=history, truncation="auto")
    assert resp["truncation"] == "auto" and len(upstream.requests[-1]["messages"]) == 5


async def test_include_logprobs_asks_the_model_and_returns_them(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream
) -> None:
    upstream.script.append(Reply(text="Hello there"))
    include = ["message.output_text.logprobs"]
    resp = await create(client, tenant.user, input="hi", include=include, top_logprobs=2)
    sent = upstream.requests[-1]
    assert sent["logprobs"] is True and sent["top_logprobs"] == 2
    [part] = resp["output"][0]["content"]
    assert [lp["token"] for lp in part["logprobs"]] == ["Hello", " there"]
    first = part["logprobs"][0]
    assert first["logprob"] == -0.5 and first["bytes"] == list(b"Hello")
    assert [t["token"] for t in first["top_logprobs"]] == ["alt0", "alt1"]
    assert resp["top_logprobs"] == 2
    got = await client.get(f"/v1/responses/{resp['id']}", headers=tenant.user)
    assert got.json()["output"][0]["content"][0]["logprobs"] == part["logprobs"]

    upstream.script.append(Reply(text="Hello there"))
    r = await client.post(
        "/v1/responses",
        json={"model": MODEL, "input": "hi", "include": include, "stream": True},
        headers=tenant.user,
    )
    events = sse_events(r.text)
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert [d["logprobs"][0]["token"] for d in deltas] == ["Hello", " there"]
    assert deltas[0]["logprobs"][0]["top_logprobs"] == []
    [done] = [e for e in events if e["type"] == "response.output_text.done"]
    assert len(done["logprobs"]) == 2
    # Not asked: not asked of the model either, and none in the answer.
    plain = await create(client, tenant.user, input="hi")
    assert "logprobs" not in upstream.requests[-1]
    assert plain["output"][0]["content"][0]["logprobs"] == []


async def test_includes_a_self_hosted_model_cannot_honour_are_400(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream
) -> None:
    for value in (
        "reasoning.encrypted_content",
        "web_search_call.action.sources",
        "file_search_call.results",
        "code_interpreter_call.outputs",
        "no.such.value",
    ):
        r = await client.post(
            "/v1/responses",
            json={"model": MODEL, "input": "hi", "include": [value]},
            headers=tenant.user,
        )
        assert r.status_code == 400, value
        error = r.json()["error"]
        assert error["param"] == "include" and value in error["message"]
    r = await client.post(
        "/v1/responses",
        json={"model": MODEL, "input": "hi", "include": "message.output_text.logprobs"},
        headers=tenant.user,
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "include"
    r = await client.post(
        "/v1/responses",
        json={"model": MODEL, "input": "hi", "top_logprobs": 21},
        headers=tenant.user,
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "top_logprobs"
    # An image's URL is kept with its input item anyway: accepted.
    resp = await create(client, tenant.user, input="hi", include=["message.input_image.image_url"])
    assert resp["status"] == "completed"
    assert upstream.requests and all("logprobs" not in r for r in upstream.requests)
    # Reading a response back: the same values, the same refusals.
    for path in (f"/v1/responses/{resp['id']}", f"/v1/responses/{resp['id']}/input_items"):
        ok = await client.get(
            path, params={"include": "message.output_text.logprobs"}, headers=tenant.user
        )
        assert ok.status_code == 200
        refused = await client.get(
            path, params={"include": "reasoning.encrypted_content"}, headers=tenant.user
        )
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "include"


async def test_a_model_server_without_logprobs_is_a_400_naming_include(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream
) -> None:
    upstream.script.append(
        Reply(status=400, error="logprobs is not supported by this model server.")
    )
    r = await client.post(
        "/v1/responses",
        json={"model": MODEL, "input": "hi", "include": ["message.output_text.logprobs"]},
        headers=tenant.user,
    )
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == "include" and "message.output_text.logprobs" in error["message"]
    assert "not supported by this model server" in error["message"]
    # Another refusal keeps its own words.
    upstream.script.append(Reply(status=400, error="bad temperature"))
    r = await client.post(
        "/v1/responses", json={"model": MODEL, "input": "hi"}, headers=tenant.user
    )
    assert r.status_code == 400 and r.json()["error"]["param"] is None


async def test_the_served_document_describes_them(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    counting = paths[URL]["post"]
    answer = counting["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer["required"] == ["object", "input_tokens"]
    assert "Jan extension" in answer["properties"]["jan_estimated"]["description"]
    creating = paths["/v1/responses"]["post"]["requestBody"]["content"]["application/json"]
    fields = creating["schema"]["properties"]
    assert fields["truncation"]["enum"] == ["auto", "disabled"]
    assert "message.output_text.logprobs" in fields["include"]["description"]
    assert fields["top_logprobs"]["maximum"] == 20
