"""Stored chat completions bench (`make bench`): what ``store: true`` costs, and that a call
without it pays nothing.

One gateway process (the `chat` function, func-python on hypercorn, as Knative serves it)
in front of the Node mock upstream, a fresh database with a real project key, usage
recording on. For each mode (non-streaming, streaming) and connection count, wrk runs
alternate, round after round, between three bodies on the same process: no ``store`` (the
baseline), ``store: false`` and ``store: true``. Per variant: requests/s and the gateway
process's CPU µs per request (utime+stime from /proc/<pid>/stat over the step, divided by
the requests wrk completed), the median over the rounds, and the ratios to the baseline.
The stored rows are counted at the end (every ``store: true`` request must have one).

    .venv/bin/python bench/bench_stored.py [--duration 5] [--rounds 3] [--connections 1,32]
        [--modes plain,stream]

The PostgreSQL write of a stored completion is done by the database server, another
process: its CPU is not in the gateway's figure (the gateway's side of it — encoding the
row, the driver, awaiting the write — is).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gateway as gw

VARIANTS: dict[str, dict[str, object]] = {
    "no store": {},
    "store: false": {"store": False},
    "store: true": {"store": True},
}
MODES = {"plain": gw.CHAT, "stream": {**gw.CHAT, "stream": True}}


async def _count_stored(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM chat_completions"))
    finally:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk step")
    parser.add_argument("--rounds", type=int, default=3, help="alternations per step")
    parser.add_argument("--connections", default="1,32")
    parser.add_argument("--modes", default="plain,stream")
    args = parser.parse_args()
    modes = args.modes.split(",")
    assert set(modes) <= set(MODES), f"modes are {', '.join(MODES)}"
    conns = [int(c) for c in args.connections.split(",")]
    wrk = gw.ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="jan-bench-stored-"))
    mock_port = gw.free_port()
    mock = subprocess.Popen(
        ["node", str(gw.ROOT / "bench" / "mock_upstream.js"), str(mock_port)],
        stdout=subprocess.DEVNULL,
    )
    dsn, key, _ = asyncio.run(gw.make_database())
    mock_base = f"http://127.0.0.1:{mock_port}/v1"
    proc: subprocess.Popen[bytes] | None = None
    stored_requests = 0
    try:
        gw.wait_http(f"{mock_base}/models")
        port = gw.free_port()
        proc = gw.start_gateway("hypercorn", port, dsn, mock_base, work)
        gw.wait_http(f"http://127.0.0.1:{port}/readyz")
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        r = httpx.post(
            url,
            json={**gw.CHAT, "store": True},
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert r.status_code == 200, (r.status_code, r.text)
        got = httpx.get(
            f"{url}/{r.json()['id']}", headers={"Authorization": f"Bearer {key}"}, timeout=10
        )
        assert got.status_code == 200, (got.status_code, got.text)  # stored and readable
        stored_requests = 1
        scripts = {
            (mode, variant): gw.wrk_script(work / f"{mode}-{i}.lua", {**body, **extra}, key)
            for mode, body in MODES.items()
            for i, (variant, extra) in enumerate(VARIANTS.items())
        }
        table: list[tuple[str, int, str, float, float, int]] = []
        for mode in modes:
            for c in conns:
                cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
                rps: dict[str, list[float]] = {v: [] for v in VARIANTS}
                errors = dict.fromkeys(VARIANTS, 0)
                for n in range(args.rounds):
                    order = list(VARIANTS)
                    order = order[n % 3 :] + order[: n % 3]  # each goes first in turn
                    for variant in order:
                        cpu0 = gw.cpu_seconds(proc.pid)
                        r_s, _, _, total, errs = gw.run_wrk(
                            wrk, url, scripts[(mode, variant)], c, args.duration
                        )
                        us = (gw.cpu_seconds(proc.pid) - cpu0) * 1e6 / max(total, 1)
                        cpu[variant].append(us)
                        rps[variant].append(r_s)
                        errors[variant] += errs
                        if variant == "store: true":
                            stored_requests += total
                        print(
                            f"{mode:6} c={c:<4} {variant:13} {r_s:8.0f} req/s  "
                            f"cpu {us:6.1f} µs/req  errors {errs}",
                            flush=True,
                        )
                for variant in VARIANTS:
                    table.append(
                        (
                            mode,
                            c,
                            variant,
                            statistics.median(rps[variant]),
                            statistics.median(cpu[variant]),
                            errors[variant],
                        )
                    )
        rows = asyncio.run(_count_stored(dsn))
        print(
            f"\nstored rows: {rows} (store: true requests completed: {stored_requests}; "
            "wrk counts the ones it finished, a few more may be in flight at a step's end)"
        )
        print(
            "\n| mode | conns | body | req/s | gateway CPU µs/req | CPU / no store "
            "| req/s / no store | errors |"
        )
        print("|---|---|---|---|---|---|---|---|")
        base: dict[tuple[str, int], tuple[float, float]] = {}
        for mode, c, variant, r_s, us, errs in table:
            if variant == "no store":
                base[(mode, c)] = (r_s, us)
            b_rps, b_us = base[(mode, c)]
            print(
                f"| {mode} | {c} | {variant} | {r_s:.0f} | {us:.1f} | {us / b_us:.2f} "
                f"| {r_s / b_rps:.2f} | {errs} |"
            )
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(20)
        mock.terminate()
        asyncio.run(gw.drop_database(dsn))
    return 0


if __name__ == "__main__":
    sys.exit(main())
