"""Keys, tokens, codes and secrets never reach the logs, even at DEBUG."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import httpx
import pytest

from functions.common.logs import JSONFormatter
from functions.common.runtime import Runtime
from tests.factories import bearer, create_tenant


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


async def test_credentials_never_logged(
    client: httpx.AsyncClient, runtime: Runtime, captured: io.StringIO
) -> None:
    client.base_url = httpx.URL("https://testserver")
    t = await create_tenant(runtime)
    secrets = [t.admin_key, t.project_key, t.access_token]
    created = await client.post(
        "/v1/organization/admin_api_keys", json={"name": "x"}, headers=t.admin_headers
    )
    secrets.append(created.json()["value"])
    invite = await client.post(
        "/v1/organization/invites",
        json={"email": "log@test.test", "role": "reader"},
        headers=t.admin_headers,
    )
    secrets.append(invite.json()["code"])
    guest = (await client.post("/v1/auth/guest-login")).json()
    secrets += [guest["access_token"], guest["refresh_token"]]
    rotated = (await client.post("/v1/auth/refresh-token")).json()
    secrets += [rotated["access_token"], rotated["refresh_token"]]
    # Failures log too: a reused refresh token, bad keys, a bad JWT, a 404.
    await client.post("/v1/auth/refresh-token", json={"refresh_token": guest["refresh_token"]})
    await client.get("/v1/organization/projects", headers=bearer(t.project_key + "x"))
    await client.get("/v1/organization/projects", headers=bearer(t.access_token[:-2] + "zz"))
    await client.get("/v1/organization/projects/proj_nope", headers=t.admin_headers)
    await client.post("/v1/auth/logout")
    for name in ("jwt_secret", "apikey_secret", "model_provider_secret"):
        value = getattr(runtime.settings, name)
        secrets.append(value.get_secret_value())
    logged = captured.getvalue()
    assert "request" in logged  # the access log did run
    for secret in secrets:
        assert secret and secret not in logged
        assert secret[-12:] not in logged


def test_redaction_covers_every_credential_shape() -> None:
    from functions.common import tokens
    from functions.common.logs import redact
    from functions.services import keys

    samples = [
        keys.generate(prefix, b"s").plaintext
        for prefix in (keys.ADMIN_PREFIX, keys.PROJECT_PREFIX, keys.SERVICE_ACCOUNT_PREFIX)
    ]
    samples += [
        tokens.new_refresh_token()[0],
        tokens.issue_access_token("s" * 32, user_id="user_x"),
    ]
    for sample in samples:
        assert sample not in redact(f"oops: {sample} leaked"), sample
