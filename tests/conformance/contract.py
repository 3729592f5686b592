"""OpenAI's published contract, as a checker of our answers.

``openai-openapi.subset.json`` is the part of OpenAI's OpenAPI 3.1 document
(``openai/openai-openapi``; see ``extract.py`` and README.md) for the operations we serve.
Each answer is validated, as JSON Schema 2020-12 with every ``$ref`` resolved through
``referencing``, against the schema the document gives for its operation, status and
content type; an event stream's events one by one against its ``text/event-stream``
schema. A status the operation does not document (OpenAI's document lists little besides
200 and 429) is checked against ``ErrorResponse``, OpenAI's error envelope. One reading of
the document's own: some of its schemas still carry OpenAPI 3.0's ``nullable: true``
(which 2020-12 ignores), honoured here as OpenAI means it — ``null`` is allowed too.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jsonschema
from jsonschema.exceptions import ValidationError, best_match
from jsonschema.protocols import Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SUBSET = Path(__file__).with_name("openai-openapi.subset.json")
URI = "urn:openai-openapi"
ERROR_SCHEMA = "#/components/schemas/ErrorResponse"


@functools.cache
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SUBSET.read_text())
    return loaded


def _nullable(keyword: str) -> Any:
    """Draft 2020-12's ``keyword``, letting ``null`` through where the schema says
    ``nullable: true``."""
    check = jsonschema.Draft202012Validator.VALIDATORS[keyword]

    def validate(
        validator: Validator, value: Any, instance: Any, schema: dict[str, Any]
    ) -> Iterator[ValidationError]:
        if instance is None and schema.get("nullable") is True:
            return
        yield from check(validator, value, instance, schema)

    return validate


_Checker = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    jsonschema.Draft202012Validator, {"type": _nullable("type"), "enum": _nullable("enum")}
)


@functools.cache
def _registry() -> Registry[Any]:
    resource: Resource[Any] = DRAFT202012.create_resource(document())
    registry: Registry[Any] = Registry().with_resource(URI, resource)
    return registry


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


@functools.cache
def _validator(pointer: str) -> Validator:
    validator: Validator = _Checker({"$ref": URI + pointer}, registry=_registry())
    return validator


@functools.cache
def _templates() -> list[tuple[re.Pattern[str], str]]:
    """The document's paths as patterns, literal ones first (``/responses/input_tokens``
    before ``/responses/{response_id}``)."""
    paths = sorted(document()["paths"], key=lambda p: (p.count("{"), p))
    return [(re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", p) + "$"), p) for p in paths]


def operation_of(method: str, path: str) -> str | None:
    """``"GET /organization/invites/{invite_id}"`` for ``GET /v1/organization/invites/x``;
    ``None`` for a path OpenAI's document does not have (a Jan extension)."""
    if not path.startswith("/v1/"):
        return None
    bare = path.removeprefix("/v1").split("?", 1)[0]
    for pattern, template in _templates():
        if pattern.match(bare) and method.lower() in document()["paths"][template]:
            return f"{method.upper()} {template}"
    return None


def _answer(operation: str, status: int) -> tuple[str, dict[str, Any]] | None:
    """Where the document describes ``operation``'s answer with ``status`` (a pointer),
    and that description; ``None`` when it does not."""
    method, template = operation.split(" ", 1)
    responses = document()["paths"][template][method.lower()]["responses"]
    answer = responses.get(str(status))
    if answer is None:
        return None
    if "$ref" in answer:  # a shared answer (#/components/responses/TooManyRequests)
        ref = str(answer["$ref"])
        node: dict[str, Any] = document()
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        return ref, node
    return _pointer("paths", template, method.lower(), "responses", str(status)), answer


@dataclass(frozen=True, slots=True)
class Finding:
    """One way an answer differs from the document."""

    operation: str  # "POST /responses", or "POST /v1/mcp/settings (Jan)"
    status: int
    where: str  # "body" or "event 3 (response.output_text.done)"
    location: str  # JSON path of the instance, "$.data[0].created_at"
    message: str

    def __str__(self) -> str:
        return f"{self.operation} {self.status} {self.where} {self.location}: {self.message}"


def _explain(error: ValidationError) -> ValidationError:
    """The most specific cause, taking a union's branch by its ``type`` discriminator."""
    while error.context:
        instance = error.instance
        wanted = instance.get("type") if isinstance(instance, dict) else None
        branches: dict[int, list[ValidationError]] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)  # type: ignore[arg-type]
        chosen = None
        if wanted is not None:
            for subs in branches.values():
                if not any(
                    s.validator in ("enum", "const") and list(s.relative_path) == ["type"]
                    for s in subs
                ):
                    chosen = subs
                    break
        if chosen is None:
            found = best_match(error.context)
            if found is None:
                break
            return _explain(found)
        best = best_match(chosen)
        if best is None:
            break
        error = best
    return error


def sse_events(text: str) -> list[tuple[str | None, str]]:
    """An event stream's events as (event name, data)."""
    events = []
    for block in re.split(r"\r?\n\r?\n", text):
        name = None
        data: list[str] = []
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        if data:
            events.append((name, "\n".join(data)))
    return events


@dataclass
class Checker:
    """Validates answers and remembers which operations answered with which statuses."""

    findings: list[Finding] = field(default_factory=list)
    seen: dict[str, set[int]] = field(default_factory=dict)
    jan: dict[str, set[int]] = field(default_factory=dict)  # Jan-only operations

    def check(self, method: str, path: str, response: httpx.Response) -> None:
        status = response.status_code
        operation = operation_of(method, path)
        kind = response.headers.get("content-type", "").split(";")[0].strip()
        if operation is None:
            self.jan.setdefault(f"{method} {_template_free(path)}", set()).add(status)
            if status >= 400:  # a Jan operation still errs in OpenAI's envelope
                label = f"{method} {path} (Jan)"
                self._validate(label, status, "body", ERROR_SCHEMA, response.json())
            return
        self.seen.setdefault(operation, set()).add(status)
        found = _answer(operation, status)
        if found is None:
            if status < 400:
                self._note(operation, status, "body", "$", "status not in the document")
            else:
                self._validate(operation, status, "body", ERROR_SCHEMA, response.json())
            return
        pointer, answer = found
        content = answer.get("content", {})
        media = kind if kind in content else "application/json"
        if not content:
            self._note(operation, status, "body", "$", "the document gives this answer no body")
            return
        if media not in content:
            if "application/octet-stream" in content and "json" not in kind:
                return  # documented as bytes (audio): any type of bytes
            self._note(operation, status, "body", "$", f"content type {kind!r} not documented")
            return
        if not (media.endswith("json") or media == "text/event-stream"):
            return  # a binary body (audio): its documented type is all there is to check
        pointer += "/content/" + media.replace("/", "~1") + "/schema"
        if media == "text/event-stream":
            for n, (name, data) in enumerate(sse_events(response.text)):
                if data == "[DONE]":
                    continue
                event = json.loads(data)
                where = f"event {n} ({name})"
                if name is None and isinstance(event, dict) and "error" in event:
                    # A chat stream broken midway: not in the document (see EXCEPTIONS).
                    self._note(operation, status, where, "$", "an error event")
                    self._validate(operation, status, where, ERROR_SCHEMA, event)
                else:
                    self._validate(operation, status, where, pointer, event)
        else:
            self._validate(operation, status, "body", pointer, response.json())

    def _validate(self, operation: str, status: int, where: str, pointer: str, body: Any) -> None:
        for error in _validator(pointer).iter_errors(body):
            cause = _explain(error)
            self._note(operation, status, where, cause.json_path, cause.message[:300])

    def _note(self, operation: str, status: int, where: str, location: str, message: str) -> None:
        self.findings.append(Finding(operation, status, where, location, message))


def _template_free(path: str) -> str:
    return path.split("?", 1)[0]
