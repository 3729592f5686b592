"""Webhooks as OpenAI signs them (the Standard Webhooks scheme): a secret
``whsec_<base64 of 32 random bytes>``, and on every delivery the headers ``webhook-id``
(the event's ID), ``webhook-timestamp`` (Unix seconds) and ``webhook-signature``
(``v1,<base64 HMAC-SHA256 of "id.timestamp.body" under the decoded secret>``), which the
official SDKs check with ``client.webhooks.verify_signature`` / ``unwrap``.

Deliveries connect to the address the provider guard vetted (``ProviderGuard.vet``), with
the name in ``Host`` and as the TLS server name, so a name cannot rebind to a private
address between check and connection; redirects are not followed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

import httpx

from functions.common.netguard import AddressError
from functions.common.upstream import ProviderGuard

USER_AGENT = "JanServer-Webhooks/1.0"


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def signed_headers(secret: str, event_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{event_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{signature}",
    }


def client(timeout_seconds: float) -> httpx.AsyncClient:
    """The deliveries' client: no proxies from the environment, no redirects, and no idle
    connections (a connection is keyed by the vetted address, not by the name)."""
    return httpx.AsyncClient(
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(timeout_seconds),
        limits=httpx.Limits(max_connections=50, max_keepalive_connections=0),
        headers={"User-Agent": USER_AGENT},
    )


async def post(
    http: httpx.AsyncClient, guard: ProviderGuard, url: str, headers: dict[str, str], body: bytes
) -> str | None:
    """POST ``body`` to ``url``: None when the receiver answered 2xx, else why not (short,
    for the event's ``last_error``; never the body or the headers we sent)."""
    try:
        address = await guard.vet(url)
    except AddressError as exc:
        return f"URL not allowed: {exc.message}"
    target = httpx.URL(url)
    extensions = {}
    if address is not None:
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        headers = {**headers, "Host": target.netloc.decode("ascii")}
        target = target.copy_with(host=str(address))
    request = http.build_request(
        "POST",
        target,
        content=body,
        headers={**headers, "Content-Type": "application/json"},
        extensions=extensions,
    )
    try:
        response = await http.send(request, stream=True)
        await response.aclose()  # the answer's body is not read: its status is the answer
    except httpx.TimeoutException:
        return "timed out"
    except httpx.HTTPError as exc:
        return f"could not connect: {type(exc).__name__}"
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}"
