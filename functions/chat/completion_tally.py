"""Adding up a streamed chat completion as it passes, for ``store: true``."""

from __future__ import annotations

from typing import Any

import orjson

from functions.services.inference.sse import DONE, DONE_EVENT, StreamTally, payload_of


class CompletionTally(StreamTally):
    """A ``StreamTally`` that also gives every chunk our ID and adds the chunks up into the
    ``chat.completion`` they make (``completion()``)."""

    __slots__ = ("_choices", "_head", "id")

    def __init__(self, completion_id: str, *, keep_usage_chunk: bool) -> None:
        super().__init__(keep_usage_chunk=keep_usage_chunk)
        self.id = completion_id
        self._head: dict[str, Any] = {}
        self._choices: dict[int, dict[str, Any]] = {}

    def render(self, block: bytes) -> bytes:
        out: list[bytes] = []
        for event in block.split(b"\n\n"):
            if not event:
                continue
            payload = payload_of(event)
            if payload == DONE:
                self.done = True
                out.append(DONE_EVENT)
                break
            chunk = _decode(payload)
            if chunk is None:
                out.append(event + b"\n\n")
                continue
            if chunk.get("error") is not None:
                self.error = True
                out.append(event + b"\n\n")
                continue
            usage = chunk.get("usage")
            if isinstance(usage, dict):
                self.usage = usage
                if not self.keep_usage_chunk and not chunk.get("choices"):
                    continue
            self._add(chunk)
            chunk["id"] = self.id
            out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
        return b"".join(out)

    def _add(self, chunk: dict[str, Any]) -> None:
        if not self._head:
            self._head = {
                k: chunk[k] for k in ("created", "model", "system_fingerprint") if k in chunk
            }
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            index = _index(choice, 0)
            acc = self._choices.setdefault(
                index, {"content": [], "refusal": [], "tool_calls": {}, "finish_reason": None}
            )
            delta = choice.get("delta") or {}
            for key in ("content", "refusal"):
                if isinstance(delta.get(key), str):
                    acc[key].append(delta[key])
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    _add_call(acc["tool_calls"], call)
            if choice.get("finish_reason"):
                acc["finish_reason"] = choice["finish_reason"]

    def completion(self) -> dict[str, Any]:
        """The ``chat.completion`` the stream's chunks make."""
        choices = []
        for index in sorted(self._choices):
            acc = self._choices[index]
            message: dict[str, Any] = {
                "role": "assistant",
                "content": "".join(acc["content"]) if acc["content"] else None,
                "refusal": "".join(acc["refusal"]) if acc["refusal"] else None,
            }
            if acc["tool_calls"]:
                message["tool_calls"] = [acc["tool_calls"][i] for i in sorted(acc["tool_calls"])]
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": acc["finish_reason"] or "stop",
                }
            )
        completion: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion",
            "created": self._head.get("created", 0),
            "model": self._head.get("model", ""),
            "choices": choices,
        }
        if "system_fingerprint" in self._head:
            completion["system_fingerprint"] = self._head["system_fingerprint"]
        if self.usage is not None:
            completion["usage"] = self.usage
        return completion


def _decode(payload: bytes | None) -> dict[str, Any] | None:
    if payload is None:
        return None
    try:
        chunk = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return chunk if isinstance(chunk, dict) else None


def _add_call(calls: dict[int, dict[str, Any]], delta: dict[str, Any]) -> None:
    index = _index(delta, len(calls))
    function = delta.get("function") or {}
    call = calls.get(index)
    if call is None:
        call = calls[index] = {
            "id": delta.get("id") or "",
            "type": delta.get("type") or "function",
            "function": {"name": "", "arguments": ""},
        }
    if delta.get("id"):
        call["id"] = delta["id"]
    name, arguments = function.get("name"), function.get("arguments")
    if isinstance(name, str) and name != call["function"]["name"]:
        call["function"]["name"] += name  # llama.cpp repeats the name in every delta
    if isinstance(arguments, str):
        call["function"]["arguments"] += arguments


def _index(part: dict[str, Any], default: int) -> int:
    value = part.get("index")
    return value if isinstance(value, int) else default
