"""Stored chat completions: ``store: true``, then OpenAI's list (``model``, ``metadata``
filters, cursor pages), retrieve, update, delete and messages; tenant-scoped; through the
official SDK too. A call that does not ask to be stored is not."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from functions.common.runtime import Runtime
from tests.chat.fakes import FakeUpstream
from tests.factories import bearer, create_member, create_tenant
from tests.tools.http_server import serve_app

URL = "/v1/chat/completions"


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "m1", "messages": [{"role": "user", "content": "hi"}], **extra}


async def stored_rows(runtime: Runtime) -> int:
    count: int = await runtime.db.writer.fetchval("SELECT count(*) FROM chat_completions")
    return count


async def test_a_stored_completion_reads_back_as_answered(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    t = await create_tenant(runtime)
    h = t.project_headers
    assert (await client.post(URL, json=chat(), headers=h)).status_code == 200
    assert (await client.post(URL, json=chat(store=False), headers=h)).status_code == 200
    assert await stored_rows(runtime) == 0  # only what asks to be stored is
    answer = (await client.post(URL, json=chat(store=True, metadata={"k": "v"}), headers=h)).json()
    assert answer["id"].startswith("chatcmpl-") and answer["id"] != "chatcmpl-1"  # ours
    got = await client.get(f"{URL}/{answer['id']}", headers=h)
    assert got.status_code == 200
    assert got.json() == {**answer, "metadata": {"k": "v"}}
    assert got.json()["choices"][0]["message"]["content"] == "hi from builtin"


async def test_a_stored_stream_carries_our_id_and_adds_up(
    client: httpx.AsyncClient, runtime: Runtime, builtin: FakeUpstream
) -> None:
    t = await create_tenant(runtime)
    body = chat(store=True, stream=True, stream_options={"include_usage": True})
    r = await client.post(URL, json=body, headers=t.project_headers)
    assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")
    chunks = [httpx.Response(200, content=line[6:]).json() for line in r.text.split("\n\n")[:-2]]
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1 and ids != {"chatcmpl-1"}
    [completion_id] = ids
    assert chunks[-1]["usage"] == builtin.usage  # the client's own usage chunk is kept
    got = (await client.get(f"{URL}/{completion_id}", headers=t.project_headers)).json()
    assert got["object"] == "chat.completion" and got["model"] == "m1"
    assert got["choices"] == [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "builtin-0 builtin-1 builtin-2 ",
                "refusal": None,
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert got["usage"] == builtin.usage
    # A stream that breaks is not stored.
    builtin.mode = "cut"
    r = await client.post(URL, json=chat(store=True, stream=True), headers=t.project_headers)
    assert b'"error"' in r.content
    assert await stored_rows(runtime) == 1


async def test_list_filters_pages_update_and_delete(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    t = await create_tenant(runtime)
    h = t.project_headers
    ids = []
    for n, model in enumerate(("m1", "m2", "m1")):
        body = chat(model=model, store=True, metadata={"n": str(n), "team": "a"})
        ids.append((await client.post(URL, json=body, headers=h)).json()["id"])
    listed = (await client.get(URL, headers=h)).json()
    assert [c["id"] for c in listed["data"]] == ids and listed["has_more"] is False
    assert (await client.get(URL, params={"model": "m1"}, headers=h)).json()["last_id"] == ids[2]
    only = await client.get(URL, params={"model": "m1", "metadata[n]": "2"}, headers=h)
    assert [c["id"] for c in only.json()["data"]] == [ids[2]]
    both = await client.get(URL, params={"metadata[team]": "a", "metadata[n]": "0"}, headers=h)
    assert [c["id"] for c in both.json()["data"]] == [ids[0]]
    page = (await client.get(URL, params={"limit": 2, "order": "desc"}, headers=h)).json()
    assert [c["id"] for c in page["data"]] == [ids[2], ids[1]] and page["has_more"] is True
    rest = await client.get(
        URL, params={"limit": 2, "order": "desc", "after": page["last_id"]}, headers=h
    )
    assert [c["id"] for c in rest.json()["data"]] == [ids[0]]
    changed = await client.post(f"{URL}/{ids[1]}", json={"metadata": {"x": "y"}}, headers=h)
    assert changed.json()["metadata"] == {"x": "y"} and changed.json()["id"] == ids[1]
    assert (await client.get(URL, params={"metadata[x]": "y"}, headers=h)).json()["first_id"] == (
        ids[1]
    )
    gone = await client.delete(f"{URL}/{ids[1]}", headers=h)
    assert gone.json() == {"object": "chat.completion.deleted", "id": ids[1], "deleted": True}
    assert (await client.get(f"{URL}/{ids[1]}", headers=h)).status_code == 404
    assert (await client.delete(f"{URL}/{ids[1]}", headers=h)).status_code == 404
    for params, param in [
        ({"after": ids[1]}, "after"),
        ({"limit": 0}, "limit"),
        ({"order": "up"}, "order"),
    ]:
        bad = await client.get(URL, params=params, headers=h)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == param, params


async def test_messages_in_order_with_their_parts(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    t = await create_tenant(runtime)
    h = t.project_headers
    parts = [{"type": "text", "text": "look: "}, {"type": "text", "text": "this"}]
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": parts},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "and?", "name": "ann"},
    ]
    body = {"model": "m1", "messages": messages, "store": True}
    completion_id = (await client.post(URL, json=body, headers=h)).json()["id"]
    listed = (await client.get(f"{URL}/{completion_id}/messages", headers=h)).json()
    assert listed["object"] == "list" and listed["has_more"] is False
    assert [m["id"] for m in listed["data"]] == [f"{completion_id}-{i}" for i in range(4)]
    assert listed["data"][1] == {
        "id": f"{completion_id}-1",
        "role": "user",
        "content": "look: this",
        "refusal": None,
        "content_parts": parts,
    }
    assert listed["data"][3]["name"] == "ann" and listed["data"][0]["content_parts"] is None
    first = (
        await client.get(f"{URL}/{completion_id}/messages?limit=1&order=desc", headers=h)
    ).json()
    assert first["data"][0]["content"] == "and?" and first["has_more"] is True
    after = first["last_id"]
    rest = await client.get(
        f"{URL}/{completion_id}/messages", params={"order": "desc", "after": after}, headers=h
    )
    assert [m["role"] for m in rest.json()["data"]] == ["assistant", "user", "system"]
    bad = await client.get(f"{URL}/{completion_id}/messages?after=nope", headers=h)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "after"


async def test_bad_store_or_metadata_is_400_before_any_model_call(
    client: httpx.AsyncClient, runtime: Runtime, builtin: FakeUpstream
) -> None:
    t = await create_tenant(runtime)
    for body, param in [
        (chat(store="yes"), "store"),
        (chat(store=True, metadata={"k": 1}), "metadata.k"),
        (chat(store=True, metadata=[1]), "metadata"),
        (chat(store=True, metadata={str(n): "v" for n in range(17)}), "metadata"),
    ]:
        r = await client.post(URL, json=body, headers=t.project_headers)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, body
    assert builtin.calls == 0
    made = (await client.post(URL, json=chat(store=True), headers=t.project_headers)).json()
    r = await client.post(f"{URL}/{made['id']}", json={}, headers=t.project_headers)
    assert r.status_code == 400 and r.json()["error"]["param"] == "metadata"


async def test_stored_completions_stay_in_their_tenant(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    t = await create_tenant(runtime)
    other = await create_tenant(runtime)
    _, member = await create_member(runtime, t)
    by_key = (await client.post(URL, json=chat(store=True), headers=t.project_headers)).json()
    mine = bearer(member, **{"OpenAI-Project": t.project_id})
    by_member = (await client.post(URL, json=chat(store=True), headers=mine)).json()
    # A project key sees its whole project; a user only their own.
    seen = (await client.get(URL, headers=t.project_headers)).json()
    assert {c["id"] for c in seen["data"]} == {by_key["id"], by_member["id"]}
    assert [c["id"] for c in (await client.get(URL, headers=mine)).json()["data"]] == [
        by_member["id"]
    ]
    assert (await client.get(f"{URL}/{by_key['id']}", headers=mine)).status_code == 404
    theirs = other.project_headers
    assert (await client.get(URL, headers=theirs)).json()["data"] == []
    requests: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", f"{URL}/{by_key['id']}", None),
        ("POST", f"{URL}/{by_key['id']}", {"metadata": {}}),
        ("DELETE", f"{URL}/{by_key['id']}", None),
        ("GET", f"{URL}/{by_key['id']}/messages", None),
    ]
    for method, path, body in requests:
        r = await client.request(method, path, json=body, headers=theirs)
        assert r.status_code == 404, (method, path)
    r = await client.get(URL, params={"after": by_key["id"]}, headers=theirs)
    assert r.status_code == 400
    assert (await client.get(URL, headers=t.admin_headers)).status_code == 403


@pytest.mark.parametrize("stream", [False, True])
async def test_the_official_sdk_stores_lists_updates_and_deletes(
    runtime: Runtime, stream: bool
) -> None:
    async with serve_app(runtime) as base:
        t = await create_tenant(runtime)
        sdk = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=t.project_key, max_retries=0)
        messages: Any = [{"role": "user", "content": "hello"}]
        if stream:
            chunks = await sdk.chat.completions.create(
                model="m1", messages=messages, store=True, metadata={"run": "1"}, stream=True
            )
            completion_id = {c.id async for c in chunks}.pop()
        else:
            made = await sdk.chat.completions.create(
                model="m1", messages=messages, store=True, metadata={"run": "1"}
            )
            completion_id = made.id
        got = await sdk.chat.completions.retrieve(completion_id)
        assert got.choices[0].message.content and got.metadata == {"run": "1"}
        listed = [c.id async for c in sdk.chat.completions.list(model="m1", metadata={"run": "1"})]
        assert listed == [completion_id]
        said = [m async for m in sdk.chat.completions.messages.list(completion_id)]
        assert [(m.id, m.content) for m in said] == [(f"{completion_id}-0", "hello")]
        updated = await sdk.chat.completions.update(completion_id, metadata={"run": "2"})
        assert updated.metadata == {"run": "2"}
        deleted = await sdk.chat.completions.delete(completion_id)
        assert deleted.deleted is True and deleted.id == completion_id
        with pytest.raises(openai.NotFoundError):
            await sdk.chat.completions.retrieve(completion_id)
        await sdk.close()


async def test_concurrent_stored_calls_are_written_together_and_each_is_readable(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    import asyncio

    t = await create_tenant(runtime)
    h = t.project_headers
    answers = await asyncio.gather(
        *(
            client.post(URL, json=chat(store=True, metadata={"n": str(n)}), headers=h)
            for n in range(20)
        )
    )
    for n, answer in enumerate(answers):
        got = await client.get(f"{URL}/{answer.json()['id']}", headers=h)
        assert got.status_code == 200 and got.json()["metadata"] == {"n": str(n)}
    assert await stored_rows(runtime) == 20


async def test_a_refused_row_does_not_lose_the_others_of_its_write(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    import asyncio

    from functions.chat import store
    from functions.chat.stored import StoredWrites
    from functions.common.principal import Owner, Principal

    t = await create_tenant(runtime)
    writes = StoredWrites(runtime)
    good = Owner.of(Principal("project_key", t.organization_id, t.project_id))
    # A user that no longer exists: its row breaks the users foreign key.
    gone = Owner.of(Principal("user", t.organization_id, t.project_id, user_id="user_gone"))

    def row(owner: Owner, n: int) -> tuple[Any, ...]:
        completion = {"id": f"chatcmpl-test{n}", "model": "m1"}
        return store.row(owner=owner, completion=completion, messages=[], metadata={})

    results = await asyncio.gather(
        *(writes.insert(row(gone if n == 2 else good, n)) for n in range(5)),
        return_exceptions=True,
    )
    assert [r is None for r in results] == [True, True, False, True, True]
    assert await stored_rows(runtime) == 4
