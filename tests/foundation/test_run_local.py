"""`make run`'s script, as a new user runs it: predictor + gateway, keys printed once, and a
chat completion answered by the real model through the printed project key."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
from openai import OpenAI

from tests.pg import free_port

ROOT = Path(__file__).resolve().parents[2]


class LocalRun:
    """scripts/run-local.sh in its own process group, its stdout collected by a thread."""

    def __init__(self, data: Path, port: int, predictor_port: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_POSTGRESQL", "JAN_"))}
        env.update(
            JAN_DATA_DIR=str(data),
            PORT=str(port),
            PREDICTOR_PORT=str(predictor_port),
            PREDICTOR_INSTANCES="1",
        )
        self.base = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            ["bash", "scripts/run-local.sh"],
            cwd=ROOT,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout as stdout:
            self.lines.extend(stdout)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_ready(self, *, keys: bool) -> str:
        """Until the gateway is ready (and, when expected, the keys are printed)."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output
            try:
                ready = httpx.get(f"{self.base}/readyz").status_code == 200
            except httpx.TransportError:
                ready = False
            if ready and (not keys or "JAN_PROJECT_KEY=" in self.output):
                time.sleep(0.5)  # the bootstrap lines follow readiness closely
                return self.output
            time.sleep(0.3)
        raise AssertionError("not ready in time:\n" + self.output)

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGINT)  # what Ctrl-C does to `make run`
        self.proc.wait(timeout=30)
        self._pump.join(timeout=10)


def test_run_local_serves_the_model_with_the_printed_key(tmp_path: Path) -> None:
    port, predictor_port = free_port(), free_port()
    run = LocalRun(tmp_path, port, predictor_port)
    try:
        out = run.wait_ready(keys=True)
        assert f"serving all on 0.0.0.0:{port}" in out
        assert f"data in {tmp_path}" in out
        assert f"web console at http://127.0.0.1:{port}/console/" in out
        console = httpx.get(f"{run.base}/console/")
        assert console.status_code == 200 and "js/main.js" in console.text
        admin_key = re.search(r"^JAN_ADMIN_KEY=(sk-admin-\S+)$", out, re.M)
        project_key = re.search(r"^JAN_PROJECT_KEY=(sk-proj-\S+)$", out, re.M)
        assert admin_key and project_key
        client = OpenAI(base_url=f"{run.base}/v1", api_key=project_key.group(1))
        reply = client.chat.completions.create(
            model="smollm2-135m-instruct",
            messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=16,
        )
        assert reply.choices[0].message.content
        projects = httpx.get(
            f"{run.base}/v1/organization/projects",
            headers={"Authorization": f"Bearer {admin_key.group(1)}"},
        )
        assert projects.status_code == 200
    finally:
        run.stop()
    # Ctrl-C took the predictor down too.
    with contextlib.suppress(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{predictor_port}/v2/health/live", timeout=1)
        raise AssertionError("the predictor outlived make run")
    # A second start reuses the data directory and prints no keys.
    again = LocalRun(tmp_path, port, predictor_port)
    try:
        out = again.wait_ready(keys=False)
        assert "JAN_ADMIN_KEY" not in out and "JAN_PROJECT_KEY" not in out
    finally:
        again.stop()
