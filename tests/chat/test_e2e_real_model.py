"""End to end: the real CPU predictor (SmolLM2-135M over llama.cpp) and the real gateway
(`python -m functions serve all`, hypercorn through func-python), as separate processes,
driven with the official `openai` SDK.

The predictor starts once per test session; its environment is kserve/.venv
(`make -C kserve env`). A missing environment is a failure, not a skip: these tests are
the proof that a fresh install answers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import openai
import pytest

from functions.common.runtime import Runtime
from tests.conftest import ADMIN_DSN, dsn_for, make_settings
from tests.e2e import ROOT, free_port, stop, wait_ready
from tests.factories import Tenant, create_tenant

MODEL = "smollm2-135m-instruct"
SECRETS = {
    "JWT_SECRET": "test-jwt-secret-0123456789abcdef0123456789",
    "APIKEY_SECRET": "test-apikey-secret-0123456789abcdef",
    "MODEL_PROVIDER_SECRET": "test-provider-secret-0123456789abcdef",
}


@pytest.fixture(scope="module")
async def e2e_database(template_database: str) -> AsyncIterator[str]:
    name = f"jan_e2e_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
        yield dsn_for(name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def gateway(
    e2e_database: str, predictor_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    port = free_port()
    data = tmp_path_factory.mktemp("gateway")
    log = data / "gateway.log"
    env = {
        **os.environ,
        **SECRETS,
        "DB_POSTGRESQL_WRITE_DSN": e2e_database,
        "JAN_INFERENCE_MODEL_URL": predictor_url,
        "JAN_DATA_DIR": str(data),
        "LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "JAN_LOG_LEVEL": "WARNING",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "functions", "serve", "all"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", proc, log, 60)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop(proc)


@pytest.fixture(scope="module")
async def tenant(e2e_database: str) -> AsyncIterator[Tenant]:
    """A tenant made straight in the gateway's database, with the gateway's secrets."""
    runtime = Runtime(make_settings(e2e_database, jan_migrate_on_start=False))
    await runtime.open()
    try:
        yield await create_tenant(runtime)
    finally:
        await runtime.close()


@pytest.fixture
def sdk(gateway: str, tenant: Tenant) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway, api_key=tenant.project_key, max_retries=0, timeout=120)


def test_models_lists_the_builtin_model(sdk: openai.OpenAI) -> None:
    models = [m.id for m in sdk.models.list()]
    assert MODEL in models
    assert sdk.models.retrieve(MODEL).id == MODEL


def test_chat_completion_answers(sdk: openai.OpenAI) -> None:
    done = sdk.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24,
        seed=1,
    )
    assert done.choices[0].message.content
    assert done.usage is not None and done.usage.completion_tokens > 0


def test_streamed_chat_completion_with_usage(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_bad_key_is_401(gateway: str) -> None:
    bad = openai.OpenAI(base_url=gateway, api_key="sk-proj-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_unknown_model_is_404(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )


def test_too_long_prompt_is_400(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "word " * 5000}], max_tokens=4
        )
