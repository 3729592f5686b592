"""Audio, images, moderations, rerank and score, passed through the router to a local model
server that speaks each protocol: credentials, model permissions, usage, failover; uploads
streamed to the model server as they arrive and audio streamed back as it is made; bodies
over the limit refused with 413. Through the official SDK where it has the operation."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import openai
import pytest

from functions.common.runtime import Runtime
from functions.common.settings import Settings
from tests.chat.fakes import FakeUpstream
from tests.chat.media_fakes import AUDIO_CHUNK
from tests.chat.test_endpoints import usage_rows
from tests.conftest import make_settings
from tests.factories import create_project_key, create_tenant
from tests.tools.http_server import serve_app

Start = Callable[..., Awaitable[FakeUpstream]]
BOUNDARY = "jan-test-boundary"


def multipart(fields: dict[str, str], file: bytes, *, file_first: bool = False) -> bytes:
    def part(name: str, value: bytes, filename: str | None = None) -> bytes:
        disposition = f'form-data; name="{name}"'
        if filename:
            disposition += f'; filename="{filename}"'
        head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        return head + value + b"\r\n"

    plain = [part(k, v.encode()) for k, v in fields.items()]
    upload = part("file", file, "speech.wav")
    parts = [upload, *plain] if file_first else [*plain, upload]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


MULTIPART = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


async def test_each_operation_reaches_the_model_server_and_is_in_the_ledger(
    client: httpx.AsyncClient, runtime: Runtime, builtin: FakeUpstream
) -> None:
    t = await create_tenant(runtime)
    h = t.project_headers
    r = await client.post(
        "/v1/audio/transcriptions",
        content=multipart({"model": "m1"}, b"x" * 5000),
        headers={**h, **MULTIPART},
    )
    assert r.status_code == 200, r.text
    assert r.json()["text"] == "m1 heard 5000 bytes"
    r = await client.post(
        "/v1/audio/transcriptions",
        content=multipart({"model": "m1", "response_format": "text"}, b"x"),
        headers={**h, **MULTIPART},
    )
    assert r.headers["content-type"].startswith("text/plain") and r.text == "m1 heard 1 bytes\n"
    r = await client.post(
        "/v1/audio/translations",
        content=multipart({"model": "m2"}, b"y" * 10, file_first=True),  # held until `model`
        headers={**h, **MULTIPART},
    )
    assert r.json() == {"text": "m2 heard 10 bytes"}
    speech = {"model": "m1", "input": "Hello.", "voice": "alloy"}
    r = await client.post("/v1/audio/speech", json=speech, headers=h)
    assert r.headers["content-type"] == "audio/mpeg" and r.content == AUDIO_CHUNK * 4
    r = await client.post(
        "/v1/images/generations", json={"model": "m1", "prompt": "a cat"}, headers=h
    )
    assert r.json()["data"][0]["b64_json"]
    r = await client.post(
        "/v1/images/edits",
        content=multipart({"model": "m1", "prompt": "hat"}, b"\x89PNG"),
        headers={**h, **MULTIPART},
    )
    assert r.status_code == 200 and builtin.media.uploads[-1]["prompt"] == "hat"
    r = await client.post(
        "/v1/moderations", json={"model": "m1", "input": ["kill", "hug"]}, headers=h
    )
    assert [x["flagged"] for x in r.json()["results"]] == [True, False]
    rerank = {"model": "m1", "query": "red fox", "documents": ["blue sky", "a red fox", "red"]}
    r = await client.post("/v1/rerank", json=rerank, headers=h)
    assert [x["index"] for x in r.json()["results"]] == [1, 2, 0]
    score = {"model": "m1", "text_1": "a", "text_2": ["b", "c"]}
    r = await client.post("/v1/score", json=score, headers=h)
    assert [x["score"] for x in r.json()["data"]] == [0.5, 0.6]
    rows = await usage_rows(runtime)
    assert [(row["operation"], row["input_tokens"], row["output_tokens"]) for row in rows] == [
        ("audio.transcriptions", 11, 4),
        ("audio.transcriptions", 0, 0),  # text: no usage to read
        ("audio.translations", 0, 0),
        ("audio.speech", 0, 0),
        ("images.generations", 9, 100),
        ("images.edits", 9, 100),
        ("moderations", 0, 0),
        ("rerank", 17, 0),
        ("score", 8, 0),
    ]
    assert {row["status"] for row in rows} == {200}


async def test_refusals_are_openai_errors(
    client: httpx.AsyncClient, runtime: Runtime, builtin: FakeUpstream
) -> None:
    t = await create_tenant(runtime)
    only_m2 = await create_project_key(runtime, t, allowed_models=["m2"])
    h = t.project_headers
    cases: list[tuple[str, dict[str, Any], int, str | None]] = [
        ("/v1/audio/speech", {"model": "m1"}, 400, "input"),
        ("/v1/moderations", {"input": "x"}, 400, "model"),
        ("/v1/rerank", {"model": "m1", "documents": []}, 400, "query"),
        ("/v1/images/generations", {"model": "nope", "prompt": "x"}, 404, "model"),
    ]
    for path, body, status, param in cases:
        r = await client.post(path, json=body, headers=h)
        assert r.status_code == status and r.json()["error"]["param"] == param, (path, r.text)
    upload = multipart({"model": "m1"}, b"x")
    r = await client.post(
        "/v1/audio/transcriptions",
        content=upload,
        headers={"Authorization": f"Bearer {only_m2}", **MULTIPART},
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    for content, headers in [
        (multipart({"language": "en"}, b"x"), MULTIPART),  # no model
        (b'{"model": "m1"}', {"content-type": "application/json"}),  # not multipart
    ]:
        r = await client.post("/v1/audio/transcriptions", content=content, headers={**h, **headers})
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = await client.post("/v1/audio/speech", json={"model": "m1", "input": "x"})
    assert r.status_code == 401
    assert builtin.media.uploads == [] and builtin.media.bodies == []


async def test_an_upload_streams_to_the_model_server_as_it_arrives(
    runtime: Runtime, builtin: FakeUpstream
) -> None:
    """The model server has the file's first bytes while the client is still sending: the
    client holds back the rest until the model server says it has them."""
    async with serve_app(runtime) as base:
        t = await create_tenant(runtime)
        whole = multipart({"model": "m1"}, b"z" * 300_000)
        head, tail = whole[:100_000], whole[100_000:]

        async def body() -> AsyncIterator[bytes]:
            yield head
            await asyncio.wait_for(builtin.media.upload_began.wait(), 10)
            yield tail

        async with httpx.AsyncClient(base_url=base, timeout=20) as http:
            r = await http.post(
                "/v1/audio/transcriptions",
                content=body(),
                headers={**t.project_headers, **MULTIPART, "content-length": str(len(whole))},
            )
    assert r.status_code == 200 and r.json()["text"] == "m1 heard 300000 bytes"


async def test_speech_streams_back_as_it_is_made(runtime: Runtime, builtin: FakeUpstream) -> None:
    gate = builtin.media.speech_gate = asyncio.Event()
    async with serve_app(runtime) as base:
        t = await create_tenant(runtime)
        async with (
            httpx.AsyncClient(base_url=base, timeout=20) as http,
            http.stream(
                "POST",
                "/v1/audio/speech",
                json={"model": "m1", "input": "Hi.", "voice": "alloy"},
                headers=t.project_headers,
            ) as r,
        ):
            chunks = r.aiter_bytes()
            first = await anext(chunks)  # the model server is still holding the rest
            assert AUDIO_CHUNK.startswith(first) and not gate.is_set()
            gate.set()
            rest = b"".join([c async for c in chunks])
    assert first + rest == AUDIO_CHUNK * 4


async def test_failover_before_an_upload_starts(
    client: httpx.AsyncClient, runtime: Runtime, upstreams: Start
) -> None:
    alive = await upstreams("alive", models=("voice",))
    dead = await upstreams("dead", models=("voice",))
    dead_url = dead.base_url
    await dead.stop()
    t = await create_tenant(runtime)
    provider = {"name": "p", "kind": "vllm", "base_urls": [dead_url, alive.base_url]}
    provider["models"] = ["voice"]
    r = await client.post(
        "/v1/organization/models/providers", json=provider, headers=t.admin_headers
    )
    assert r.status_code == 200, r.text
    for _ in range(3):  # whichever endpoint is picked first, each call is answered
        r = await client.post(
            "/v1/audio/transcriptions",
            content=multipart({"model": "voice"}, b"a" * 100),
            headers={**t.project_headers, **MULTIPART},
        )
        assert r.status_code == 200, r.text
        r = await client.post(
            "/v1/audio/speech", json={"model": "voice", "input": "x"}, headers=t.project_headers
        )
        assert r.status_code == 200 and r.content == AUDIO_CHUNK * 4
    assert len(alive.media.uploads) == 3


@pytest.fixture
def settings(database_dsn: str, builtin: FakeUpstream) -> Settings:
    return make_settings(
        database_dsn,
        jan_inference_model_url=builtin.base_url,
        jan_provider_allowed_hosts=("127.0.0.1",),
        jan_max_body_bytes=400_000,  # the uploads above fit
    )


async def test_bodies_over_the_limit_are_413(
    client: httpx.AsyncClient, runtime: Runtime, builtin: FakeUpstream
) -> None:
    t = await create_tenant(runtime)
    r = await client.post(
        "/v1/audio/transcriptions",
        content=multipart({"model": "m1"}, b"x" * 500_000),
        headers={**t.project_headers, **MULTIPART},
    )
    assert r.status_code == 413 and r.json()["error"]["type"] == "invalid_request_error"
    big = {"model": "m1", "input": "x" * 500_000, "voice": "alloy"}
    r = await client.post("/v1/audio/speech", json=big, headers=t.project_headers)
    assert r.status_code == 413
    assert builtin.media.bodies == [] and builtin.media.uploads == []


async def test_the_official_sdk(runtime: Runtime, builtin: FakeUpstream) -> None:
    async with serve_app(runtime) as base:
        t = await create_tenant(runtime)
        sdk = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=t.project_key, max_retries=0)

        def audio() -> tuple[str, io.BytesIO, str]:
            return ("hello.wav", io.BytesIO(b"RIFF" + b"\x00" * 2000), "audio/wav")

        heard = await sdk.audio.transcriptions.create(model="m1", file=audio())
        assert heard.text == "m1 heard 2004 bytes"
        streamed = await sdk.audio.transcriptions.create(model="m1", file=audio(), stream=True)
        events = [e async for e in streamed]
        assert events[-1].type == "transcript.text.done"
        with pytest.warns(DeprecationWarning, match="deprecated"):  # the SDK's own notice
            translated = await sdk.audio.translations.create(model="m1", file=audio())
        assert translated.text == "m1 heard 2004 bytes"
        spoken = await sdk.audio.speech.create(model="m1", input="Hi.", voice="alloy")
        assert spoken.content == AUDIO_CHUNK * 4
        images = await sdk.images.generate(model="m1", prompt="a cat")
        assert images.data is not None and images.data[0].b64_json
        edited = await sdk.images.edit(
            model="m1", image=("cat.png", io.BytesIO(b"\x89PNG"), "image/png"), prompt="hat"
        )
        assert edited.data is not None and builtin.media.uploads[-1]["prompt"] == "hat"
        moderated = await sdk.moderations.create(model="m1", input="kill")
        assert moderated.results[0].flagged is True
        with pytest.raises(openai.NotFoundError):
            await sdk.moderations.create(model="nope", input="x")
        await sdk.close()
