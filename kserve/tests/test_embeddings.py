"""``/openai/v1/embeddings`` through the real ASGI app and the real WordLlama weights."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from starlette.applications import Starlette

from jan_predictor import create_app
from jan_predictor.embeddings import EmbeddingModel, wordllama_files
from tests.conftest import EMBEDDING_MODEL, MODEL, make_settings, running

pytestmark = pytest.mark.anyio

TEXTS = ["The cat sat on the mat.", "A kitten is sitting on a rug.", "Stock markets fell sharply."]
Matrix = npt.NDArray[np.float64]


async def embed(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/openai/v1/embeddings", json={"model": EMBEDDING_MODEL, **body})


def vectors(response: httpx.Response) -> Matrix:
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [d["index"] for d in data] == list(range(len(data)))
    assert {d["object"] for d in data} == {"embedding"}
    return np.array([d["embedding"] for d in data], dtype=np.float64)


async def test_float_embeddings_are_unit_vectors_that_place_similar_texts_close(
    client: httpx.AsyncClient,
) -> None:
    response = await embed(client, input=TEXTS)
    body = response.json()
    assert body["object"] == "list"
    assert body["model"] == EMBEDDING_MODEL
    found = vectors(response)
    assert found.shape == (3, 256)
    np.testing.assert_allclose(np.linalg.norm(found, axis=1), 1.0, atol=1e-5)
    similarity = found @ found.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2
    assert similarity[0, 1] > similarity[1, 2] + 0.2
    usage = body["usage"]
    assert usage["prompt_tokens"] == usage["total_tokens"] > len(TEXTS)


async def test_vectors_match_the_wordllama_library_on_the_same_files(
    client: httpx.AsyncClient,
) -> None:
    """The wheel's own pipeline (its loader pointed at the wheel's files, downloads off)."""
    from wordllama import WordLlama  # type: ignore[import-untyped]

    weights, _ = wordllama_files()
    library = WordLlama.load(cache_dir=weights.parent.parent, disable_download=True)
    expected = library.embed(TEXTS, norm=True)
    np.testing.assert_allclose(vectors(await embed(client, input=TEXTS)), expected, atol=1e-5)


async def test_base64_decodes_to_the_float_vector(client: httpx.AsyncClient) -> None:
    floats = vectors(await embed(client, input=TEXTS[0]))
    response = await embed(client, input=TEXTS[0], encoding_format="base64")
    assert response.status_code == 200, response.text
    encoded = response.json()["data"][0]["embedding"]
    assert isinstance(encoded, str)
    decoded = np.frombuffer(base64.b64decode(encoded), dtype="<f4")
    np.testing.assert_allclose(decoded, floats[0], rtol=0, atol=1e-7)


@pytest.mark.parametrize("dimensions", [64, 100, 256])
async def test_dimensions_is_the_normalised_prefix(
    client: httpx.AsyncClient, dimensions: int
) -> None:
    full = vectors(await embed(client, input=TEXTS))
    short = vectors(await embed(client, input=TEXTS, dimensions=dimensions))
    assert short.shape == (3, dimensions)
    prefix = full[:, :dimensions]
    prefix /= np.linalg.norm(prefix, axis=1, keepdims=True)
    np.testing.assert_allclose(short, prefix, atol=1e-5)


async def test_token_arrays_embed_like_the_text(
    app_and_client: tuple[Starlette, httpx.AsyncClient],
) -> None:
    app, client = app_and_client
    model: EmbeddingModel = app.state.embeddings.model
    ids = model.token_ids(TEXTS[:2])
    texts = vectors(await embed(client, input=TEXTS[:2]))
    one = vectors(await embed(client, input=ids[0]))
    many = vectors(await embed(client, input=ids))
    np.testing.assert_allclose(one[0], texts[0], atol=1e-6)
    np.testing.assert_allclose(many, texts, atol=1e-6)


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        ({"input": ""}, 400, "input", "invalid_request"),
        ({"input": []}, 400, "input", "invalid_request"),
        ({"input": ["fine", ""]}, 400, "input", "invalid_request"),
        ({"input": [[]]}, 400, "input", "invalid_request"),
        ({"input": [1, 99999]}, 400, "input", "invalid_request"),
        ({"input": [-1]}, 400, "input", "invalid_request"),
        ({"input": ["x"] * 2049}, 400, "input", "invalid_request"),
        ({"input": {"text": "x"}}, 400, "input", "invalid_request"),
        ({}, 400, "input", "invalid_request"),
        ({"input": "x", "dimensions": 257}, 400, "dimensions", "invalid_request"),
        ({"input": "x", "dimensions": 0}, 400, "dimensions", "invalid_request"),
        ({"input": "x", "encoding_format": "int8"}, 400, "encoding_format", "invalid_request"),
        ({"input": "x", "model": MODEL}, 400, "model", "model_not_supported"),
        ({"input": "x", "model": "text-embedding-3-small"}, 404, "model", "model_not_found"),
    ],
)
async def test_bad_requests_get_openai_errors(
    client: httpx.AsyncClient, body: dict[str, Any], status: int, param: str, code: str
) -> None:
    body.setdefault("model", EMBEDDING_MODEL)
    response = await client.post("/openai/v1/embeddings", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, code)


async def test_the_model_may_be_left_out(client: httpx.AsyncClient) -> None:
    response = await client.post("/openai/v1/embeddings", json={"input": "hello"})
    assert response.json()["model"] == EMBEDDING_MODEL
    assert vectors(response).shape == (1, 256)


async def test_the_embedding_model_does_not_chat(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/openai/v1/chat/completions",
        json={"model": EMBEDDING_MODEL, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "model_not_supported"


async def test_embeddings_are_counted(app_and_client: tuple[Starlette, httpx.AsyncClient]) -> None:
    _, client = app_and_client
    tokens = (await embed(client, input=TEXTS)).json()["usage"]["prompt_tokens"]
    await embed(client, input="")
    lines = (await client.get("/metrics")).text.splitlines()
    model = f'model="{EMBEDDING_MODEL}"'
    for status in ("200", "400"):
        series = f'jan_predictor_requests_total{{endpoint="embeddings",{model},status="{status}"}}'
        assert f"{series} 1.0" in lines
    assert f"jan_predictor_prompt_tokens_total{{{model}}} {float(tokens)}" in lines


@pytest.fixture
async def app_and_client() -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    app = create_app(make_settings())
    async with running(app) as client:
        yield app, client
