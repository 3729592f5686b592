"""Fetching a web page for a model: SSRF-safe, size- and time-limited, redirects re-checked.

Each hop is resolved and vetted by ``common.netguard`` and the request goes to the vetted
address (the name travels in ``Host`` and, for HTTPS, as the TLS server name, so
certificates are still checked against it). Redirects are followed here, one hop at a
time, so a public page cannot bounce us into the cluster. The client keeps no idle
connections: a pooled connection is keyed by address, and reusing one made for another
name would mix sites.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urljoin

import httpx

from functions.common.netguard import AddressPolicy, AddressRefused, Unresolvable, vetted_address
from functions.services.toolbox.base import ToolError

MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "JanServer-Fetch/1.0"
ACCEPT = "text/html,application/xhtml+xml,text/plain;q=0.9,application/json;q=0.8,*/*;q=0.1"


@dataclass(frozen=True, slots=True)
class Page:
    url: str  # after redirects
    status: int
    content_type: str  # media type only, lower-case
    charset: str | None
    body: bytes
    truncated: bool

    def text(self) -> str:
        try:
            return self.body.decode(self.charset or "utf-8", errors="replace")
        except LookupError:  # a charset name Python does not know
            return self.body.decode("utf-8", errors="replace")


def fetch_client() -> httpx.AsyncClient:
    """The client page fetches go through (no proxies from the environment, no pooling)."""
    return httpx.AsyncClient(
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(10.0),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=0),
        headers={"User-Agent": USER_AGENT, "Accept": ACCEPT},
    )


async def fetch_page(
    client: httpx.AsyncClient, url: str, *, policy: AddressPolicy, max_bytes: int
) -> Page:
    """GET ``url``, following up to MAX_REDIRECTS redirects, reading at most ``max_bytes``.

    The caller bounds the total time. Failures the model should hear about raise ToolError.
    """
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        page_or_next = await _get_once(client, current, policy=policy, max_bytes=max_bytes)
        if isinstance(page_or_next, Page):
            return page_or_next
        current = page_or_next
    raise ToolError(f"Too many redirects (more than {MAX_REDIRECTS}) starting at {url}.")


async def _get_once(
    client: httpx.AsyncClient, url: str, *, policy: AddressPolicy, max_bytes: int
) -> Page | str:
    """One hop: a Page, or the URL a redirect points to."""
    target = _checked_url(url)
    host = target.host
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        address = await vetted_address(host, port, policy)
    except AddressRefused as exc:
        raise ToolError(
            f"Refusing to fetch {host}: it resolves to a private or reserved address "
            f"({exc.address}). Only public addresses may be fetched."
        ) from exc
    except Unresolvable as exc:
        raise ToolError(exc.message) from exc
    extensions = {"sni_hostname": host} if target.scheme == "https" else {}
    request = client.build_request(
        "GET",
        target.copy_with(host=str(address)),
        headers={"Host": target.netloc.decode("ascii")},
        extensions=extensions,
    )
    try:
        response = await client.send(request, stream=True)
    except httpx.TimeoutException as exc:
        raise ToolError(f"Timed out fetching {url}.") from exc
    except httpx.HTTPError as exc:
        raise ToolError(f"Could not fetch {url}: {type(exc).__name__}.") from exc
    try:
        location = response.headers.get("location")
        if response.status_code in REDIRECT_STATUSES and location:
            return str(urljoin(str(target), location))
        if response.status_code >= 400:
            raise ToolError(
                f"Fetching {url} failed: the server answered HTTP {response.status_code}."
            )
        body, truncated = await _read_capped(response, max_bytes, url)
    finally:
        await response.aclose()
    media_type, charset = _content_type(response.headers.get("content-type", ""))
    return Page(str(target), response.status_code, media_type, charset, body, truncated)


def _checked_url(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ToolError(f"Not a valid URL: {url!r}.") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ToolError(f"Only http and https URLs can be fetched, not {url!r}.")
    if parsed.userinfo:
        raise ToolError("URLs with credentials in them are not fetched.")
    return parsed


async def _read_capped(response: httpx.Response, max_bytes: int, url: str) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    try:
        # aiter_bytes decodes gzip/br as it goes, so the cap bounds the decoded size too.
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                return b"".join(chunks)[:max_bytes], True
    except httpx.TimeoutException as exc:
        raise ToolError(f"Timed out reading {url}.") from exc
    except httpx.HTTPError as exc:
        raise ToolError(f"Could not read {url}: {type(exc).__name__}.") from exc
    return b"".join(chunks), False


def _content_type(header: str) -> tuple[str, str | None]:
    media_type, _, params = header.partition(";")
    charset = None
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "charset" and value:
            charset = value.strip("\"' ").lower()
    return media_type.strip().lower(), charset
