"""OpenAI request bodies: validated here, then turned into llama-cpp-python arguments.

Unknown fields are ignored, as OpenAI-compatible servers do; known fields are checked for type
and range. What llama.cpp cannot honour (``n`` > 1, log probabilities, images) is refused with a
400 rather than silently ignored.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator
from starlette.requests import Request

from jan_predictor.errors import InvalidRequest, RequestTooLarge, from_validation_error

Temperature = Annotated[float, Field(ge=0.0, le=2.0)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
Stop = str | Annotated[list[str], Field(max_length=16)]


ModelT = TypeVar("ModelT", bound=BaseModel)
# OpenAI's limit on the inputs of one embeddings request.
MAX_EMBEDDING_INPUTS = 2048


async def parse_body(request: Request, model: type[ModelT], max_bytes: int) -> ModelT:
    """Read a request's JSON body (at most ``max_bytes``) and validate it as ``model``."""
    # Any Content-Type is read as JSON, as OpenAI-compatible servers commonly do.
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > max_bytes:
            raise RequestTooLarge(f"The request body exceeds {max_bytes} bytes.")
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise from_validation_error(exc) from exc


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Request):
    include_usage: bool = False


class TextPart(_Request):
    type: Literal["text"]
    text: str


class FunctionSpec(_Request):
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})


class Tool(_Request):
    type: Literal["function"] = "function"
    function: FunctionSpec


class NamedToolChoice(_Request):
    class _Name(_Request):
        name: str

    type: Literal["function"] = "function"
    function: _Name


class ResponseFormat(_Request):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[TextPart | dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    @field_validator("content")
    @classmethod
    def _text_only(
        cls, value: str | list[TextPart | dict[str, Any]] | None
    ) -> str | list[TextPart | dict[str, Any]] | None:
        if isinstance(value, list):
            for part in value:
                if not isinstance(part, TextPart):
                    kind = part.get("type", "unknown")
                    raise ValueError(f"content part of type '{kind}' is not supported")
        return value

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if isinstance(part, TextPart))

    def to_llama(self) -> dict[str, Any]:
        # The model's template knows system, user, assistant and tool.
        role = "system" if self.role == "developer" else self.role
        message: dict[str, Any] = {"role": role, "content": self.text()}
        if self.name is not None:
            message["name"] = self.name
        if self.tool_calls is not None:
            message["tool_calls"] = self.tool_calls
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


class _Sampling(_Request):
    model: str | None = None
    temperature: Temperature | None = None
    top_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    n: Annotated[int, Field(ge=1, le=128)] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Stop | None = None
    seed: int | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    user: str | None = None

    @model_validator(mode="after")
    def _single_choice(self) -> _Sampling:
        if self.n > 1:
            raise InvalidRequest(
                "n > 1 is not supported by this model server; send separate requests.",
                param="n",
                code="unsupported_value",
            )
        return self

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def bias(self, n_vocab: int) -> dict[int, float]:
        """``logit_bias`` keyed by token id, checked against the vocabulary."""
        result: dict[int, float] = {}
        for key, value in (self.logit_bias or {}).items():
            if not key.isdigit() or int(key) >= n_vocab:
                raise InvalidRequest(f"logit_bias: unknown token id {key!r}", param="logit_bias")
            result[int(key)] = value
        return result

    def sampling_kwargs(self) -> dict[str, Any]:
        """The sampling arguments the caller set; llama-cpp's defaults apply to the rest."""
        kwargs: dict[str, Any] = {}
        for name in ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if value is not None:
                kwargs[name] = value
        if self.stop is not None:
            kwargs["stop"] = [self.stop] if isinstance(self.stop, str) else self.stop
        return kwargs


class ChatCompletionRequest(_Sampling):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None

    @model_validator(mode="after")
    def _supported(self) -> ChatCompletionRequest:
        if self.logprobs:
            raise InvalidRequest(
                "logprobs is not supported by this model server.",
                param="logprobs",
                code="unsupported_value",
            )
        if isinstance(self.tool_choice, NamedToolChoice):
            names = {tool.function.name for tool in self.tools or []}
            if self.tool_choice.function.name not in names:
                raise InvalidRequest(
                    f"tool_choice names '{self.tool_choice.function.name}', "
                    "which is not among tools.",
                    param="tool_choice",
                )
        if self.tool_choice == "required" and len(self.tools or []) != 1:
            raise InvalidRequest(
                "tool_choice 'required' needs exactly one tool here; name the tool instead.",
                param="tool_choice",
                code="unsupported_value",
            )
        if self.response_format and self.response_format.type == "json_schema":
            schema = (self.response_format.json_schema or {}).get("schema")
            if not isinstance(schema, dict):
                raise InvalidRequest(
                    "response_format.json_schema.schema must be a JSON schema object.",
                    param="response_format",
                )
        return self

    def to_llama(self, default_system_prompt: str) -> dict[str, Any]:
        """Arguments for ``Llama.create_chat_completion``."""
        messages = [message.to_llama() for message in self.messages]
        has_system = any(m["role"] == "system" for m in messages)
        if default_system_prompt and not has_system:
            messages.insert(0, {"role": "system", "content": default_system_prompt})
        kwargs = self.sampling_kwargs()
        kwargs["messages"] = messages
        max_tokens = self.max_completion_tokens or self.max_tokens
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens
        if self.tools and self.tool_choice != "none":
            kwargs["tools"] = [tool.model_dump(exclude_none=True) for tool in self.tools]
            if isinstance(self.tool_choice, NamedToolChoice):
                kwargs["tool_choice"] = self.tool_choice.model_dump()
            elif self.tool_choice == "required":
                name = self.tools[0].function.name
                kwargs["tool_choice"] = {"type": "function", "function": {"name": name}}
            else:
                kwargs["tool_choice"] = "auto"
        if self.response_format is not None:
            if self.response_format.type == "json_object":
                kwargs["response_format"] = {"type": "json_object"}
            elif self.response_format.type == "json_schema":
                schema = (self.response_format.json_schema or {})["schema"]
                kwargs["response_format"] = {"type": "json_object", "schema": schema}
        return kwargs


class CompletionRequest(_Sampling):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)] | list[int]
    max_tokens: Annotated[int, Field(ge=1)] | None = 16
    suffix: str | None = None
    echo: bool = False
    best_of: int | None = None
    logprobs: int | None = None

    @model_validator(mode="after")
    def _supported(self) -> CompletionRequest:
        if self.logprobs is not None:
            raise InvalidRequest(
                "logprobs is not supported by this model server.",
                param="logprobs",
                code="unsupported_value",
            )
        if self.best_of is not None and self.best_of > 1:
            raise InvalidRequest(
                "best_of > 1 is not supported by this model server.",
                param="best_of",
                code="unsupported_value",
            )
        if isinstance(self.prompt, list) and not self.prompt:
            raise InvalidRequest("prompt must not be empty.", param="prompt")
        return self

    def to_llama(self) -> dict[str, Any]:
        """Arguments for ``Llama.create_completion``."""
        kwargs = self.sampling_kwargs()
        prompt = self.prompt
        if isinstance(prompt, list) and isinstance(prompt[0], str):
            prompt = prompt[0]
        kwargs["prompt"] = prompt
        kwargs["max_tokens"] = self.max_tokens
        kwargs["echo"] = self.echo
        if self.suffix is not None:
            kwargs["suffix"] = self.suffix
        return kwargs


TokenIds = list[Annotated[StrictInt, Field(ge=0)]]


class EmbeddingRequest(_Request):
    """``POST /embeddings``: text, texts, a token array or token arrays (this model's ids)."""

    model: str | None = None
    input: str | list[str] | TokenIds | list[TokenIds]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1)] | None = None
    user: str | None = None

    @model_validator(mode="after")
    def _inputs(self) -> EmbeddingRequest:
        if not self.input:
            raise InvalidRequest("input must not be empty.", param="input")
        inputs = self.inputs()
        if len(inputs) > MAX_EMBEDDING_INPUTS:
            raise InvalidRequest(
                f"input holds {len(inputs)} items; at most {MAX_EMBEDDING_INPUTS} are allowed.",
                param="input",
            )
        for index, item in enumerate(inputs):
            if not item:
                raise InvalidRequest(f"input[{index}] must not be empty.", param="input")
        return self

    def inputs(self) -> list[str] | list[list[int]]:
        """The inputs as a list: of texts, or of token arrays."""
        if isinstance(self.input, str):
            return [self.input]
        if isinstance(self.input[0], int):
            return [self.input]
        return self.input


class TokenizeRequest(_Request):
    """vLLM's ``/tokenize``: a chat request's ``messages`` (with its ``tools``) as the model's
    chat template lays them out, or a plain ``prompt``."""

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    tools: list[Tool] | None = None
    add_generation_prompt: bool = True
    add_special_tokens: bool | None = None  # default: True for a prompt, False for messages
    return_token_strs: bool = False

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise InvalidRequest("Give either 'prompt' or 'messages'.", param="messages")
        return self

    def chat(self, default_system_prompt: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The messages and tools the chat template sees, as for a chat completion."""
        assert self.messages is not None
        chat = ChatCompletionRequest(messages=self.messages, tools=self.tools)
        kwargs = chat.to_llama(default_system_prompt)
        return kwargs["messages"], kwargs.get("tools") or []
