"""Concurrency: the bounded queue, 503 with Retry-After, and generation stopped by a disconnect."""

from __future__ import annotations

import time
from contextlib import ExitStack
from typing import Any

import anyio
import httpx
import pytest

from jan_predictor import create_app
from jan_predictor.engine import Pool
from tests.conftest import Server, make_settings, running, sse_events

# Banning both end-of-generation tokens (<|endoftext|>, <|im_end|>) keeps a generation going.
ENDLESS: dict[str, Any] = {"logit_bias": {"0": -100, "2": -100}, "temperature": 0}


@pytest.mark.anyio
async def test_full_queue_answers_503_with_retry_after() -> None:
    app = create_app(make_settings(instances=1, max_queue=1, retry_after_seconds=3))
    pool: Pool = app.state.pool
    long = {"prompt": "Once upon a time", "max_tokens": 120, **ENDLESS}
    async with running(app) as client:
        results: list[httpx.Response] = []

        async def generate() -> None:
            results.append(await client.post("/openai/v1/completions", json=long))

        async with anyio.create_task_group() as tg:
            tg.start_soon(generate)
            while pool.busy == 0:
                await anyio.sleep(0.005)
            tg.start_soon(generate)
            while pool.queue_depth == 0:
                await anyio.sleep(0.005)
            metrics = (await client.get("/metrics")).text
            assert "jan_predictor_queue_depth 1.0" in metrics
            assert "jan_predictor_busy_instances 1.0" in metrics
            refused = await client.post("/openai/v1/completions", json=long)

        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "3"
        assert refused.json()["error"]["code"] == "overloaded"
        assert [r.status_code for r in results] == [200, 200]
        assert all(r.json()["usage"]["completion_tokens"] == 120 for r in results)
        metrics = (await client.get("/metrics")).text
        assert 'jan_predictor_rejected_total{model="smollm2-135m-instruct"} 1.0' in metrics
        assert "jan_predictor_queue_depth 0.0" in metrics


@pytest.mark.anyio
async def test_zero_queue_refuses_when_all_instances_are_busy() -> None:
    app = create_app(make_settings(instances=1, max_queue=0))
    pool: Pool = app.state.pool
    async with running(app) as client:
        async with pool.lease():
            response = await client.post("/openai/v1/completions", json={"prompt": "x"})
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
        response = await client.post(
            "/openai/v1/completions", json={"prompt": "x", "max_tokens": 1}
        )
        assert response.status_code == 200


def _wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_disconnect_stops_a_streamed_generation(server: Server) -> None:
    cancelled = server.metric("jan_predictor_generations_cancelled_total")
    tokens = server.metric("jan_predictor_completion_tokens_total")
    body = {"prompt": "Once upon a time", "max_tokens": 1000, "stream": True, **ENDLESS}
    with httpx.stream("POST", f"{server.base_url}/openai/v1/completions", json=body) as response:
        assert response.status_code == 200
        received = 0
        for line in response.iter_lines():
            received += line.startswith("data: ")
            if received == 5:
                break
    # Leaving the block closed the connection: the server must stop within a token or two.
    _wait_for(lambda: server.metric("jan_predictor_generations_cancelled_total") == cancelled + 1)
    _wait_for(lambda: server.metric("jan_predictor_busy_instances") == 0)
    generated = server.metric("jan_predictor_completion_tokens_total") - tokens
    assert 5 <= generated < 200


def test_disconnect_stops_a_non_streamed_generation(server: Server) -> None:
    cancelled = server.metric("jan_predictor_generations_cancelled_total")
    tokens = server.metric("jan_predictor_completion_tokens_total")
    body = {"prompt": "Once upon a time", "max_tokens": 1000, **ENDLESS}
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.base_url}/openai/v1/completions", json=body, timeout=0.5)
    _wait_for(lambda: server.metric("jan_predictor_generations_cancelled_total") == cancelled + 1)
    assert time.monotonic() - started < 3
    generated = server.metric("jan_predictor_completion_tokens_total") - tokens
    assert generated < 400


def test_stream_reaches_the_client_token_by_token(server: Server) -> None:
    body = {"prompt": "Once upon a time", "max_tokens": 30, "stream": True, **ENDLESS}
    response = httpx.post(f"{server.base_url}/openai/v1/completions", json=body, timeout=30)
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    assert len(events) - 1 >= 25
    assert events[-2]["choices"][0]["finish_reason"] == "length"


def test_a_request_abandoned_in_the_queue_is_never_generated(server: Server) -> None:
    url = f"{server.base_url}/openai/v1/completions"
    cancelled = server.metric("jan_predictor_generations_cancelled_total")
    long = {"prompt": "Once upon a time", "max_tokens": 1000, "stream": True, **ENDLESS}
    with httpx.Client(timeout=30) as client, ExitStack() as streams:
        lines = []  # kept referenced: a dropped line iterator closes its connection
        for _ in range(2):  # the server fixture runs two instances: occupy both
            response = streams.enter_context(client.stream("POST", url, json=long))
            lines.append(response.iter_lines())
            next(lines[-1])
        assert server.metric("jan_predictor_busy_instances") == 2
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url, json={"prompt": "Hello", "max_tokens": 50}, timeout=0.3)
        _wait_for(lambda: server.metric("jan_predictor_queue_depth") == 1)
    _wait_for(lambda: server.metric("jan_predictor_generations_cancelled_total") == cancelled + 3)
    _wait_for(lambda: server.metric("jan_predictor_busy_instances") == 0)
    status_499 = 'endpoint="completions",model="smollm2-135m-instruct",status="499"'
    assert server.metric(f"jan_predictor_requests_total{{{status_499}}}") == 1
