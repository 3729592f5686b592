"""The checker itself: it finds what the document requires and reads it as OpenAI means."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.conformance.contract import Checker, operation_of


def _answer(body: Any, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json=body)


def _stream(*events: dict[str, Any]) -> httpx.Response:
    """Events named by their ``type`` (Responses), or unnamed (chat chunks)."""
    text = "".join(
        (f"event: {e['type']}\n" if "type" in e else "") + f"data: {json.dumps(e)}\n\n"
        for e in events
    )
    return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})


def _findings(method: str, path: str, answer: httpx.Response) -> list[str]:
    checker = Checker()
    checker.check(method, path, answer)
    return [f"{f.where} {f.location}: {f.message}" for f in checker.findings]


def test_operations_are_found_by_path_literal_paths_first() -> None:
    assert operation_of("GET", "/v1/organization/invites/inv_1") == (
        "GET /organization/invites/{invite_id}"
    )
    assert operation_of("POST", "/v1/responses/input_tokens") == "POST /responses/input_tokens"
    assert operation_of("POST", "/v1/responses/resp_1/cancel") == (
        "POST /responses/{response_id}/cancel"
    )
    assert operation_of("GET", "/v1/mcp/settings") is None


def test_a_missing_required_field_is_found() -> None:
    invite = {
        "object": "organization.invite",
        "id": "invite-1",
        "email": "a@b.c",
        "role": "reader",
        "status": "pending",
        "projects": [],
    }
    found = _findings("GET", "/v1/organization/invites/invite-1", _answer(invite))
    assert found == ["body $: 'created_at' is a required property"]
    fixed = _answer({**invite, "created_at": 1})
    assert _findings("GET", "/v1/organization/invites/invite-1", fixed) == []


def test_errors_are_checked_against_the_error_envelope() -> None:
    good = {
        "error": {"message": "no", "type": "invalid_request_error", "param": None, "code": None}
    }
    assert _findings("GET", "/v1/models/x", _answer(good, 404)) == []
    bad = {"error": {"message": "no", "type": "invalid_request_error"}}
    assert _findings("GET", "/v1/models/x", _answer(bad, 404)) == [
        "body $.error: 'param' is a required property",
        "body $.error: 'code' is a required property",
    ]


def test_a_union_is_explained_by_its_discriminator() -> None:
    """An output_text part without logprobs is reported as that, not as a failed match
    of some other kind of part."""
    event = {
        "type": "response.content_part.added",
        "sequence_number": 3,
        "item_id": "msg_1",
        "output_index": 0,
        "content_index": 0,
        "part": {"type": "output_text", "text": "", "annotations": []},
    }
    found = _findings("POST", "/v1/responses", _stream(event))
    assert found == [
        "event 0 (response.content_part.added) $.part: 'logprobs' is a required property"
    ]


def test_openapi_30_nullable_in_the_document_allows_null() -> None:
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}],
    }
    assert _findings("POST", "/v1/chat/completions", _stream(chunk)) == []
