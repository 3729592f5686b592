"""The OpenAI surface under ``/openai/v1``: chat completions, completions and models
(embeddings: ``jan_predictor.embeddings``)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from typing import Any, cast

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from jan_predictor.embeddings import EmbeddingsService
from jan_predictor.engine import Instance, Job, Pool
from jan_predictor.errors import (
    APIError,
    ClientClosedRequest,
    InvalidRequest,
    ModelNotFound,
    NotReady,
    classify_engine_error,
)
from jan_predictor.metrics import Metrics
from jan_predictor.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    TokenizeRequest,
    parse_body,
)
from jan_predictor.settings import Settings
from jan_predictor.streaming import EventStreamResponse, sse, watch_disconnect

logger = logging.getLogger("jan_predictor")

Chunk = dict[str, Any]


class OpenAIService:
    """Handlers for one served model; built by the app factory."""

    def __init__(
        self, settings: Settings, pool: Pool, embeddings: EmbeddingsService, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.embeddings = embeddings
        self.metrics = metrics
        self.created = int(time.time())

    # -- models ------------------------------------------------------------------------------

    def _model_card(self) -> dict[str, Any]:
        return {
            "id": self.settings.model_name,
            "object": "model",
            "created": self.created,
            "owned_by": "jan",
            "max_model_len": self.settings.context_size,
        }

    async def list_models(self, request: Request) -> Response:
        # The chat model first: a gateway's health probe asks the first model listed.
        cards = [self._model_card(), self.embeddings.model_card()]
        return JSONResponse({"object": "list", "data": cards})

    async def get_model(self, request: Request) -> Response:
        name = request.path_params["model_id"]
        if name == self.embeddings.name:
            return JSONResponse(self.embeddings.model_card())
        self._check_model(name)
        return JSONResponse(self._model_card())

    def _check_model(self, name: str | None) -> None:
        if name is None or name == self.settings.model_name:
            return
        if name == self.embeddings.name:
            raise InvalidRequest(
                f"The model '{name}' is an embedding model; it does not generate text. "
                f"Use '{self.settings.model_name}'.",
                param="model",
                code="model_not_supported",
            )
        raise ModelNotFound(f"The model '{name}' does not exist.", param="model")

    # -- tokenizer ---------------------------------------------------------------------------

    async def tokenize(self, request: Request) -> Response:
        """vLLM's ``/tokenize``: ``count``, ``max_model_len`` and ``tokens`` of a chat's
        prompt (as a chat completion lays it out) or of a plain ``prompt``."""
        asked = await parse_body(request, TokenizeRequest, self.settings.max_request_bytes)
        self._check_model(asked.model)
        self._check_ready()
        instance = self.pool.instances[0]  # tokenizing reads the shared vocabulary only
        try:
            if asked.messages is not None:
                messages, tools = asked.chat(self.settings.default_system_prompt)
                tokens = await run_in_threadpool(
                    instance.tokenize_chat,
                    messages,
                    tools,
                    add_generation_prompt=asked.add_generation_prompt,
                    add_special=bool(asked.add_special_tokens),
                )
            else:
                assert asked.prompt is not None
                add_special = asked.add_special_tokens is not False
                tokens = await run_in_threadpool(
                    instance.tokenize, asked.prompt, add_special=add_special
                )
        except (ValueError, TypeError) as exc:  # a template that refuses these messages
            raise InvalidRequest(f"The chat template refused the messages: {exc}") from exc
        return JSONResponse(
            {
                "count": len(tokens),
                "max_model_len": self.settings.context_size,
                "tokens": tokens,
                "token_strs": instance.token_strs(tokens) if asked.return_token_strs else None,
            }
        )

    # -- generation endpoints ----------------------------------------------------------------

    async def chat_completions(self, request: Request) -> Response:
        return await self._generate(request, "chat")

    async def completions(self, request: Request) -> Response:
        return await self._generate(request, "completions")

    async def _generate(self, request: Request, endpoint: str) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await self._dispatch(request, endpoint, started)
            status = response.status_code
            return response
        except APIError as exc:
            status = exc.status_code
            raise
        finally:
            model = self.settings.model_name
            self.metrics.requests.labels(model, endpoint, str(status)).inc()
            self.metrics.request_duration.labels(model, endpoint).observe(
                time.perf_counter() - started
            )

    async def _dispatch(self, request: Request, endpoint: str, started: float) -> Response:
        job = Job(started=started)
        if endpoint == "chat":
            chat = await parse_body(request, ChatCompletionRequest, self.settings.max_request_bytes)
            self._check_model(chat.model)
            self._check_ready()
            job.logit_bias = chat.bias(self.pool.n_vocab)
            kwargs = chat.to_llama(self.settings.default_system_prompt)
            stream, include_usage, fn_name = chat.stream, chat.include_usage, "chat"
        else:
            completion = await parse_body(
                request, CompletionRequest, self.settings.max_request_bytes
            )
            self._check_model(completion.model)
            self._check_ready()
            job.logit_bias = completion.bias(self.pool.n_vocab)
            kwargs = completion.to_llama()
            prompt = kwargs["prompt"]
            if isinstance(prompt, list) and any(t < 0 or t >= self.pool.n_vocab for t in prompt):
                raise InvalidRequest("prompt holds an unknown token id.", param="prompt")
            stream, include_usage, fn_name = completion.stream, completion.include_usage, "text"
        kwargs["model"] = self.settings.model_name
        if stream:
            return await self._stream(request, fn_name, kwargs, job, include_usage)
        return await self._complete(request, fn_name, kwargs, job)

    def _check_ready(self) -> None:
        if not self.pool.ready:
            raise NotReady(
                "The model is still loading.",
                headers={"Retry-After": str(self.settings.retry_after_seconds)},
            )

    def _skip_if_gone(self, job: Job) -> None:
        """A client that hung up while queued gets no generation at all."""
        if job.cancel.is_set():
            self.metrics.cancelled.labels(self.settings.model_name).inc()
            raise ClientClosedRequest("The client closed the request before it was served.")

    async def _complete(
        self, request: Request, fn_name: str, kwargs: dict[str, Any], job: Job
    ) -> Response:
        with watch_disconnect(request, job.cancel):
            async with self.pool.lease() as instance:
                self._skip_if_gone(job)
                fn = _llama_fn(instance, fn_name)
                kwargs["logits_processor"] = job.processors(instance)
                try:
                    result: dict[str, Any] = await run_in_threadpool(instance.call, fn, **kwargs)
                except Exception as exc:
                    raise classify_engine_error(exc, prompt_param=_prompt_param(fn_name)) from exc
        job.finished_at = time.perf_counter()
        usage = result.get("usage") or {}
        self.metrics.observe_generation(
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            ttft=job.ttft,
            decode_seconds=job.decode_seconds,
            cancelled=job.cancel.is_set(),
        )
        result["model"] = self.settings.model_name
        return JSONResponse(result)

    async def _stream(
        self,
        request: Request,
        fn_name: str,
        kwargs: dict[str, Any],
        job: Job,
        include_usage: bool,
    ) -> Response:
        stack = AsyncExitStack()
        try:
            with watch_disconnect(request, job.cancel):
                instance = await stack.enter_async_context(self.pool.lease())
                self._skip_if_gone(job)
                fn = _llama_fn(instance, fn_name)
                kwargs["logits_processor"] = job.processors(instance)
                kwargs["stream"] = True
                try:
                    chunks: Iterator[Chunk] = await run_in_threadpool(instance.call, fn, **kwargs)
                    stack.push_async_callback(run_in_threadpool, instance.close_chunks, chunks)
                    # Pull the first chunk (the prompt's evaluation) before answering, so that
                    # a prompt beyond the context window is a 400, not a broken stream.
                    first = await run_in_threadpool(instance.next_chunk, chunks)
                except Exception as exc:
                    raise classify_engine_error(exc, prompt_param=_prompt_param(fn_name)) from exc
        except BaseException:
            await stack.aclose()
            raise
        events = self._events(instance, chunks, first, job, include_usage, stack)
        return EventStreamResponse(events, on_disconnect=job.cancel.set)

    async def _events(
        self,
        instance: Instance,
        chunks: Iterator[Chunk],
        first: Chunk | None,
        job: Job,
        include_usage: bool,
        stack: AsyncExitStack,
    ) -> AsyncIterator[bytes]:
        finish_reason: str | None = None
        last: Chunk | None = None
        try:
            chunk = first
            while chunk is not None:
                chunk["model"] = self.settings.model_name
                finish_reason = chunk["choices"][0].get("finish_reason") or finish_reason
                last = chunk
                yield sse(chunk)
                if job.cancel.is_set():
                    break
                chunk = await run_in_threadpool(instance.next_chunk, chunks)
            job.finished_at = time.perf_counter()
            if include_usage and last is not None:
                yield sse(
                    {
                        "id": last["id"],
                        "object": last["object"],
                        "created": last["created"],
                        "model": self.settings.model_name,
                        "choices": [],
                        "usage": _stream_usage(job, finish_reason),
                    }
                )
            yield b"data: [DONE]\n\n"
        except Exception as exc:
            error = classify_engine_error(exc)
            yield sse(error.body())
        finally:
            # Shielded: this also runs when the response is cancelled by a disconnect.
            with anyio.CancelScope(shield=True):
                if job.finished_at is None:
                    job.finished_at = time.perf_counter()
                await stack.aclose()
                usage = _stream_usage(job, finish_reason)
                self.metrics.observe_generation(
                    prompt_tokens=usage["prompt_tokens"],
                    completion_tokens=usage["completion_tokens"],
                    ttft=job.ttft,
                    decode_seconds=job.decode_seconds,
                    cancelled=job.cancel.is_set(),
                )


def _stream_usage(job: Job, finish_reason: str | None) -> dict[str, int]:
    prompt = job.prompt_tokens or 0
    # The processor also ran for the end-of-sequence token, which is not part of the output
    # (a stop sequence also ends with "stop": then this counts one token short).
    completion = job.sampled - 1 if finish_reason == "stop" and job.sampled else job.sampled
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _prompt_param(fn_name: str) -> str:
    return "messages" if fn_name == "chat" else "prompt"


def _llama_fn(instance: Instance, fn_name: str) -> Callable[..., Any]:
    llama = instance.llama
    fn = llama.create_chat_completion if fn_name == "chat" else llama.create_completion
    return cast("Callable[..., Any]", fn)
