"""Gateway benchmark (`make bench`): what the `chat` function costs in front of a model.

One run, alternating per step: the mock upstream directly, then the same requests through
the `chat` function served as Knative serves it (func-python on hypercorn) and under
uvicorn, with a real project key and usage recording on. For 1, 32 and 128 connections,
non-streaming, streaming (the mock writes the whole stream at once) and paced streaming
(one write per event, as a model produces tokens): requests/s, p50/p99 latency (wrk), CPU
milliseconds per request of the gateway process (/proc/<pid>/stat), errors; then time to
first byte of a stream at one connection and the gateway's memory over a soak run.
``chat/hypercorn+limits`` is the same hypercorn process called with a key of a project
that has rate limits (RPM and TPM on the models, RPM on the key, far above the traffic:
nothing is refused), so limits off and on are measured in the same run.

    .venv/bin/python bench/gateway.py [--duration 10] [--soak 60] [--connections 1,32,128]
        [--modes plain,stream,paced] [--baseline DIR]

``--baseline DIR`` adds a third gateway (hypercorn) running the `functions` package of
another source tree — e.g. ``git archive <commit> | tar -x -C DIR`` — into the same
alternation, so before/after figures come from one run under the same conditions.

Needs node (the mock, bench/mock_upstream.js), wrk (installed with apt-get when missing)
and the PostgreSQL at JAN_TEST_PG_DSN (default postgresql://postgres@127.0.0.1:5432/postgres);
it makes and drops its own database.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from functions.common import migrate  # noqa: E402
from functions.services import tenancy  # noqa: E402
from functions.services.limits import store as limits_store  # noqa: E402

ADMIN_DSN = os.environ.get("JAN_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
APIKEY_SECRET = "bench-apikey-secret-0123456789abcdef"  # noqa: S105 - a throwaway bench DB
SECRETS = {
    "JWT_SECRET": "bench-jwt-secret-0123456789abcdef0123456789",
    "APIKEY_SECRET": APIKEY_SECRET,
    "MODEL_PROVIDER_SECRET": "bench-provider-secret-0123456789abcdef",
}
TICKS = os.sysconf("SC_CLK_TCK")
CHAT = {
    "model": "mock-model",
    "messages": [{"role": "user", "content": "Hello there!"}],
    "max_tokens": 32,
}
BODIES: dict[str, dict[str, object]] = {
    "plain": CHAT,
    "stream": {**CHAT, "stream": True},
    "paced": {**CHAT, "model": "mock-paced", "stream": True},  # the mock's one-event writes
}


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        print("bench: installing wrk (apt-get install -y wrk)", flush=True)
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, capture_output=True)
        found = shutil.which("wrk")
    assert found is not None, "wrk is not installed and could not be installed"
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_http(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"bench: {url} did not come up")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Result:
    target: str
    mode: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_ms: float | None
    errors: int


def _ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)([a-z]+)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(
    wrk: str, url: str, script: Path, connections: int, duration: int
) -> tuple[float, float, float, int, int]:
    out = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    try:
        p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
        p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    except (AttributeError, KeyError):
        print(out, file=sys.stderr)
        raise
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(x) for x in m.groups())
    return rps, p50, p99, total, errors


def wrk_script(path: Path, body: dict[str, object], key: str | None) -> Path:
    headers = ['wrk.headers["Content-Type"] = "application/json"']
    if key:
        headers.append(f'wrk.headers["Authorization"] = "Bearer {key}"')
    lua = (
        'wrk.method = "POST"\nwrk.body = [['
        + orjson.dumps(body).decode()
        + "]]\n"
        + "\n".join(headers)
        + "\n"
    )
    path.write_text(lua)
    return path


async def make_database() -> tuple[str, str, str]:
    """A fresh database with the migrations and a tenant; returns (dsn, project key, key of
    a project with rate limits)."""
    name = f"jan_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = ADMIN_DSN.rpartition("/")[0] + "/" + name
    conn = await asyncpg.connect(dsn)
    try:
        await migrate.apply(conn)
        org = await tenancy.create_organization(conn, name="bench")
        project = await tenancy.create_project(conn, organization_id=org["id"], name="bench")
        key = await tenancy.create_api_key(
            conn,
            apikey_secret=APIKEY_SECRET.encode(),
            kind="project",
            organization_id=org["id"],
            project_id=project["id"],
            name="bench",
        )
        limited = await tenancy.create_project(conn, organization_id=org["id"], name="limits")
        limited_key = await tenancy.create_api_key(
            conn,
            apikey_secret=APIKEY_SECRET.encode(),
            kind="project",
            organization_id=org["id"],
            project_id=limited["id"],
            name="bench with limits",
        )
        big = 10**9  # never reached: the cost of checking, not of refusing
        for model in ("mock-model", "mock-paced"):
            await limits_store.set_model_limits(
                conn,
                organization_id=org["id"],
                project_id=limited["id"],
                model=model,
                changes={"max_requests_per_1_minute": big, "max_tokens_per_1_minute": big},
            )
        await limits_store.set_subject_limits(
            conn,
            organization_id=org["id"],
            column="api_key_id",
            subject_id=limited_key.row["id"],
            changes={"max_requests_per_1_minute": big},
        )
    finally:
        await conn.close()
    return dsn, key.plaintext, limited_key.plaintext


async def drop_database(dsn: str) -> None:
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'DROP DATABASE IF EXISTS "{dsn.rpartition("/")[2]}" WITH (FORCE)')
    await admin.close()


async def ttfb_ms(url: str, key: str | None, n: int = 50) -> float:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {**CHAT, "stream": True}
    samples = []
    async with httpx.AsyncClient(timeout=30) as client:
        for i in range(n + 5):
            started = time.perf_counter()
            async with client.stream("POST", url, json=body, headers=headers) as r:
                async for _ in r.aiter_raw():
                    if i >= 5:
                        samples.append((time.perf_counter() - started) * 1000)
                    break
    samples.sort()
    return samples[len(samples) // 2]


def start_gateway(
    server: str, port: int, dsn: str, mock_base: str, data: Path, root: Path = ROOT
) -> subprocess.Popen[bytes]:
    """A gateway process serving the `chat` area from ``root`` (its own `functions`)."""
    env = {
        **os.environ,
        **SECRETS,
        "DB_POSTGRESQL_WRITE_DSN": dsn,
        "JAN_INFERENCE_MODEL_URL": mock_base,
        "JAN_DATA_DIR": str(data),
        "LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "JAN_LOG_LEVEL": "WARNING",
        "JAN_MIGRATE_ON_START": "false",
        "JAN_SHUTDOWN_DRAIN_SECONDS": "0",  # stopped with SIGTERM: no drain
    }
    log = (data / f"{server}-{port}.log").open("wb")
    env["JAN_FUNCTION"] = "chat"
    return subprocess.Popen(
        [sys.executable, "-m", "functions", "serve", "chat", "--server", server],
        cwd=root,  # `python -m functions` imports the tree it runs in
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk step")
    parser.add_argument("--soak", type=int, default=60, help="seconds of the memory soak (0: skip)")
    parser.add_argument("--connections", default="1,32,128")
    parser.add_argument("--modes", default="plain,stream,paced")
    parser.add_argument(
        "--baseline", type=Path, help="a source tree whose chat function joins the comparison"
    )
    args = parser.parse_args()
    modes = args.modes.split(",")
    assert set(modes) <= set(BODIES), f"modes are {', '.join(BODIES)}"
    wrk = ensure_wrk()
    conns = [int(c) for c in args.connections.split(",")]
    work = Path(tempfile.mkdtemp(prefix="jan-bench-"))
    mock_port = free_port()
    mock = subprocess.Popen(
        ["node", str(ROOT / "bench" / "mock_upstream.js"), str(mock_port)],
        stdout=subprocess.DEVNULL,
    )
    dsn, key, limited_key = asyncio.run(make_database())
    mock_base = f"http://127.0.0.1:{mock_port}/v1"
    gateways: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    results: list[Result] = []
    try:
        wait_http(f"{mock_base}/models")
        for server in ("hypercorn", "uvicorn"):
            port = free_port()
            gateways[server] = (start_gateway(server, port, dsn, mock_base, work), port)
        if args.baseline:
            port = free_port()
            proc = start_gateway("hypercorn", port, dsn, mock_base, work, args.baseline.resolve())
            gateways["hypercorn@baseline"] = (proc, port)
        for server, (_, port) in gateways.items():
            wait_http(f"http://127.0.0.1:{port}/readyz")
            r = httpx.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                json=CHAT,
                headers={"Authorization": f"Bearer {key}"},
                timeout=10,
            )
            assert r.status_code == 200, (server, r.status_code, r.text)
        proc, port = gateways["hypercorn"]
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json=CHAT,
            headers={"Authorization": f"Bearer {limited_key}"},
            timeout=10,
        )
        assert "x-ratelimit-remaining-requests" in r.headers, r.headers
        scripts = {
            (mode, credential): wrk_script(work / f"{mode}-{n}.lua", body, credential or None)
            for mode, body in BODIES.items()
            for n, credential in enumerate(("", key, limited_key))
        }
        targets: list[tuple[str, int | None, str, str]] = [
            ("mock", None, f"{mock_base}/chat/completions", "")
        ]
        for s, (proc, port) in gateways.items():
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            targets.append((f"chat/{s}", proc.pid, url, key))
            if s == "hypercorn":
                targets.append(("chat/hypercorn+limits", proc.pid, url, limited_key))
        for mode in modes:
            for c in conns:
                # alternating: mock, hypercorn, hypercorn+limits, uvicorn[, …]
                for name, pid, url, credential in targets:
                    script = scripts[(mode, credential)]
                    cpu0 = cpu_seconds(pid) if pid else 0.0
                    rps, p50, p99, total, errors = run_wrk(wrk, url, script, c, args.duration)
                    cpu = (cpu_seconds(pid) - cpu0) * 1000 / max(total, 1) if pid else None
                    results.append(Result(name, mode, c, rps, p50, p99, cpu, errors))
                    print(
                        f"{mode:6} c={c:<4} {name:24} {rps:9.0f} req/s  p50 {p50:7.2f} ms  "
                        f"p99 {p99:7.2f} ms  cpu {cpu if cpu is not None else 0:.3f} ms/req  "
                        f"errors {errors}",
                        flush=True,
                    )
        print("\ntime to first byte of a stream, one connection (median of 50):")
        direct = asyncio.run(ttfb_ms(f"{mock_base}/chat/completions", None))
        print(f"  mock directly   {direct:.2f} ms")
        for server, (_, port) in gateways.items():
            t = asyncio.run(ttfb_ms(f"http://127.0.0.1:{port}/v1/chat/completions", key))
            print(f"  chat/{server:19} {t:.2f} ms")
        if args.soak:
            proc, port = gateways["hypercorn"]
            before = rss_mib(proc.pid)
            rps, p50, p99, total, errors = run_wrk(
                wrk,
                f"http://127.0.0.1:{port}/v1/chat/completions",
                scripts[("plain", key)],
                32,
                args.soak,
            )
            after = rss_mib(proc.pid)
            print(
                f"\nsoak {args.soak}s at 32 connections (hypercorn): {total} requests, "
                f"{errors} errors, RSS {before:.1f} MiB -> {after:.1f} MiB"
            )
        rows = asyncio.run(_count_usage(dsn))
        print(f"usage rows recorded: {rows}")
    finally:
        for proc, _ in gateways.values():
            proc.terminate()
        for proc, _ in gateways.values():
            proc.wait(20)
        mock.terminate()
        asyncio.run(drop_database(dsn))
    return 0


async def _count_usage(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        await asyncio.sleep(1.5)  # the idle flush
        return int(await conn.fetchval("SELECT count(*) FROM usage_completions"))
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(main())
