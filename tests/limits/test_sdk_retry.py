"""The official ``openai`` SDK's own retry honours our refusals: a 429 with Retry-After
(and ``retry-after-ms``) makes it wait that long and try again, and the call succeeds."""

from __future__ import annotations

import time

import httpx
import httpx2
import openai

from functions.common.runtime import Runtime
from tests.chat.fakes import FakeUpstream
from tests.factories import create_tenant
from tests.limits.support import set_project_limits
from tests.tools.http_server import serve_app


async def test_the_sdk_waits_as_told_and_succeeds(runtime: Runtime, fake: FakeUpstream) -> None:
    seen: list[tuple[int, float, httpx2.Headers]] = []

    async def record(response: httpx2.Response) -> None:
        seen.append((response.status_code, time.monotonic(), response.headers))

    async with serve_app(runtime) as base:
        tenant = await create_tenant(runtime)
        async with httpx.AsyncClient(base_url=base) as admin:
            await set_project_limits(
                admin, tenant.admin_headers, tenant.project_id, "m1", max_requests_per_1_minute=60
            )
            # Use the minute's requests up (one comes back every second).
            body = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}
            for _ in range(200):
                r = await admin.post(
                    "/v1/chat/completions", json=body, headers=tenant.project_headers
                )
                if r.status_code == 429:
                    break
            assert r.status_code == 429
        calls_before = fake.calls
        # The SDK's own HTTP client (httpx2), watched: what it got, and when.
        http = httpx2.AsyncClient(event_hooks={"response": [record]})
        async with openai.AsyncOpenAI(
            base_url=f"{base}/v1", api_key=tenant.project_key, max_retries=2, http_client=http
        ) as sdk:
            raw = await sdk.chat.completions.with_raw_response.create(
                model="m1", messages=[{"role": "user", "content": "hi"}]
            )
        await http.aclose()
    assert raw.http_response.status_code == 200
    assert raw.parse().choices[0].message.content == "hi from builtin"
    statuses = [status for status, _, _ in seen]
    assert statuses[0] == 429 and statuses[-1] == 200  # refused, waited, then served
    refused_at, refusal = seen[0][1], seen[0][2]
    wait = int(refusal["retry-after-ms"]) / 1000
    assert 0 < wait <= 1.0 and refusal["retry-after"] == "1"
    assert refusal["x-ratelimit-limit-requests"] == "60"
    # The SDK's next attempt came no sooner than it was told (its request left after the
    # wait, so the answer to it arrived later still).
    assert seen[1][1] - refused_at >= wait
    assert fake.calls == calls_before + 1  # the refused attempt never reached the model
    assert raw.headers["x-ratelimit-limit-requests"] == "60"
