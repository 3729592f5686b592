"""The official `openai` SDKs, Python and JavaScript, end to end over the operations of
issue 16: stored chat completions, the passed-through audio, images and moderations (rerank
and score, which the SDKs lack, as raw requests), and `responses.input_tokens` with the
Responses `truncation` and `include` it brought.

The JavaScript SDK is the version `js/package-lock.json` pins, installed by `make env`
(`npm ci --prefix tests/sdk/js`); `js/e2e.mjs` runs under Node against the app on a real
port. (The Python SDK's own tests of stored completions and the passed-through operations
are in `tests/chat/test_stored_completions.py` and `tests/chat/test_passthrough.py`.)
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from functions.common.runtime import Runtime
from tests.chat.fakes import FakeUpstream
from tests.chat.media_fakes import AUDIO_CHUNK
from tests.chat.test_endpoints import usage_rows
from tests.factories import create_tenant
from tests.tools.http_server import serve_app

JS = Path(__file__).with_name("js")
# "Be brief." and "Tell me a joke.": FakeUpstream's tokenizer counts 3 a message and 1 a word.
EXPECTED_TOKENS = (3 + 2) + (3 + 4)
JS_OPERATIONS = [
    "chat.completions.create(store)",
    "chat.completions.create(store, stream)",
    "chat.completions.retrieve",
    "chat.completions.list",
    "chat.completions.messages.list",
    "chat.completions.update",
    "chat.completions.delete",
    "audio.transcriptions.create",
    "audio.translations.create",
    "audio.speech.create",
    "images.generate",
    "images.edit",
    "moderations.create",
    "POST /rerank",
    "POST /score",
    "responses.inputTokens.count",
    "responses.create(truncation, include)",
]


def node() -> str:
    found = shutil.which("node")
    if found is None or not (JS / "node_modules" / "openai").is_dir():
        pytest.fail(
            "The JavaScript SDK tests need Node 20+ and the SDK: run `make env` "
            "(or `npm ci --prefix tests/sdk/js`)."
        )
    return found


async def test_the_javascript_sdk(runtime: Runtime, builtin: FakeUpstream) -> None:
    executable = node()
    async with serve_app(runtime) as base:
        t = await create_tenant(runtime)
        env = {
            **os.environ,
            "JAN_BASE_URL": f"{base}/v1",
            "JAN_API_KEY": t.project_key,
            "JAN_MODEL": "m1",
            "JAN_EXPECTED_TOKENS": str(EXPECTED_TOKENS),
            "JAN_SPEECH_BYTES": str(len(AUDIO_CHUNK * 4)),
        }
        proc = await asyncio.create_subprocess_exec(
            executable,
            "e2e.mjs",
            cwd=JS,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-4000:]
    assert json.loads(out.decode().strip().splitlines()[-1]) == {"done": JS_OPERATIONS}
    # Each reached the model server, and the model calls are in the ledger (a count is not).
    assert builtin.tokenized[0]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Tell me a joke."},
    ]
    assert builtin.media.uploads and builtin.media.bodies
    operations = {row["operation"] for row in await usage_rows(runtime)}
    assert {"chat.completions", "audio.speech", "moderations", "rerank", "score"} <= operations


async def test_the_python_sdk_counts_input_tokens(runtime: Runtime, builtin: FakeUpstream) -> None:
    async with serve_app(runtime) as base:
        t = await create_tenant(runtime)
        sdk = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=t.project_key, max_retries=0)
        counted = await sdk.responses.input_tokens.count(
            model="m1", input="Tell me a joke.", instructions="Be brief."
        )
        assert counted.object == "response.input_tokens"
        assert counted.input_tokens == EXPECTED_TOKENS and counted.model_extra == {}
        estimated = await sdk.responses.input_tokens.count(input="Tell me a joke.")
        assert estimated.model_extra == {"jan_estimated": True} and estimated.input_tokens > 0
        with pytest.raises(openai.BadRequestError) as refused:
            await sdk.responses.input_tokens.count(model="m1", input="x", truncation="no")  # type: ignore[arg-type]
        assert refused.value.param == "truncation"
        made = await sdk.responses.create(
            model="m1",
            input="hi",
            truncation="auto",
            include=["message.output_text.logprobs"],
            top_logprobs=1,
        )
        assert made.truncation == "auto" and made.output_text
        message = made.output[0]
        assert message.type == "message"
        part = message.content[0]
        assert part.type == "output_text" and part.logprobs
        assert [t.token for t in part.logprobs[0].top_logprobs] == ["t0"]
        with pytest.raises(openai.BadRequestError) as refused:
            await sdk.responses.create(
                model="m1", input="hi", include=["reasoning.encrypted_content"]
            )
        assert refused.value.param == "include"
        # Rerank and score are not in the SDK: its generic request method reaches them.
        ranked: Any = await sdk.post(
            "/rerank",
            body={"model": "m1", "query": "red apple", "documents": ["blue sky", "red apple"]},
            cast_to=httpx.Response,
        )
        assert [r["index"] for r in ranked.json()["results"]] == [1, 0]
        scored: Any = await sdk.post(
            "/score",
            body={"model": "m1", "text_1": "a", "text_2": ["b", "c"]},
            cast_to=httpx.Response,
        )
        assert len(scored.json()["data"]) == 2
        await sdk.close()
