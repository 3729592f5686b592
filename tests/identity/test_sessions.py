"""Sessions end to end: guest login, OIDC sign-in against a local issuer (PKCE, state,
nonce, JWKS), guest upgrade, admin e-mails, refresh rotation and reuse, logout, limits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from functions.app import create_app
from functions.auth.ratelimit import LoginRateLimiter
from functions.common.outbound import Outbound
from functions.common.runtime import Runtime
from tests.conftest import component, make_settings
from tests.factories import bearer
from tests.identity.oidc_issuer import CLIENT_ID, CLIENT_SECRET, Issuer

ADMIN_EMAIL = "boss@example.test"


@pytest.fixture
async def issuer() -> AsyncIterator[Issuer]:
    server = Issuer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def oidc_client(database_dsn: str, issuer: Issuer) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        database_dsn,
        oauth2_google_client_id=CLIENT_ID,
        oauth2_google_client_secret=CLIENT_SECRET,
        oauth2_google_redirect_url="http://testserver/v1/auth/google/callback",
        oauth2_google_issuer=issuer.url,
        organization_admin_emails=ADMIN_EMAIL,
    )
    runtime = Runtime(settings)
    app = create_app(runtime)
    await runtime.open()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as c:
        c.runtime = runtime  # type: ignore[attr-defined]
        c.app = app  # type: ignore[attr-defined]
        yield c
    await runtime.close()


def _other_browser(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """Another browser (its own cookie jar) on the same server as ``client``."""
    app = client.app  # type: ignore[attr-defined]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://testserver")


async def _start(client: httpx.AsyncClient, **kw: Any) -> dict[str, str]:
    """Start a sign-in; the authorization request's parameters."""
    login = await client.get("/v1/auth/google/login", **kw)
    assert login.status_code == 200, login.text
    return dict(parse_qsl(urlsplit(login.json()["url"]).query))


async def _sign_in(
    client: httpx.AsyncClient, issuer: Issuer, claims: dict[str, Any], **kw: Any
) -> httpx.Response:
    login = await client.get("/v1/auth/google/login", **kw)
    assert login.status_code == 200, login.text
    url = urlsplit(login.json()["url"])
    params = dict(parse_qsl(url.query))
    assert url.path == "/authorize" and params["code_challenge_method"] == "S256"
    assert params["state"] and params["nonce"] and params["code_challenge"]
    code = issuer.authorize(params, claims)
    return await client.post(
        "/v1/auth/google/callback", json={"code": code, "state": params["state"]}, **kw
    )


async def test_guest_login_and_me(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/auth/guest-login")
    assert r.status_code == 200
    session = r.json()
    assert session["token_type"] == "Bearer" and session["user"]["is_guest"] is True
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "secure" in cookie and "samesite=lax" in cookie
    me = await client.get("/v1/auth/me", headers=bearer(session["access_token"]))
    assert me.json()["id"] == session["user"]["id"]
    assert me.json()["default_project_id"].startswith("proj_")
    # A refresh token is never an access token.
    assert (
        await client.get("/v1/auth/me", headers=bearer(session["refresh_token"]))
    ).status_code == 401


async def test_refresh_rotation_reuse_and_logout(client: httpx.AsyncClient) -> None:
    client.base_url = httpx.URL("https://testserver")  # the cookie is Secure
    first = (await client.post("/v1/auth/guest-login")).json()
    client.cookies.clear()
    r = await client.post("/v1/auth/refresh-token", json={"refresh_token": first["refresh_token"]})
    assert r.status_code == 200
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    # Reusing the spent token revokes the whole family, the new token included.
    reuse = await client.post(
        "/v1/auth/refresh-token", json={"refresh_token": first["refresh_token"]}
    )
    assert reuse.status_code == 401 and reuse.json()["error"]["code"] == "refresh_token_reused"
    after = await client.post(
        "/v1/auth/refresh-token", json={"refresh_token": second["refresh_token"]}
    )
    assert after.status_code == 401
    # Cookie flow, then logout revokes.
    third = await client.post("/v1/auth/guest-login")
    assert client.cookies.get("jan_refresh_token") == third.json()["refresh_token"]
    assert (await client.post("/v1/auth/refresh-token")).status_code == 200
    out = await client.post("/v1/auth/logout")
    assert out.json()["revoked"] is True
    token = third.json()["refresh_token"]
    client.cookies.clear()
    assert (
        await client.post("/v1/auth/refresh-token", json={"refresh_token": token})
    ).status_code == 401
    assert (await client.post("/v1/auth/refresh-token")).status_code == 401
    # Nor is an access token ever a refresh token.
    r = await client.post("/v1/auth/refresh-token", json={"refresh_token": second["access_token"]})
    assert r.status_code == 401


async def test_oidc_sign_in_new_user_and_admin_email(
    oidc_client: httpx.AsyncClient, issuer: Issuer
) -> None:
    r = await _sign_in(
        oidc_client,
        issuer,
        {"sub": "g-1", "email": ADMIN_EMAIL, "email_verified": True, "name": "Boss"},
    )
    assert r.status_code == 200, r.text
    user = r.json()["user"]
    assert user["email"] == ADMIN_EMAIL and user["is_guest"] is False
    assert user["organizations"][0]["role"] == "owner"
    h = bearer(r.json()["access_token"])
    assert (await oidc_client.get("/v1/organization/users", headers=h)).status_code == 200
    oidc_client.cookies.clear()
    again = await _sign_in(oidc_client, issuer, {"sub": "g-1", "email": ADMIN_EMAIL})
    assert again.json()["user"]["id"] == user["id"]
    other = await _sign_in(
        oidc_client, issuer, {"sub": "g-2", "email": "x@example.test", "email_verified": True}
    )
    assert other.json()["user"]["organizations"] == []


async def test_guest_upgraded_in_place(oidc_client: httpx.AsyncClient, issuer: Issuer) -> None:
    guest = (await oidc_client.post("/v1/auth/guest-login")).json()
    made = await oidc_client.post(
        "/v1/conversations",
        json={"items": [{"role": "user", "content": "before signing in"}]},
        headers=bearer(guest["access_token"]),
    )
    assert made.status_code == 200, made.text
    conversation = made.json()["id"]
    r = await _sign_in(
        oidc_client,
        issuer,
        {"sub": "g-3", "email": "Up@Example.test", "email_verified": True, "name": "Up"},
    )
    user = r.json()["user"]
    assert user["id"] == guest["user"]["id"] and user["is_guest"] is False
    assert user["email"] == "up@example.test"
    assert user["default_project_id"] == guest["user"]["default_project_id"]
    # What the guest made is still theirs under the new session.
    h = bearer(r.json()["access_token"])
    assert (
        await oidc_client.get(f"/v1/conversations/{conversation}", headers=h)
    ).status_code == 200
    me = (await oidc_client.get("/v1/auth/me", headers=h)).json()
    assert me["is_guest"] is False and me["id"] == guest["user"]["id"]


async def test_guest_upgraded_by_access_token(
    oidc_client: httpx.AsyncClient, issuer: Issuer
) -> None:
    """Non-browser clients have no cookie: the guest's access token says who upgrades."""
    guest = (await oidc_client.post("/v1/auth/guest-login")).json()
    oidc_client.cookies.clear()
    r = await _sign_in(
        oidc_client,
        issuer,
        {"sub": "g-5", "email": "api@example.test", "email_verified": True},
        headers=bearer(guest["access_token"]),
    )
    assert r.json()["user"]["id"] == guest["user"]["id"]
    assert r.json()["user"]["is_guest"] is False


async def test_login_sets_a_host_cookie_binding_the_browser(oidc_client: httpx.AsyncClient) -> None:
    login = await oidc_client.get("/v1/auth/google/login")
    cookie = login.headers["set-cookie"]
    assert cookie.startswith("__Host-jan_oidc_login=")
    attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "secure", "path=/", "samesite=lax"} <= attributes
    assert not any(a.startswith("domain") for a in attributes)
    # Two sign-ins started in two tabs of one browser both finish: the cookie is kept.
    value = oidc_client.cookies["__Host-jan_oidc_login"]
    await oidc_client.get("/v1/auth/google/login")
    assert oidc_client.cookies["__Host-jan_oidc_login"] == value


async def test_callback_link_opened_in_a_victims_browser_is_refused(
    oidc_client: httpx.AsyncClient, issuer: Issuer
) -> None:
    """Login CSRF: the attacker starts a sign-in, gets a code for their own identity and has
    a guest victim open the unredeemed callback link. The victim's guest must not become
    the attacker's account (with the guest's conversations)."""
    async with _other_browser(oidc_client) as victim:
        guest = (await victim.post("/v1/auth/guest-login")).json()
        h_guest = bearer(guest["access_token"])
        made = await victim.post(
            "/v1/conversations",
            json={"items": [{"role": "user", "content": "private"}]},
            headers=h_guest,
        )
        conversation = made.json()["id"]
        await _start(victim)  # the victim's own sign-in cookie is no help to the attacker
        params = await _start(oidc_client)  # the attacker's browser
        evil = {"sub": "evil", "email": "evil@example.test", "email_verified": True}
        code = issuer.authorize(params, evil)
        link = {"code": code, "state": params["state"]}
        r = await victim.get("/v1/auth/google/callback", params=link)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == "state"
        assert error["code"] == "oidc_browser_mismatch"
        assert "set-cookie" not in r.headers  # no session for anyone
        # POST from the victim's page, with the guest's token: refused the same way.
        params = await _start(oidc_client)
        link = {"code": issuer.authorize(params, evil), "state": params["state"]}
        r = await victim.post("/v1/auth/google/callback", json=link, headers=h_guest)
        assert r.status_code == 400 and r.json()["error"]["code"] == "oidc_browser_mismatch"
        # The guest is untouched and still owns its conversation.
        me = (await victim.get("/v1/auth/me", headers=h_guest)).json()
        assert me["id"] == guest["user"]["id"] and me["is_guest"] is True and me["email"] is None
        got = await victim.get(f"/v1/conversations/{conversation}", headers=h_guest)
        assert got.status_code == 200
    runtime: Runtime = oidc_client.runtime  # type: ignore[attr-defined]
    assert (
        await runtime.db.writer.fetchval("SELECT count(*) FROM users WHERE oidc_subject = 'evil'")
        == 0
    )
    # The refused state was consumed: not even the attacker's own browser can replay it.
    replay = await oidc_client.post("/v1/auth/google/callback", json=link)
    assert replay.status_code == 400 and "Unknown or expired" in replay.json()["error"]["message"]
    # Signing in properly, the attacker gets an account of their own, without the guest's data.
    mine = await _sign_in(oidc_client, issuer, evil)
    assert mine.status_code == 200 and mine.json()["user"]["id"] != guest["user"]["id"]
    h = bearer(mine.json()["access_token"])
    assert (
        await oidc_client.get(f"/v1/conversations/{conversation}", headers=h)
    ).status_code == 404


async def test_callback_without_the_login_cookie_is_refused(
    oidc_client: httpx.AsyncClient, issuer: Issuer
) -> None:
    params = await _start(oidc_client)
    link = {"code": issuer.authorize(params, {"sub": "g-8"}), "state": params["state"]}
    value = oidc_client.cookies["__Host-jan_oidc_login"]
    oidc_client.cookies.clear()
    r = await oidc_client.get("/v1/auth/google/callback", params=link)
    assert r.status_code == 400 and r.json()["error"]["code"] == "oidc_browser_mismatch"
    # The refused state was consumed: the right browser cannot use it afterwards either.
    cookie = {"cookie": f"__Host-jan_oidc_login={value}"}
    r = await oidc_client.get("/v1/auth/google/callback", params=link, headers=cookie)
    assert r.status_code == 400 and "Unknown or expired" in r.json()["error"]["message"]


async def test_guest_seen_only_at_the_callback_is_not_upgraded(
    oidc_client: httpx.AsyncClient, issuer: Issuer
) -> None:
    """The guest to upgrade is the one that proved itself when the sign-in started; a guest
    cookie or token that first shows up at the callback upgrades nobody."""
    params = await _start(oidc_client)  # no guest yet
    guest = (await oidc_client.post("/v1/auth/guest-login")).json()  # its cookie is now set
    code = issuer.authorize(
        params, {"sub": "g-9", "email": "late@example.test", "email_verified": True}
    )
    r = await oidc_client.post(
        "/v1/auth/google/callback",
        json={"code": code, "state": params["state"]},
        headers=bearer(guest["access_token"]),
    )
    assert r.status_code == 200, r.text
    user = r.json()["user"]
    assert user["id"] != guest["user"]["id"] and user["email"] == "late@example.test"
    me = await oidc_client.get("/v1/auth/me", headers=bearer(guest["access_token"]))
    assert me.json()["is_guest"] is True and me.json()["email"] is None


async def test_email_of_another_account_is_a_conflict(
    oidc_client: httpx.AsyncClient, issuer: Issuer
) -> None:
    claims = {"email": "taken@example.test", "email_verified": True}
    assert (await _sign_in(oidc_client, issuer, {"sub": "g-6", **claims})).status_code == 200
    oidc_client.cookies.clear()
    r = await _sign_in(oidc_client, issuer, {"sub": "g-7", **claims})
    assert r.status_code == 409 and r.json()["error"]["param"] == "email"
    guest = (await oidc_client.post("/v1/auth/guest-login")).json()  # the guest is kept
    r = await _sign_in(oidc_client, issuer, {"sub": "g-7", **claims})
    assert r.status_code == 409
    me = await oidc_client.get("/v1/auth/me", headers=bearer(guest["access_token"]))
    assert me.json()["is_guest"] is True


async def test_oidc_refuses_bad_state_code_and_tokens(
    oidc_client: httpx.AsyncClient, issuer: Issuer
) -> None:
    r = await oidc_client.post("/v1/auth/google/callback", json={"code": "c", "state": "forged"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "state"
    r = await oidc_client.get("/v1/auth/google/callback")
    assert r.status_code == 400
    # A code for one login cannot be replayed with its state.
    login = await oidc_client.get("/v1/auth/google/login")
    params = dict(parse_qsl(urlsplit(login.json()["url"]).query))
    code = issuer.authorize(params, {"sub": "g-4"})
    q = {"code": code, "state": params["state"]}
    assert (await oidc_client.get("/v1/auth/google/callback", params=q)).status_code == 200
    assert (await oidc_client.get("/v1/auth/google/callback", params=q)).status_code == 400
    # ID tokens: forged signature, wrong audience, wrong nonce.
    from cryptography.hazmat.primitives.asymmetric import rsa

    from functions.auth.oidc_provider import OIDCProvider

    runtime: Runtime = oidc_client.runtime  # type: ignore[attr-defined]
    provider = OIDCProvider(runtime.settings, component(runtime, Outbound))
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for token, nonce in [
        (issuer.id_token({"sub": "s", "nonce": "n"}, key=other_key), "n"),
        (issuer.id_token({"sub": "s", "nonce": "n", "aud": "someone-else"}), "n"),
        (issuer.id_token({"sub": "s", "nonce": "n"}), "other-nonce"),
        (issuer.id_token({"sub": "s", "nonce": "n"}, kid="unknown"), "n"),
        (issuer.id_token({"sub": "s", "nonce": "n", "iss": "https://other.example"}), "n"),
    ]:
        with pytest.raises(Exception, match="ID token") as info:
            await provider.verify_id_token(token, nonce=nonce)
        assert getattr(info.value, "status", None) == 401


async def test_login_endpoints_are_rate_limited(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    component(runtime, LoginRateLimiter).limit = 3
    codes = [(await client.post("/v1/auth/guest-login")).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    r = await client.post("/v1/auth/refresh-token")
    assert r.status_code == 429 and r.headers["retry-after"] == "60"
    for method, path in [
        ("GET", "/v1/auth/google/login"),
        ("GET", "/v1/auth/google/callback"),
        ("POST", "/v1/auth/google/callback"),
    ]:
        assert (await client.request(method, path)).status_code == 429, path


async def test_abandoned_sign_ins_are_swept(oidc_client: httpx.AsyncClient) -> None:
    runtime: Runtime = oidc_client.runtime  # type: ignore[attr-defined]
    await runtime.db.writer.execute(
        "INSERT INTO oidc_login_states (state_hash, code_verifier, nonce, expires_at)"
        " VALUES ('\\x00', 'v', 'n', now() - interval '1 second')"
    )
    assert (await oidc_client.get("/v1/auth/google/login")).status_code == 200
    states = await runtime.db.writer.fetch(
        "SELECT expires_at > now() AS live FROM oidc_login_states"
    )
    assert [s["live"] for s in states] == [True]  # the new one only


async def test_id_token_must_name_the_configured_issuer(
    oidc_client: httpx.AsyncClient, issuer: Issuer
) -> None:
    """The ID token's `iss` is checked against OAUTH2_GOOGLE_ISSUER, not only against what
    the discovery document says the issuer is."""
    from functions.auth.oidc_provider import OIDCProvider

    runtime: Runtime = oidc_client.runtime  # type: ignore[attr-defined]
    issuer.discovery_issuer = "https://other.example"
    provider = OIDCProvider(runtime.settings, component(runtime, Outbound))
    token = issuer.id_token({"sub": "s", "nonce": "n", "iss": "https://other.example"})
    with pytest.raises(Exception, match="ID token") as info:
        await provider.verify_id_token(token, nonce="n")
    assert getattr(info.value, "status", None) == 401
    # The configured issuer's tokens still verify.
    who = await provider.verify_id_token(issuer.id_token({"sub": "s", "nonce": "n"}), nonce="n")
    assert who.issuer == issuer.url and who.subject == "s"
