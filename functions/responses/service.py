"""Preparing a response run (history, tools) and storing what it produced."""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

from functions.common.db import Executor
from functions.common.errors import NotFound, RateLimited
from functions.common.ids import new_id
from functions.common.principal import Owner, Principal
from functions.common.runtime import Runtime
from functions.common.settings import Settings
from functions.responses import store
from functions.responses.engine import Run
from functions.responses.params import ResponseRequest
from functions.services.conversations import references
from functions.services.conversations import store as conversations
from functions.services.toolbox.server import ToolRegistry, resolve_server_tools

# How many of a conversation's latest items a model sees.
HISTORY_ITEMS = 400
# What a 429 for too many background responses suggests: they take a while to finish.
BACKGROUND_RETRY_AFTER_SECONDS = 10


async def load_history(
    ex: Executor, *, owner: Owner, request: ResponseRequest
) -> tuple[list[Any], str | None]:
    """The items before this response (its conversation's, or its response chain's), and
    the affinity key its chain keeps (``affinity_key``; None without a previous one)."""
    if request.conversation_id is not None:
        found = await conversations.get_conversation(
            ex, owner=owner, conversation_id=request.conversation_id
        )
        if found is None:
            raise NotFound(
                f"Conversation with id '{request.conversation_id}' not found.",
                param="conversation",
            )
        items = await conversations.recent_items(
            ex, owner=owner, conversation_id=request.conversation_id, limit=HISTORY_ITEMS
        )
        return items, None
    if request.previous_response_id is not None:
        previous = await store.get_response(
            ex, owner=owner, response_id=request.previous_response_id
        )
        if previous is None:
            raise NotFound(
                f"Previous response with id '{request.previous_response_id}' not found.",
                param="previous_response_id",
            )
        items = await store.chain_items(ex, owner=owner, response_id=request.previous_response_id)
        # Rows stored before keys were kept: the chain from here keeps this one's ID.
        return items, previous["params"].get(AFFINITY_PARAM) or previous["id"]
    return [], None


def affinity_key(request: ResponseRequest, chain: str | None, response_id: str) -> str:
    """Which endpoint's prompt cache a response's model calls aim for (the router's
    affinity, forwarded to the engine as ``x-session-id`` and, where the provider takes
    it, ``prompt_cache_key``): the request's ``prompt_cache_key``, else the key its
    ``previous_response_id`` chain keeps (that of the chain's first response), else its
    conversation, else its ``user``, else its own ID — which the responses that follow it
    then keep. Stored with the response, so any instance continues the chain alike."""
    return (
        request.prompt_cache_key or chain or request.conversation_id or request.user or response_id
    )


async def prepare_run(
    runtime: Runtime,
    tools: ToolRegistry,
    *,
    owner: Owner,
    request: ResponseRequest,
    response_id: str | None = None,
) -> Run:
    async with runtime.db.writer.acquire() as conn:
        history, chain = await load_history(conn, owner=owner, request=request)
        inputs = await references.resolve(
            conn, owner=owner, items=request.input_items, param="input"
        )
    request = replace(request, input_items=inputs)
    server_tools = await resolve_server_tools(tools, request.tools, owner)
    response_id = response_id or new_id("resp_")
    return Run(
        response_id=response_id,
        owner=owner,
        request=request,
        history=history,
        server_tools=server_tools,
        affinity=affinity_key(request, chain, response_id),
    )


AFFINITY_PARAM = "affinity_key"  # where `params` keeps a response's affinity key
REQUESTED_PARAM = "requested_model"  # and the model asked for, when another one served


def stored_params(
    request: ResponseRequest,
    principal: Principal,
    *,
    affinity: str | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """What the `params` column keeps: the echoed settings (``model``: the one that
    served, when it is not the one asked for, which is kept too), the affinity key, and
    the caller, so a background run elsewhere acts with the same principal."""
    caller = asdict(principal)
    if caller["allowed_models"] is not None:
        caller["allowed_models"] = sorted(caller["allowed_models"])
    caller["denied_models"] = sorted(caller["denied_models"])
    params = {**request.echo(), "principal": caller}
    if affinity is not None:
        params[AFFINITY_PARAM] = affinity
    if model is not None and model != request.model:
        params[REQUESTED_PARAM], params["model"] = request.model, model
    return params


def stored_principal(params: dict[str, Any]) -> Principal:
    """The caller ``stored_params`` kept."""
    caller = dict(params["principal"])
    if caller["allowed_models"] is not None:
        caller["allowed_models"] = frozenset(caller["allowed_models"])
    caller["denied_models"] = frozenset(caller.get("denied_models", ()))
    return Principal(**caller)


class ForegroundRecorder:
    """Stores a foreground response as it runs: one insert (`in_progress`, with its input
    items) before the first event, one update with the result at the end, which also
    extends the conversation. Nothing at all with `store: false`.

    A run stopped because its client went away ends `cancelled`, like a cancelled
    background response: the response keeps what was produced, marked incomplete, and the
    conversation is not extended (a cancelled turn is not part of the history)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def started(self, run: Run) -> None:
        if run.request.store:
            await _insert(self.runtime, run)

    async def finished(self, run: Run, final: dict[str, Any]) -> None:
        if not run.request.store:
            return
        async with self.runtime.db.writer.acquire() as conn, conn.transaction():
            if await store.finish_response(conn, response=final) and final["status"] != (
                "cancelled"
            ):
                await append_to_conversation(conn, run)


async def append_to_conversation(conn: Executor, run: Run) -> None:
    """Add the input and output items to the response's conversation, if it still exists."""
    conversation_id = run.request.conversation_id
    if conversation_id is None:
        return
    locked = await conversations.get_conversation(
        conn, owner=run.owner, conversation_id=conversation_id, lock=True
    )
    if locked is None:
        return  # deleted while the response ran
    await conversations.insert_items(
        conn,
        owner=run.owner,
        conversation_id=conversation_id,
        items=[*run.request.input_items, *run.output],
    )


async def enqueue_background(runtime: Runtime, run: Run) -> None:
    """Store a background response as queued, for whichever instance claims it; 429 when
    its project or its user already has as many queued or running as the settings allow."""
    run.status = "queued"
    owner = run.owner
    async with runtime.db.writer.acquire() as conn, conn.transaction():
        await store.lock_background_admission(
            conn,
            organization_id=owner.organization_id,
            project_id=owner.project_id,
            user_id=owner.user_id,
        )
        in_project, of_user = await store.background_in_flight(
            conn,
            organization_id=owner.organization_id,
            project_id=owner.project_id,
            user_id=owner.user_id,
        )
        _admit_background(runtime.settings, owner.principal, in_project, of_user)
        await _store(conn, run)


def _admit_background(
    settings: Settings, principal: Principal, in_project: int, of_user: int
) -> None:
    per_project = settings.jan_background_max_queued_per_project
    if in_project >= per_project:
        raise _too_many(
            f"This project already has {per_project} background responses queued or running"
        )
    if principal.is_guest:
        per_user, who = settings.jan_background_max_queued_per_guest, "a guest"
    else:
        per_user, who = settings.jan_background_max_queued_per_user, "one user"
    if principal.user_id is not None and of_user >= per_user:
        raise _too_many(
            f"You already have {per_user} background responses queued or running, the most "
            f"{who} may have"
        )


def _too_many(what: str) -> RateLimited:
    return RateLimited(
        f"{what}; wait for one to finish (or cancel one) and try again.",
        headers={"Retry-After": str(BACKGROUND_RETRY_AFTER_SECONDS)},
    )


async def _insert(runtime: Runtime, run: Run) -> None:
    async with runtime.db.writer.acquire() as conn, conn.transaction():
        await _store(conn, run)


async def _store(conn: Executor, run: Run) -> None:
    """Store the response as it stands now, with its input items (in the caller's
    transaction)."""
    await store.insert_response(
        conn,
        owner=run.owner,
        response=run.snapshot(),
        params=stored_params(
            run.request, run.owner.principal, affinity=run.affinity, model=run.model
        ),
    )
    await store.insert_input_items(
        conn, owner=run.owner, response_id=run.response_id, items=run.request.input_items
    )
