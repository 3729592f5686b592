"""Throughput of the predictor: several one-thread instances against one multi-thread instance.

Each layout runs as its own ``python -m jan_predictor`` process on a free port, driven by
``--concurrency`` clients sending fixed-length completions (end-of-sequence banned), and the
table compares them in the same run. ``python -m bench --help`` lists the knobs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import httpx

PROMPTS = [
    "Once upon a time, in a small village by the sea,",
    "The three most important things about databases are",
    "Here is a short recipe for bread:",
    "In the year 2050, cities will",
]


@dataclass(frozen=True)
class Layout:
    instances: int
    threads: int

    @property
    def label(self) -> str:
        return f"{self.instances} inst x {self.threads} thr"


@dataclass(frozen=True)
class Result:
    layout: Layout
    requests: int
    tokens: int
    seconds: float
    latencies: list[float]

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(layout: Layout, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PORT": str(port),
        "PREDICTOR_INSTANCES": str(layout.instances),
        "PREDICTOR_THREADS_PER_INSTANCE": str(layout.threads),
        "PREDICTOR_MAX_QUEUE": "64",
        "PREDICTOR_LOG_LEVEL": "warning",
    }
    return subprocess.Popen([sys.executable, "-m", "jan_predictor", "--host", "127.0.0.1"], env=env)


async def _wait_ready(client: httpx.AsyncClient, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the predictor exited")
        try:
            if (await client.get("/v2/health/ready")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("the predictor never became ready")


async def _drive(
    client: httpx.AsyncClient, requests: int, concurrency: int, max_tokens: int
) -> tuple[int, list[float]]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    tokens = 0
    latencies: list[float] = []

    async def worker() -> None:
        nonlocal tokens
        while not queue.empty():
            i = queue.get_nowait()
            started = time.perf_counter()
            response = await client.post(
                "/openai/v1/completions",
                json={
                    "prompt": PROMPTS[i % len(PROMPTS)],
                    "max_tokens": max_tokens,
                    "temperature": 0.7,
                    "seed": i,
                    "logit_bias": {"0": -100, "2": -100},
                },
            )
            response.raise_for_status()
            latencies.append(time.perf_counter() - started)
            tokens += int(response.json()["usage"]["completion_tokens"])

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return tokens, latencies


async def run(layout: Layout, requests: int, concurrency: int, max_tokens: int) -> Result:
    port = _free_port()
    process = _start(layout, port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=300) as client:
            await _wait_ready(client, process)
            await _drive(client, layout.instances, layout.instances, 8)  # warm every instance
            started = time.perf_counter()
            tokens, latencies = await _drive(client, requests, concurrency, max_tokens)
            seconds = time.perf_counter() - started
    finally:
        process.terminate()
        process.wait(timeout=15)
    return Result(layout, requests, tokens, seconds, latencies)


def _table(results: list[Result], concurrency: int, max_tokens: int) -> str:
    base = results[-1]
    lines = [
        f"concurrency {concurrency}, {base.requests} requests x {max_tokens} completion tokens, "
        f"{os.cpu_count()} CPU(s)",
        f"{'layout':<18}{'tokens/s':>10}{'req/s':>8}{'p50 s':>8}{'p95 s':>8}{'vs last':>9}",
    ]
    for r in results:
        p50 = statistics.median(r.latencies)
        p95 = statistics.quantiles(r.latencies, n=20)[-1]
        ratio = r.tokens_per_second / base.tokens_per_second
        lines.append(
            f"{r.layout.label:<18}{r.tokens_per_second:>10.1f}{r.requests_per_second:>8.2f}"
            f"{p50:>8.2f}{p95:>8.2f}{ratio:>8.2f}x"
        )
    return "\n".join(lines)


def main() -> None:
    cores = len(os.sched_getaffinity(0))
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument(
        "--layouts",
        default=f"{cores}x1,1x1,1x{cores}",
        help="comma-separated INSTANCESxTHREADS; ratios are against the last",
    )
    args = parser.parse_args()
    layouts = [Layout(*(int(part) for part in item.split("x"))) for item in args.layouts.split(",")]
    results = [
        asyncio.run(run(layout, args.requests, args.concurrency, args.max_tokens))
        for layout in layouts
    ]
    print(_table(results, args.concurrency, args.max_tokens))


if __name__ == "__main__":
    main()
