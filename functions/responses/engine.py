"""Running a response: model turns, the server-side tool loop, and OpenAI's stream events.

``run_events`` is one async generator for every mode. A streamed request sends its events
as SSE; a plain request drains it and answers with the final object; a background worker
drains it too. The upstream is opened before the first event, so a request the model
server rejects outright (unknown model) still gets a plain HTTP error.

A ``Recorder`` keeps the run: ``started`` before the first event (a stored foreground
response exists, `in_progress`, from then on), ``finished`` with the final object before
the terminal event goes out (so a client that reads ``response.completed`` can fetch it at
once). A run stopped from outside (the streaming client went away, a background run's task
cancelled) is finished as `cancelled` with what it had produced, then the stop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio

from functions.common.errors import APIError, InvalidRequest, UpstreamError
from functions.common.principal import Owner
from functions.responses import calls
from functions.responses.calls import Call, Event
from functions.responses.context import fit_items, request_body
from functions.responses.model import ChatModel
from functions.responses.objects import response_error, response_object, usage_object
from functions.responses.params import ResponseRequest
from functions.responses.turn import Turn
from functions.services.conversations.items import LOGPROBS
from functions.services.toolbox.server import ServerTool, ToolOutput

log = logging.getLogger(__name__)

MAX_TOOL_ROUNDS = 8
TOOL_TIMEOUT_SECONDS = 60.0
# Bounds the writes and the upstream close a stopped run still does.
STOP_SECONDS = 10.0


@dataclass
class Run:
    response_id: str
    owner: Owner
    request: ResponseRequest
    history: list[dict[str, Any]]  # the items before this response's input
    server_tools: dict[str, ServerTool]
    created_at: float = field(default_factory=time.time)
    # The prompt-cache affinity key the model calls carry (``service.affinity_key``).
    affinity: str | None = None
    # Filled in as the run goes.
    status: str = "in_progress"
    output: list[dict[str, Any]] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None
    completed_at: float | None = None
    failure: APIError | None = None
    model: str | None = None  # the model that served the last round (a fallback's)

    def snapshot(self) -> dict[str, Any]:
        request = self.request
        done = self.status not in ("queued", "in_progress")
        params = request.echo()
        if self.model is not None:
            params["model"] = self.model
        return response_object(
            {
                "id": self.response_id,
                "created_at": self.created_at,
                "status": self.status,
                "background": request.background,
                "completed_at": self.completed_at,
                "error": self.error,
                "incomplete_details": self.incomplete_details,
                "params": params,
                "output": [dict(item) for item in self.output],
                "previous_response_id": request.previous_response_id,
                "conversation_id": request.conversation_id,
                "usage": usage_object(self.input_tokens, self.output_tokens) if done else None,
                "metadata": request.metadata,
            }
        )


class Recorder(Protocol):
    async def started(self, run: Run) -> None: ...

    async def finished(self, run: Run, final: dict[str, Any]) -> None: ...


class _ModelRound:
    """The model stream of the current round."""

    def __init__(self, chunks: AsyncIterator[Any]) -> None:
        self.chunks = chunks

    async def close(self) -> None:
        aclose = getattr(self.chunks, "aclose", None)
        if aclose is not None:
            await aclose()


async def run_events(run: Run, model: ChatModel, recorder: Recorder) -> AsyncGenerator[Event, None]:
    """The response's events, numbered; raises APIError only before the first one."""
    counter = itertools.count()

    def numbered(event: Event) -> Event:
        event["sequence_number"] = next(counter)
        return event

    items = [*run.history, *run.request.input_items]
    upstream = _ModelRound(await _open(run, model, items))
    try:
        await recorder.started(run)
    except BaseException:
        await upstream.close()
        raise
    try:
        yield numbered({"type": "response.created", "response": run.snapshot()})
        yield numbered({"type": "response.in_progress", "response": run.snapshot()})
        async with contextlib.aclosing(_rounds(run, model, items, upstream)) as rounds:
            async for event in rounds:
                yield numbered(event)
    except (asyncio.CancelledError, GeneratorExit):
        if run.status == "in_progress":  # else it ended just before the stop: keep that
            run.status = "cancelled"
        # The stop must not stop the bookkeeping: shielded, but bounded.
        with anyio.move_on_after(STOP_SECONDS, shield=True):
            await upstream.close()
            await _finish(run, recorder)
        raise
    with anyio.CancelScope(shield=True):  # a stop now must not leave the row in_progress
        final = await _finish(run, recorder)
    if run.status == "failed":
        assert run.error is not None
        yield numbered({"type": "error", **run.error, "param": None})
    terminal = {"completed": "response.completed", "incomplete": "response.incomplete"}
    yield numbered({"type": terminal.get(run.status, "response.failed"), "response": final})


async def _finish(run: Run, recorder: Recorder) -> dict[str, Any]:
    for item in run.output:
        if item.get("status") == "in_progress":
            item["status"] = "incomplete"  # cut off by a failure or a stop
    run.completed_at = time.time()
    final = run.snapshot()
    await recorder.finished(run, final)
    return final


async def _rounds(
    run: Run, model: ChatModel, items: list[dict[str, Any]], upstream: _ModelRound
) -> AsyncGenerator[Event, None]:
    """Model turns and server tool calls until an answer; the run's status at the end."""
    try:
        for round_number in range(MAX_TOOL_ROUNDS + 1):
            turn = Turn(run.output, run.server_tools)
            async for chunk in upstream.chunks:
                for event in turn.feed(chunk):
                    yield event
            if turn.finish_reason is None:
                # A stream cut before its end: don't pass half an answer off as complete.
                raise UpstreamError("The model server ended the stream early.")
            for event in turn.close():
                yield event
            run.input_tokens += turn.input_tokens
            run.output_tokens += turn.output_tokens
            if turn.finish_reason == "length":
                run.status, run.incomplete_details = "incomplete", {"reason": "max_output_tokens"}
                break
            ours = [c for c in turn.calls if c.name in run.server_tools]
            if not ours:
                break  # an answer, or calls only the client can run
            if round_number == MAX_TOOL_ROUNDS:
                run.status, run.incomplete_details = "incomplete", {"reason": "max_tool_calls"}
                break
            for call in ours:
                async for event in _run_tool(run, call):
                    yield event
            if len(ours) != len(turn.calls):
                break  # the client answers its own calls, then the model continues
            await upstream.close()
            upstream.chunks = await _open(run, model, [*items, *run.output])
        if run.status == "in_progress":
            run.status = "completed"
    except APIError as exc:
        run.status, run.failure = "failed", exc
        run.error = response_error(exc)
    except Exception:
        log.exception("response run failed", extra={"response_id": run.response_id})
        run.status = "failed"
        run.error = {"code": "server_error", "message": "The server had an error."}
    finally:
        # Also when stopped (client gone, background cancel): let go of the upstream call.
        with anyio.move_on_after(STOP_SECONDS, shield=True):
            await upstream.close()


async def _open(run: Run, model: ChatModel, items: list[dict[str, Any]]) -> AsyncIterator[Any]:
    principal, tools = run.owner.principal, run.server_tools
    items = await fit_items(model, principal, run.request, items, tools)
    body = request_body(run.request, items, tools)
    try:
        # A conversation (or a response chain) stays on one endpoint, so the engine's
        # prompt cache can serve it.
        opened = await model.stream(principal, body, affinity=run.affinity or run.response_id)
    except APIError as exc:
        if run.request.logprobs and exc.status == 400 and "logprobs" in exc.message:
            # The model server has no log probabilities (llama.cpp's predictor refuses
            # them): the parameter to name is the caller's, `include`.
            raise InvalidRequest(
                f"'include' value {LOGPROBS!r} cannot be honoured by the model "
                f"{run.request.model!r}: {exc.message}",
                param="include",
                code="unsupported_value",
            ) from None
        raise
    run.model = opened.model
    return opened.chunks


async def _run_tool(run: Run, call: Call) -> AsyncGenerator[Event, None]:
    """Run one server-side tool call; its result lands on the items the model reads next."""
    tool = run.server_tools[call.name]
    for event in calls.running(run.output, call):
        yield event
    try:
        async with asyncio.timeout(TOOL_TIMEOUT_SECONDS):
            result = await tool.run(call.arguments)
    except TimeoutError:
        result = ToolOutput(f"the tool '{tool.name}' did not finish in time.", is_error=True)
    except Exception:
        # A tool's own failure is something the model can read and work around.
        log.exception("server-side tool failed", extra={"tool": tool.name})
        result = ToolOutput(f"the tool '{tool.name}' failed.", is_error=True)
    for event in calls.finished(run.output, call, result):
        yield event
