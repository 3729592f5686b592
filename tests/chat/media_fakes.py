"""What ``FakeUpstream`` answers besides chat, as vLLM and OpenAI do, conforming to OpenAI's
document where it has the operation: audio (speech streamed out a chunk at a time,
transcriptions and translations read from a multipart upload as it arrives), images,
moderations, and vLLM's rerank and score."""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import BodyPartReader, web

CATEGORIES = (
    "hate",
    "hate/threatening",
    "harassment",
    "harassment/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
AUDIO_CHUNK = b"ID3" + bytes(range(256)) * 16  # a few KiB of "audio"


@dataclass
class Media:
    """What the media endpoints saw, and how they behave."""

    uploads: list[dict[str, Any]] = field(default_factory=list)  # fields, and the file's size
    # Set once the first bytes of an uploaded file are in (before the upload has ended).
    upload_began: asyncio.Event = field(default_factory=asyncio.Event)
    speech_chunks: int = 4
    # Speech waits for this between its first chunk and the rest (a test reads the first).
    speech_gate: asyncio.Event | None = None
    bodies: list[dict[str, Any]] = field(default_factory=list)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/audio/speech", self._speech)
        app.router.add_post("/v1/audio/transcriptions", self._transcribe)
        app.router.add_post("/v1/audio/translations", self._transcribe)
        app.router.add_post("/v1/images/generations", self._images)
        app.router.add_post("/v1/images/edits", self._image_edits)
        app.router.add_post("/v1/moderations", self._moderations)
        app.router.add_post("/v1/rerank", self._rerank)
        app.router.add_post("/v1/score", self._score)

    async def _read_upload(self, request: web.Request) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            assert isinstance(part, BodyPartReader)
            if part.filename is None:
                fields[part.name or ""] = (await part.read()).decode()
                continue
            size = 0
            while chunk := await part.read_chunk(16384):
                size += len(chunk)
                self.upload_began.set()
            fields[part.name or ""] = {"filename": part.filename, "size": size}
        self.uploads.append(fields)
        return fields

    async def _transcribe(self, request: web.Request) -> web.StreamResponse:
        fields = await self._read_upload(request)
        text = f"{fields.get('model')} heard {fields['file']['size']} bytes"
        if request.path.endswith("translations"):
            return web.json_response({"text": text})
        if fields.get("response_format") == "text":
            return web.Response(text=text + "\n", content_type="text/plain")
        usage = {"type": "tokens", "input_tokens": 11, "output_tokens": 4, "total_tokens": 15}
        if fields.get("stream") != "true":
            return web.json_response({"text": text, "usage": usage})
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for word in text.split():
            event = {"type": "transcript.text.delta", "delta": word + " "}
            await response.write(b"data: " + orjson.dumps(event) + b"\n\n")
        done = {"type": "transcript.text.done", "text": text, "usage": usage}
        await response.write(b"data: " + orjson.dumps(done) + b"\n\n")
        await response.write_eof()
        return response

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(await request.json())
        response = web.StreamResponse(headers={"content-type": "audio/mpeg"})
        await response.prepare(request)
        for n in range(self.speech_chunks):
            await response.write(AUDIO_CHUNK)
            if n == 0 and self.speech_gate is not None:
                await self.speech_gate.wait()
        await response.write_eof()
        return response

    def _image_answer(self, count: int) -> dict[str, Any]:
        image = base64.b64encode(b"\x89PNG fake image").decode()
        return {
            "created": int(time.time()),
            "data": [{"b64_json": image} for _ in range(count)],
            "usage": {
                "input_tokens": 9,
                "input_tokens_details": {"text_tokens": 9, "image_tokens": 0},
                "output_tokens": 100,
                "total_tokens": 109,
            },
        }

    async def _images(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        return web.json_response(self._image_answer(int(body.get("n") or 1)))

    async def _image_edits(self, request: web.Request) -> web.Response:
        await self._read_upload(request)
        return web.json_response(self._image_answer(1))

    async def _moderations(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        results = []
        for text in inputs:
            flagged = "kill" in str(text)
            results.append(
                {
                    "flagged": flagged,
                    "categories": {c: flagged and c == "violence" for c in CATEGORIES},
                    "category_scores": {c: 0.9 if flagged else 0.01 for c in CATEGORIES},
                    "category_applied_input_types": {c: ["text"] for c in CATEGORIES},
                }
            )
        return web.json_response({"id": "modr-1", "model": body["model"], "results": results})

    async def _rerank(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        query = set(str(body["query"]).split())
        scored = [
            (len(query & set(doc.split())) / (len(query) or 1), i, doc)
            for i, doc in enumerate(body["documents"])
        ]
        scored.sort(reverse=True)
        top = body.get("top_n") or len(scored)
        return web.json_response(
            {
                "id": "rerank-1",
                "model": body["model"],
                "usage": {"total_tokens": 17},
                "results": [
                    {"index": i, "document": {"text": doc}, "relevance_score": score}
                    for score, i, doc in scored[:top]
                ],
            }
        )

    async def _score(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        seconds = body["text_2"] if isinstance(body["text_2"], list) else [body["text_2"]]
        return web.json_response(
            {
                "id": "score-1",
                "object": "list",
                "created": int(time.time()),
                "model": body["model"],
                "data": [
                    {"index": i, "object": "score", "score": 0.5 + 0.1 * i}
                    for i in range(len(seconds))
                ],
                "usage": {"prompt_tokens": 8, "total_tokens": 8},
            }
        )
