"""The embedding model and ``/openai/v1/embeddings``.

The model is WordLlama's ``l2_supercat``: a static table of token embeddings (Llama 2's
32,000-token vocabulary, 256 dimensions, trained with Matryoshka losses so that a prefix of a
vector is itself an embedding). A text's vector is the mean of its tokens' rows, normalised
to unit length. Its weights (``l2_supercat_256.safetensors``) and tokenizer ship inside the
PyPI wheel ``wordllama``; they are read here with ``safetensors`` and ``tokenizers``, once,
when the app starts. Nothing is ever fetched from a model hub (``wordllama``'s own loader
looks for the tokenizer under a folder the wheel does not have and then downloads it).

The table is read-only and the tokenizer is safe to share, so requests run in worker threads
side by side, without the chat model's instances or queue.
"""

from __future__ import annotations

import base64
import importlib.util
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from tokenizers import Tokenizer

from jan_predictor.errors import APIError, InvalidRequest, ModelNotFound, NotReady
from jan_predictor.metrics import Metrics
from jan_predictor.schemas import EmbeddingRequest, parse_body
from jan_predictor.settings import Settings

logger = logging.getLogger("jan_predictor")

Vectors = npt.NDArray[np.float32]

WEIGHTS = "weights/l2_supercat_256.safetensors"
TOKENIZER = "tokenizers/l2_supercat_tokenizer_config.json"
TENSOR = "embedding.weight"
# The Matryoshka sizes the model was trained at; any prefix works, these work best.
TRAINED_DIMENSIONS = (64, 128, 256)


def wordllama_files() -> tuple[Path, Path]:
    """The weights and tokenizer inside the installed ``wordllama`` package (not imported:
    its import configures the root logger and parses its training configurations)."""
    spec = importlib.util.find_spec("wordllama")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("wordllama is not installed (it is a dependency: uv sync)")
    for location in spec.submodule_search_locations:
        root = Path(location)
        if (root / WEIGHTS).is_file() and (root / TOKENIZER).is_file():
            return root / WEIGHTS, root / TOKENIZER
    raise FileNotFoundError(f"no {WEIGHTS} and {TOKENIZER} inside the wordllama package")


@dataclass
class Embedded:
    vectors: Vectors  # one unit-length row per input
    tokens: int


class EmbeddingModel:
    """The loaded table and tokenizer; ``embed`` blocks (call it from a worker thread)."""

    def __init__(self, table: Vectors, tokenizer: Tokenizer) -> None:
        self.table = np.ascontiguousarray(table, dtype=np.float32)
        self.tokenizer = tokenizer
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()

    @classmethod
    def load(cls, weights: Path, tokenizer: Path) -> EmbeddingModel:
        return cls(load_file(str(weights))[TENSOR], Tokenizer.from_file(str(tokenizer)))

    @property
    def n_vocab(self) -> int:
        return int(self.table.shape[0])

    @property
    def dimensions(self) -> int:
        return int(self.table.shape[1])

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def embed(self, inputs: list[str] | list[list[int]], dimensions: int | None) -> Embedded:
        """Mean-pool each input's token rows, keep the first ``dimensions``, normalise."""
        ids = self.token_ids(inputs) if isinstance(inputs[0], str) else inputs
        width = dimensions or self.dimensions
        vectors = np.empty((len(ids), width), dtype=np.float32)
        for row, tokens in enumerate(ids):
            if not tokens:
                raise InvalidRequest(
                    f"input[{row}] has no tokens: every input must hold some text.",
                    param="input",
                )
            vectors[row] = self.table[tokens, :width].mean(axis=0)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        np.divide(vectors, norms, out=vectors, where=norms > 0)
        return Embedded(vectors, sum(len(tokens) for tokens in ids))


def encode(vector: Vectors, encoding_format: str) -> list[float] | str:
    """One embedding as OpenAI sends it: a list of floats, or base64 of little-endian float32."""
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]


class EmbeddingsService:
    """The embedding model's handler and card; built by the app factory, loaded at start."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.name = settings.embedding_model_name
        self.created = int(time.time())
        self.model: EmbeddingModel | None = None
        self.load_error: str | None = None

    @property
    def ready(self) -> bool:
        return self.model is not None

    async def load(self) -> None:
        started = time.perf_counter()
        weights, tokenizer = wordllama_files()
        self.model = await run_in_threadpool(EmbeddingModel.load, weights, tokenizer)
        logger.info(
            "loaded embedding model %s from %s: %d dimensions, in %.2fs",
            self.name,
            weights,
            self.model.dimensions,
            time.perf_counter() - started,
        )

    def model_card(self) -> dict[str, Any]:
        card: dict[str, Any] = {
            "id": self.name,
            "object": "model",
            "created": self.created,
            "owned_by": "jan",
        }
        if self.model is not None:
            card["dimensions"] = self.model.dimensions
        return card

    async def embeddings(self, request: Request) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await self._embeddings(request)
            status = response.status_code
            return response
        except APIError as exc:
            status = exc.status_code
            raise
        finally:
            self.metrics.requests.labels(self.name, "embeddings", str(status)).inc()
            self.metrics.request_duration.labels(self.name, "embeddings").observe(
                time.perf_counter() - started
            )

    async def _embeddings(self, request: Request) -> Response:
        body = await parse_body(request, EmbeddingRequest, self.settings.max_request_bytes)
        if body.model is not None and body.model != self.name:
            if body.model == self.settings.model_name:
                raise InvalidRequest(
                    f"The model '{body.model}' is a chat model; it does not create embeddings. "
                    f"Use '{self.name}'.",
                    param="model",
                    code="model_not_supported",
                )
            raise ModelNotFound(f"The model '{body.model}' does not exist.", param="model")
        model = self.model
        if model is None:
            raise NotReady(
                "The embedding model is still loading.",
                headers={"Retry-After": str(self.settings.retry_after_seconds)},
            )
        if body.dimensions is not None and body.dimensions > model.dimensions:
            raise InvalidRequest(
                f"This model's embeddings have {model.dimensions} dimensions: 'dimensions' "
                f"must be between 1 and {model.dimensions}.",
                param="dimensions",
            )
        inputs = body.inputs()
        if not isinstance(inputs[0], str):
            for row, tokens in enumerate(inputs):
                if any(t >= model.n_vocab for t in tokens):
                    raise InvalidRequest(f"input[{row}] holds an unknown token id.", param="input")
        embedded = await run_in_threadpool(model.embed, inputs, body.dimensions)
        self.metrics.prompt_tokens.labels(self.name).inc(embedded.tokens)
        data = [
            {
                "object": "embedding",
                "index": index,
                "embedding": encode(vector, body.encoding_format),
            }
            for index, vector in enumerate(embedded.vectors)
        ]
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": self.name,
                "usage": {"prompt_tokens": embedded.tokens, "total_tokens": embedded.tokens},
            }
        )
