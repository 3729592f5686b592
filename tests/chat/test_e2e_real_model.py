"""End to end: the real CPU predictor (SmolLM2-135M over llama.cpp, and WordLlama's
l2_supercat embeddings) and the real gateway
(`python -m functions serve all`, hypercorn through func-python), as separate processes,
driven with the official `openai` SDK.

The predictor starts once per test session; its environment is kserve/.venv
(`make -C kserve env`). A missing environment is a failure, not a skip: these tests are
the proof that a fresh install answers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import openai
import pytest

from functions.common.runtime import Runtime
from tests.conftest import copied_database, make_settings
from tests.e2e import gateway_process
from tests.factories import Tenant, create_tenant

MODEL = "smollm2-135m-instruct"
EMBEDDING_MODEL = "wordllama-l2-supercat"


@pytest.fixture(scope="module")
async def e2e_database(template_database: str) -> AsyncIterator[str]:
    async with copied_database(template_database, prefix="jan_e2e") as dsn:
        yield dsn


@pytest.fixture(scope="module")
def gateway(
    e2e_database: str, predictor_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    with gateway_process(
        make_settings(e2e_database),
        predictor_url=predictor_url,
        data_dir=tmp_path_factory.mktemp("gateway"),
    ) as base_url:
        yield f"{base_url}/v1"


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
    assert EMBEDDING_MODEL in models
    assert sdk.models.retrieve(MODEL).id == MODEL
    assert sdk.models.retrieve(EMBEDDING_MODEL).id == EMBEDDING_MODEL


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


def test_embeddings_default_base64_float_and_dimensions(sdk: openai.OpenAI) -> None:
    """The SDK asks for base64 unless told otherwise (and decodes it); both pass through."""
    texts = ["The cat sat on the mat.", "A kitten is sitting on a rug.", "Stock markets fell."]
    default = sdk.embeddings.create(model=EMBEDDING_MODEL, input=texts)
    floats = sdk.embeddings.create(model=EMBEDDING_MODEL, input=texts, encoding_format="float")
    assert default.model == floats.model == EMBEDDING_MODEL
    assert [d.index for d in default.data] == [0, 1, 2]
    assert {len(d.embedding) for d in default.data} == {256}
    for a, b in zip(default.data, floats.data, strict=True):
        assert a.embedding == pytest.approx(b.embedding, abs=1e-6)
    cat, kitten, stocks = (d.embedding for d in floats.data)
    assert _dot(cat, kitten) > _dot(cat, stocks) + 0.2
    assert default.usage.prompt_tokens == default.usage.total_tokens > 0

    short = sdk.embeddings.create(model=EMBEDDING_MODEL, input=texts[0], dimensions=64)
    assert len(short.data[0].embedding) == 64
    assert _dot(short.data[0].embedding, short.data[0].embedding) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(openai.BadRequestError) as too_wide:
        sdk.embeddings.create(model=EMBEDDING_MODEL, input="x", dimensions=1536)
    # The gateway passes the predictor's message on (in its own envelope).
    assert "'dimensions' must be between 1 and 256" in too_wide.value.message
    assert too_wide.value.param == "dimensions"  # the predictor's param and code, relayed
    assert too_wide.value.code == "invalid_request"


def test_the_chat_model_makes_no_embeddings(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.embeddings.create(model=MODEL, input="hello")
    assert "does not create embeddings" in refused.value.message


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))
