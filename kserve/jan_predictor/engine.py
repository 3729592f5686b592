"""Model instances and dispatch.

Each instance is one ``llama_cpp.Llama`` (the GGUF's weights are memory-mapped, so instances
share them; each has its own KV cache) used by one request at a time. A request takes an idle
instance at once, or waits in a bounded FIFO queue for the first one to come free; beyond the
queue it is refused with 503. llama.cpp calls run in worker threads, never on the event loop,
under a per-instance lock.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from llama_cpp import Llama, LogitsProcessorList
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from starlette.concurrency import run_in_threadpool

from jan_predictor.errors import Overloaded
from jan_predictor.metrics import Metrics
from jan_predictor.settings import Settings

logger = logging.getLogger("jan_predictor")

T = TypeVar("T")
Scores = npt.NDArray[np.single]


class Instance:
    """One loaded model; every call into it holds its lock."""

    def __init__(self, index: int, llama: Llama) -> None:
        self.index = index
        self.llama = llama
        self.lock = threading.Lock()
        self.eos_token = int(llama.token_eos())
        self.n_vocab = int(llama.n_vocab())
        # The model's own chat template (the GGUF's), for counting a chat's prompt tokens.
        # With and without the assistant's turn opened at the end (``add_generation_prompt``).
        template = llama.metadata.get("tokenizer.chat_template")
        self.templates = {
            opened: Jinja2ChatFormatter(
                template=template,
                eos_token=self._token_text(self.eos_token),
                bos_token=self._token_text(int(llama.token_bos())),
                add_generation_prompt=opened,
            )
            for opened in (True, False)
            if template
        }

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        text: bytes = self.llama.detokenize([token], special=True)
        return text.decode("utf-8", errors="replace")

    def tokenize_chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        *,
        add_generation_prompt: bool,
        add_special: bool,
    ) -> list[int]:
        """A chat's prompt tokens as a chat completion lays the prompt out: the model's chat
        template, tokenized with its special tokens (a template without a BOS gets one only
        when ``add_special``). Without a template, the messages' text one after another.
        Tokenizing reads the vocabulary only: no lock, and no wait for a generation."""
        if not self.templates:
            text = "\n".join(str(m.get("content") or "") for m in messages)
            return self.tokenize(text, add_special=True)
        template = self.templates[add_generation_prompt]
        laid_out = template(messages=messages, tools=tools or None)
        tokens: list[int] = self.llama.tokenize(
            laid_out.prompt.encode("utf-8"), add_bos=add_special, special=True
        )
        return tokens

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        tokens: list[int] = self.llama.tokenize(
            text.encode("utf-8"), add_bos=add_special, special=True
        )
        return tokens

    def token_strs(self, tokens: list[int]) -> list[str]:
        return [self._token_text(token) for token in tokens]

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` (blocking) with this instance locked; for worker threads only."""
        with self.lock:
            return fn(*args, **kwargs)

    def next_chunk(self, chunks: Iterator[T]) -> T | None:
        with self.lock:
            return next(chunks, None)

    def close_chunks(self, chunks: Iterator[Any]) -> None:
        close = getattr(chunks, "close", None)
        if close is not None:
            with self.lock:
                close()


def load_instance(index: int, path: Path, settings: Settings) -> Instance:
    """Load the GGUF for one instance (blocking: call it from a worker thread)."""
    llama = Llama(
        model_path=str(path),
        n_ctx=settings.context_size,
        n_threads=settings.threads_per_instance,
        n_threads_batch=settings.threads_per_instance,
        verbose=False,
    )
    return Instance(index, llama)


@dataclass
class Job:
    """One generation's bookkeeping, updated from the sampling thread.

    Its logits processor runs once per sampled token: it counts tokens, applies the caller's
    ``logit_bias`` (done here because llama-cpp-python drops a logits processor passed with
    ``logit_bias``), and once ``cancel`` is set forces end-of-sequence so that a generation whose
    client went away stops at the next token, streaming or not.
    """

    started: float = field(default_factory=time.perf_counter)
    logit_bias: Mapping[int, float] = field(default_factory=dict)
    cancel: threading.Event = field(default_factory=threading.Event)
    prompt_tokens: int | None = None
    sampled: int = 0
    first_token_at: float | None = None
    finished_at: float | None = None
    eos_token: int = 0

    def processor(self, input_ids: npt.NDArray[np.intc], scores: Scores) -> Scores:
        if self.prompt_tokens is None:
            self.prompt_tokens = len(input_ids)
            self.first_token_at = time.perf_counter()
        self.sampled += 1
        if self.cancel.is_set():
            forced = np.full_like(scores, -np.inf)
            forced[self.eos_token] = 0.0
            return forced
        for token, bias in self.logit_bias.items():
            scores[token] += bias
        return scores

    def processors(self, instance: Instance) -> LogitsProcessorList:
        self.eos_token = instance.eos_token
        return LogitsProcessorList([self.processor])

    @property
    def ttft(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started

    @property
    def decode_seconds(self) -> float | None:
        if self.first_token_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.first_token_at


class Pool:
    """The model instances of this process and the bounded queue in front of them."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.instances: list[Instance] = []
        self._idle: deque[Instance] = deque()
        self._waiters: deque[asyncio.Future[Instance]] = deque()
        self.ready = False
        self.load_error: str | None = None
        self.settled = asyncio.Event()  # set once loading has succeeded or failed

    async def load(self) -> None:
        """Load every instance, one after another, off the event loop; ready only on success."""
        path = self.settings.resolved_model_path()
        started = time.perf_counter()
        for index in range(self.settings.instances):
            instance = await run_in_threadpool(load_instance, index, path, self.settings)
            self.instances.append(instance)
            self._idle.append(instance)
            self.metrics.instances.set(len(self.instances))
        self.ready = True
        self.metrics.ready.set(1)
        logger.info(
            "loaded %s from %s: %d instance(s) x %d thread(s), context %d, in %.1fs",
            self.settings.model_name,
            path,
            len(self.instances),
            self.settings.threads_per_instance,
            self.settings.context_size,
            time.perf_counter() - started,
        )

    def close(self) -> None:
        for instance in self.instances:
            with instance.lock:
                instance.llama.close()
        self.instances.clear()
        self._idle.clear()
        self.ready = False

    @property
    def n_vocab(self) -> int:
        return self.instances[0].n_vocab if self.instances else 0

    @property
    def busy(self) -> int:
        """Instances leased to a request now."""
        return len(self.instances) - len(self._idle)

    @property
    def queue_depth(self) -> int:
        return len(self._waiters)

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[Instance]:
        """Hold one instance for the duration of a generation."""
        instance = await self._acquire()
        self.metrics.busy_instances.inc()
        try:
            yield instance
        finally:
            self.metrics.busy_instances.dec()
            self._release(instance)

    async def _acquire(self) -> Instance:
        if self._idle:
            return self._idle.popleft()
        if len(self._waiters) >= self.settings.max_queue:
            self.metrics.rejected.labels(self.metrics.model_name).inc()
            raise Overloaded(
                "The model is busy: every instance is generating and the queue is full. "
                "Retry shortly.",
                headers={"Retry-After": str(self.settings.retry_after_seconds)},
            )
        waiter: asyncio.Future[Instance] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.metrics.queue_depth.set(len(self._waiters))
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Handed an instance just as we were cancelled: pass it on.
                self._release(waiter.result())
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            self.metrics.queue_depth.set(len(self._waiters))

    def _release(self, instance: Instance) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(instance)
                self.metrics.queue_depth.set(len(self._waiters))
                return
        # Most recently used first: its KV cache may still hold a shared prompt prefix.
        self._idle.appendleft(instance)
