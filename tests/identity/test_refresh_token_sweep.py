"""Housekeeping deletes refresh tokens a day after they expired or were revoked; live and
spent-but-unexpired tokens stay (a spent one presented again still revokes its family)."""

from __future__ import annotations

import httpx

from functions.auth import sessions
from functions.common import tokens
from functions.common.housekeeping import Housekeeping
from functions.common.runtime import Runtime
from tests.conftest import component

REFRESH = "/v1/auth/refresh-token"
# Each token's state, written over what new_refresh_token stored.
STATES = {
    "expired_long_ago": "expires_at = now() - interval '25 hours'",
    "expired_recently": "expires_at = now() - interval '23 hours'",
    "revoked_long_ago": "revoked_at = now() - interval '25 hours'",
    "revoked_recently": "revoked_at = now() - interval '1 hour'",
    "spent": "used_at = now() - interval '1 hour'",
}


async def test_dead_refresh_tokens_are_swept_a_day_later(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    session = (await client.post("/v1/auth/guest-login")).json()
    user_id = session["user"]["id"]
    made: dict[str, str] = {}
    async with runtime.db.writer.acquire() as conn:
        for name, change in STATES.items():
            made[name] = await sessions.new_refresh_token(conn, user_id=user_id)
            await conn.execute(
                f"UPDATE refresh_tokens SET {change} WHERE token_hash = $1",  # noqa: S608
                tokens.hash_refresh_token(made[name]),
            )

    done = await component(runtime, Housekeeping).run_once(runtime.db)

    assert done["auth.refresh_tokens"] == 2
    rows = await runtime.db.writer.fetch("SELECT token_hash FROM refresh_tokens")
    left = {bytes(r["token_hash"]) for r in rows}
    kept = {n for n, t in made.items() if tokens.hash_refresh_token(t) in left}
    assert kept == {"expired_recently", "revoked_recently", "spent"}
    assert tokens.hash_refresh_token(session["refresh_token"]) in left
    reused = await client.post(REFRESH, json={"refresh_token": made["spent"]})
    assert reused.status_code == 401
    assert reused.json()["error"]["code"] == "refresh_token_reused"
    assert (await component(runtime, Housekeeping).run_once(runtime.db))["auth.refresh_tokens"] == 0
