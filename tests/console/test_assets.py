"""The console's files as served: the headers that confine the page, compression and
revalidation, what it refuses, its third-party files checked against their packages,
and the wheel carrying it all."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import subprocess
import zipfile
from pathlib import Path

import httpx

from functions.console.assets import STATIC
from functions.entry import new
from tests.pg import free_port

REPO = Path(__file__).resolve().parents[2]
PINS = json.loads((REPO / "scripts" / "console-vendor.json").read_text())["files"]


def directives(header: str) -> dict[str, str]:
    return {d.split()[0]: " ".join(d.split()[1:]) for d in header.split(";") if d.strip()}


async def test_the_page_is_confined_to_its_origin(client: httpx.AsyncClient) -> None:
    page = await client.get("/console/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = directives(page.headers["content-security-policy"])
    assert csp["default-src"] == "'none'"
    for name in ("script-src", "style-src", "img-src", "connect-src", "font-src"):
        assert csp[name] == "'self'", name  # no inline code, no other origin
    assert csp["frame-ancestors"] == "'none'" and csp["base-uri"] == "'none'"
    assert csp["require-trusted-types-for"] == "'script'" and csp["trusted-types"] == "'none'"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    # Every file is under the same policy (a module or the stylesheet included).
    for path in ("/console/js/main.js", "/console/app.css", "/console/vendor/preact.mjs"):
        r = await client.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-security-policy"] == page.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff"
    assert (
        (await client.get("/console/js/main.js"))
        .headers["content-type"]
        .startswith("text/javascript")
    )


def test_no_inline_script_or_style_and_no_other_host() -> None:
    index = (STATIC / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", index), "inline script"
    assert "<style" not in index and " style=" not in index
    for path in STATIC.rglob("*"):
        if path.suffix in {".html", ".js", ".mjs", ".css"}:
            text = path.read_text()
            # An absolute URL would name another host. (XML namespaces, such as SVG's in
            # Preact, are names that nothing fetches; the Markdown renderer's pattern for
            # links in model output is a regular expression, not a URL.)
            found = re.findall(r"""["'`(]\s*(?:https?:)?//(?!www\.w3\.org/)[\w.-]+""", text)
            assert not found, f"{path.name}: {found}"
            assert "innerHTML" not in text or path.parent.name == "vendor", path.name
            assert "localStorage." not in text and "document.cookie" not in text, path.name


async def test_compressed_revalidated_and_refused(client: httpx.AsyncClient) -> None:
    plain = await client.get("/console/vendor/preact.mjs", headers={"Accept-Encoding": "identity"})
    packed = await client.get("/console/vendor/preact.mjs", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in plain.headers
    assert packed.headers["content-encoding"] == "gzip" and packed.headers["vary"]
    assert packed.content == plain.content  # httpx inflated it
    assert int(packed.headers["content-length"]) < len(plain.content) / 2
    etag = plain.headers["etag"]
    again = await client.get("/console/vendor/preact.mjs", headers={"If-None-Match": etag})
    assert again.status_code == 304 and not again.content
    head = await client.head("/console/app.css")
    assert head.status_code == 200 and not head.content and int(head.headers["content-length"])
    bare = await client.get("/console", follow_redirects=False)
    assert bare.status_code in (307, 308) and bare.headers["location"].endswith("/console/")
    for path in ("/console/nope.js", "/console/%2e%2e/app.py", "/console/js/%2e%2e/%2e%2e/app.py"):
        missing = await client.get(path)
        assert missing.status_code == 404, path
        assert missing.json()["error"]["code"] == "unknown_url"
    posted = await client.post("/console/js/main.js")
    assert posted.status_code == 405 and posted.json()["error"]["code"] == "method_not_allowed"


def test_vendored_files_are_their_pinned_sources() -> None:
    for pin in PINS:
        data = (REPO / pin["to"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == pin["sha256"], pin["to"]


def test_vendored_files_match_their_npm_packages() -> None:
    """The tarballs (npm's cache, or the registry) have the pinned integrity, and each
    committed file is the package's file with only its listed replacements."""
    result = subprocess.run(
        [str(REPO / ".venv" / "bin" / "python"), "scripts/vendor_console.py", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_the_wheel_carries_the_console(tmp_path: Path) -> None:
    subprocess.run(
        ["uv", "build", "--wheel", "-q", "-o", str(tmp_path), str(REPO)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in STATIC.rglob("*"):
        if path.is_file():
            assert f"functions/console/static/{path.relative_to(STATIC).as_posix()}" in names


async def test_the_console_area_needs_no_database() -> None:
    """A console instance (JAN_FUNCTION=console) opens no pool and needs no secret: ready,
    and serving, with its database address pointing at nothing (a connection budget of 0)."""
    nowhere = f"postgresql://jan@127.0.0.1:{free_port()}/jan"
    function = new(jan_function="console", db_postgresql_write_dsn=nowhere)
    function.start({})  # as func-python does: the runtime opens in the background
    for _ in range(100):
        if function.ready()[0]:
            break
        await asyncio.sleep(0.01)
    transport = httpx.ASGITransport(app=function.handle)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.get("/console/")).status_code == 200
        assert (await c.get("/readyz")).json() == {"status": "ok", "message": "OK"}
    assert function.ready() == (True, "OK")
    await function.runtime.close()
