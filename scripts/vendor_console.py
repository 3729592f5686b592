"""The web console's third-party files: fetched from their npm packages, checked, written.

    python scripts/vendor_console.py          # (re)write every file pinned in console-vendor.json
    python scripts/vendor_console.py --check  # fail unless every committed file is its source

Each entry of ``scripts/console-vendor.json`` names a package version, the integrity npm
records for its tarball (``dist.integrity``), one file of that tarball, where it lives in
this repository, and the SHA-256 of what is committed there. A file may carry ``replace``
pairs, each applied exactly once (ES modules import bare package names, which a browser
resolves only through an import map, an inline script the console's CSP refuses; so
``from"preact"`` becomes ``from"./preact.mjs"``). ``npm pack`` fetches the tarballs (from
npm's cache when it has them); nothing else is run from them.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PINS = REPO / "scripts" / "console-vendor.json"


def pins() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads(PINS.read_text())["files"]
    return entries


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tarball(package: str, version: str, integrity: str, into: Path) -> Path:
    """``npm pack`` of the package version, its integrity checked against the pin."""
    out = subprocess.run(
        ["npm", "pack", f"{package}@{version}", "--json", "--pack-destination", str(into)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    path: Path = into / json.loads(out.stdout)[0]["filename"]
    algorithm, _, expected = integrity.partition("-")
    got = base64.b64encode(hashlib.new(algorithm, path.read_bytes()).digest()).decode()
    if got != expected:
        raise SystemExit(f"{package}@{version}: tarball integrity {algorithm}-{got} != pin")
    return path


def from_source(entry: dict[str, Any], tgz: Path) -> bytes:
    """The entry's file as taken from the tarball, its replacements applied."""
    with tarfile.open(tgz) as archive:
        member = archive.extractfile(f"package/{entry['from']}")
        if member is None:
            raise SystemExit(f"{entry['package']}: no file {entry['from']}")
        text = member.read()
    for old, new in entry.get("replace", []):
        if text.count(old.encode()) != 1:
            raise SystemExit(f"{entry['to']}: {old!r} does not occur exactly once")
        text = text.replace(old.encode(), new.encode())
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    args = parser.parse_args(argv)
    entries, failures = pins(), []
    with tempfile.TemporaryDirectory() as tmp:
        tarballs: dict[str, Path] = {}
        for entry in entries:
            key = f"{entry['package']}@{entry['version']}"
            if key not in tarballs:
                tarballs[key] = tarball(
                    entry["package"], entry["version"], entry["integrity"], Path(tmp)
                )
            data = from_source(entry, tarballs[key])
            target = REPO / entry["to"]
            if not args.check:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                entry["sha256"] = sha256(data)
                print(f"{entry['to']}  <- {key} {entry['from']}")
            elif not target.exists() or target.read_bytes() != data:
                failures.append(f"{entry['to']} differs from {key} {entry['from']}")
            elif sha256(data) != entry.get("sha256"):
                failures.append(f"{entry['to']}: its sha256 differs from the pin")
    if not args.check:
        PINS.write_text(json.dumps({"files": entries}, indent=2) + "\n")
    for failure in failures:
        print(failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
