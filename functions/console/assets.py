"""The console's static files, read from the package once, kept in memory with their gzip
form and an ETag, and served with the headers that confine the page.

The page is a browser client of the public API on the same origin: it may load its own
files and call the API, nothing else. The Content-Security-Policy says so (no inline
script or style, no other origin, no framing), and Trusted Types are required with no
policy allowed, so no string can ever reach an HTML sink (``innerHTML`` and the like) —
model output included: the console builds every element itself.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "font-src 'self'",
        "connect-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}
# Worth compressing: text. (Every console file is text; the check keeps it honest.)
_TEXT = frozenset(_TYPES)


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    gzipped: bytes | None  # None when gzip would not make it smaller
    media_type: str
    etag: str


def _asset(path: Path) -> Asset:
    body = path.read_bytes()
    media_type = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
    packed = gzip.compress(body, compresslevel=9, mtime=0) if path.suffix in _TEXT else None
    return Asset(
        body=body,
        gzipped=packed if packed is not None and len(packed) < len(body) else None,
        media_type=media_type or "application/octet-stream",
        etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
    )


class ConsoleAssets:
    """Every file under ``root`` by its relative path, loaded on first use (a cold start
    of another area never pays for it). Only files found there are served: a request
    path is a dictionary key, never joined to a file system path."""

    def __init__(self, root: Path = STATIC) -> None:
        self._root = root
        self._files: dict[str, Asset] | None = None

    def files(self) -> dict[str, Asset]:
        if self._files is None:
            self._files = {
                p.relative_to(self._root).as_posix(): _asset(p)
                for p in sorted(self._root.rglob("*"))
                if p.is_file() and not p.name.startswith(".")
            }
        return self._files

    def get(self, name: str) -> Asset | None:
        return self.files().get(name or "index.html")
