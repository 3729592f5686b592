"""Fetching a web page for a model: SSRF-safe, size- and time-limited, redirects re-checked.

Each hop is resolved and vetted by ``common.netguard`` and the request goes to the vetted
address (the name travels in ``Host`` and, for HTTPS, as the TLS server name, so
certificates are still checked against it). Redirects are followed here, one hop at a
time, so a public page cannot bounce us into the cluster. The client keeps no idle
connections: a pooled connection is keyed by address, and reusing one made for another
name would mix sites.

Compressed bodies are inflated here, a step at a time and never beyond the size cap (httpx
would inflate each network read whole: 64 KB of gzip can be 64 MB of text).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from urllib.parse import urljoin

import httpx

from functions.common.netguard import AddressPolicy, AddressRefused, Unresolvable, vetted_address
from functions.services.toolbox.base import ToolError

MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "JanServer-Fetch/1.0"
ACCEPT = "text/html,application/xhtml+xml,text/plain;q=0.9,application/json;q=0.8,*/*;q=0.1"
ACCEPT_ENCODING = "gzip, deflate"  # the codings _Inflater decodes
_GZIP = 16 + zlib.MAX_WBITS


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
        headers={"User-Agent": USER_AGENT, "Accept": ACCEPT, "Accept-Encoding": ACCEPT_ENCODING},
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
    """The body, decoded, up to ``max_bytes``; True when there was more.

    Raw bytes are read and inflated here rather than by httpx, so that no step produces
    more than the room left under the cap."""
    inflater = _Inflater.for_encoding(response.headers.get("content-encoding", ""), url)
    body = bytearray()
    try:
        async for raw in response.aiter_raw():
            room = max_bytes + 1 - len(body)  # one byte more than fits says "truncated"
            body += inflater.inflate(raw, room)
            if len(body) > max_bytes:
                del body[max_bytes:]
                return bytes(body), True
    except httpx.TimeoutException as exc:
        raise ToolError(f"Timed out reading {url}.") from exc
    except httpx.HTTPError as exc:
        raise ToolError(f"Could not read {url}: {type(exc).__name__}.") from exc
    return bytes(body), False


class _Inflater:
    """One Content-Encoding (gzip, deflate or none) decoded at most ``room`` bytes at a time."""

    def __init__(self, coding: str, url: str) -> None:
        self.coding = coding
        self.url = url
        self.first = True
        self.z: zlib._Decompress | None = None
        if coding in ("gzip", "x-gzip"):
            self.z = zlib.decompressobj(_GZIP)
        elif coding == "deflate":
            self.z = zlib.decompressobj()  # zlib-wrapped, as RFC 9110 says

    @classmethod
    def for_encoding(cls, header: str, url: str) -> _Inflater:
        codings = [c.strip().lower() for c in header.split(",")]
        codings = [c for c in codings if c and c != "identity"]
        if len(codings) > 1 or (codings and codings[0] not in ("gzip", "x-gzip", "deflate")):
            raise ToolError(
                f"Could not read {url}: unsupported content encoding {header.strip()!r} "
                "(gzip and deflate are)."
            )
        return cls(codings[0] if codings else "identity", url)

    def inflate(self, data: bytes, room: int) -> bytes:
        """Up to ``room`` bytes of output; fewer only once all of ``data`` is used."""
        if self.z is None:
            return data[:room]
        # With max_length, zlib keeps the input it did not get to (unconsumed_tail) rather
        # than producing more; the caller stops at the cap, so that tail is never inflated.
        try:
            out = self.z.decompress(data, room)
        except zlib.error as exc:
            if self.coding == "deflate" and self.first:
                # Some servers send raw deflate without the zlib wrapper (httpx accepts it).
                self.first = False
                self.z = zlib.decompressobj(-zlib.MAX_WBITS)
                return self.inflate(data, room)
            raise ToolError(
                f"Could not read {self.url}: its {self.coding} encoding is corrupt."
            ) from exc
        self.first = False
        return out


def _content_type(header: str) -> tuple[str, str | None]:
    media_type, _, params = header.partition(";")
    charset = None
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "charset" and value:
            charset = value.strip("\"' ").lower()
    return media_type.strip().lower(), charset
