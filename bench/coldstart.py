"""Cold-start benchmark (`make bench`): what scale-to-zero makes a user wait for.

For each run a NEW `jan-server serve <area>` process is spawned against an already-migrated
PostgreSQL database and an upstream that answers at once (bench/mock_upstream.js); one
request is sent again and again from the moment of the spawn until the first 200 arrives.
Recorded per run: seconds from spawn to the first accepted connection (imports, settings,
app construction: the server listens) and to the first 200 (plus opening the database
pool, the migration check and the areas' start hooks), the process's VmRSS read right after
that answer and its peak VmHWM (/proc/<pid>/status). The process then writes its sorted
``sys.modules`` to a file (on SIGUSR1, from a small wrapper around the same entry as the
`jan-server` console script), which tells which heavy packages the area pulled in.

    .venv/bin/python bench/coldstart.py [--runs 7] [--area chat] [--baseline DIR]
        [--bytecode cached|none] [--importtime N] [--log-level INFO] [--json FILE]

``--area`` (default chat; also `all`): chat and all send POST /v1/chat/completions with a
project key; conversations GET /v1/conversations, mcp GET /v1/mcp/settings (project key),
admin GET /v1/organization/projects (admin key), responses POST /v1/responses with
``store: false``, auth POST /v1/auth/guest-login. ``--baseline DIR`` measures the
`functions` package of another source tree too (e.g. ``git archive <commit> | tar -x -C
DIR``), alternating run by run with this tree, so before/after come from one run.
``--importtime N`` adds one start under ``-X importtime`` and prints the N largest import
costs by package and by the module of ours that pulled them in. ``--bytecode``: see
bench/README.md (bytecode is kept under a PYTHONPYCACHEPREFIX of the bench's own).

Environment as deployed (manifests/base): JAN_MIGRATE_ON_START=false, log level INFO,
hypercorn through func-python. Needs node and the PostgreSQL at JAN_TEST_PG_DSN (default
postgresql://postgres@127.0.0.1:5432/postgres); it makes and drops its own database.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import asyncpg
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from functions.common import migrate  # noqa: E402
from functions.services import tenancy  # noqa: E402

ADMIN_DSN = os.environ.get("JAN_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
APIKEY_SECRET = "bench-apikey-secret-0123456789abcdef"  # noqa: S105 - a throwaway bench DB
SECRETS = {
    "JWT_SECRET": "bench-jwt-secret-0123456789abcdef0123456789",
    "APIKEY_SECRET": APIKEY_SECRET,
    "MODEL_PROVIDER_SECRET": "bench-provider-secret-0123456789abcdef",
}
CHAT: dict[str, object] = {
    "model": "mock-model",
    "messages": [{"role": "user", "content": "Hello!"}],
}

# Packages a chat instance should not need (or that are worth knowing about when it does).
HEAVY = (
    "pgserver",
    "mcp",
    "httpx",
    "httpcore",
    "aiohttp",
    "authlib",
    "redis",
    "opentelemetry",
    "schemathesis",
    "hypothesis",
    "yaml",
    "jinja2",
    "cryptography",
    "jwt",
    "pydantic",
    "pydantic_settings",
    "prometheus_client",
    "hypercorn",
    "func_python",
    "uvicorn",
    "swagger_ui_bundle",
    "bs4",
    "lxml",
    "readability",
    "trafilatura",
    "markdownify",
    "email",
    "numpy",
)

# The wrapper: the console script's `main()`, plus a SIGUSR1 handler that writes the
# sorted module names to JAN_BENCH_MODULES_FILE. Run with cwd and PYTHONPATH at the tree
# under test, so `functions` is that tree's package.
WRAPPER = """\
import os, signal, sys
def _dump(signum, frame):
    path = os.environ["JAN_BENCH_MODULES_FILE"]
    with open(path + ".tmp", "w") as out:
        out.write("\\n".join(sorted(sys.modules)) + "\\n")
    os.replace(path + ".tmp", path)
signal.signal(signal.SIGUSR1, _dump)
sys.argv[0] = "jan-server"
from functions.cli import main
sys.exit(main())
"""


@dataclass(frozen=True)
class Probe:
    method: str
    path: str
    body: dict[str, object] | None
    key: str | None  # "project", "admin" or None (no credential)


PROBES = {
    "chat": Probe("POST", "/v1/chat/completions", CHAT, "project"),
    "all": Probe("POST", "/v1/chat/completions", CHAT, "project"),
    "conversations": Probe("GET", "/v1/conversations", None, "project"),
    "mcp": Probe("GET", "/v1/mcp/settings", None, "project"),
    "admin": Probe("GET", "/v1/organization/projects", None, "admin"),
    "responses": Probe(
        "POST",
        "/v1/responses",
        {"model": "mock-model", "input": "Hello!", "store": False},
        "project",
    ),
    "auth": Probe("POST", "/v1/auth/guest-login", None, None),
}


@dataclass
class Sample:
    tree: str
    run: int
    listen_s: float  # spawn -> first accepted connection
    first_200_s: float  # spawn -> first 200
    attempts: int
    rss_mib: float
    hwm_mib: float
    modules: list[str] = field(default_factory=list, repr=False)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def memory_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process, in MiB."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


async def make_database() -> tuple[str, dict[str, str]]:
    """A fresh, migrated database with an organization, a project and its keys."""
    name = f"jan_coldstart_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = ADMIN_DSN.rpartition("/")[0] + "/" + name
    conn = await asyncpg.connect(dsn)
    try:
        await migrate.apply(conn)
        org = await tenancy.create_organization(conn, name="bench")
        project = await tenancy.create_project(conn, organization_id=org["id"], name="bench")
        keys: dict[str, str] = {}
        for kind, project_id in (("project", project["id"]), ("admin", None)):
            created = await tenancy.create_api_key(
                conn,
                apikey_secret=APIKEY_SECRET.encode(),
                kind=kind,
                organization_id=org["id"],
                project_id=project_id,
                name=f"bench-{kind}",
            )
            keys[kind] = created.plaintext
    finally:
        await conn.close()
    return dsn, keys


async def drop_database(dsn: str) -> None:
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'DROP DATABASE IF EXISTS "{dsn.rpartition("/")[2]}" WITH (FORCE)')
    await admin.close()


def start_mock() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    mock = subprocess.Popen(
        ["node", str(ROOT / "bench" / "mock_upstream.js"), str(port)],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/v1/models")
            if conn.getresponse().status == 200:
                return mock, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.05)
    mock.kill()
    raise SystemExit("coldstart: the mock upstream did not start (is node installed?)")


@dataclass(frozen=True)
class Setup:
    """What every run shares: the database, its keys, the mock, the options."""

    area: str
    dsn: str
    keys: dict[str, str]
    upstream: str
    work: Path
    log_level: str
    bytecode: str


def server_env(setup: Setup, tree: Path, port: int) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JAN_", "DB_POSTGRESQL_", "OTEL_", "REDIS_", "PYTHONDONTWRITE"))
    }
    # Bytecode lives under a prefix of the bench's own, so neither tree nor the shared
    # environment is written to: `cached` fills it in the warm-up run and reads it after
    # (an image that ships .pyc files); `none` never writes it, so every module is compiled
    # from source at every start (an image without them, or PYTHONDONTWRITEBYTECODE=1 over
    # an environment installed without bytecode).
    env["PYTHONPYCACHEPREFIX"] = str(setup.work / f"pycache-{setup.bytecode}")
    if setup.bytecode == "none":
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(SECRETS)
    env.update(
        {
            "PYTHONPATH": str(tree),
            "DB_POSTGRESQL_WRITE_DSN": setup.dsn,
            "JAN_INFERENCE_MODEL_URL": setup.upstream,
            "JAN_DATA_DIR": str(setup.work / "data"),
            "JAN_MIGRATE_ON_START": "false",
            "JAN_SHUTDOWN_DRAIN_SECONDS": "0",  # stopped with SIGTERM: no drain
            "JAN_LOG_LEVEL": setup.log_level,
            "LISTEN_ADDRESS": f"127.0.0.1:{port}",
        }
    )
    return env


def send(conn: http.client.HTTPConnection, probe: Probe, keys: dict[str, str]) -> int:
    """One request on a connected connection; the status."""
    headers = {"Content-Type": "application/json"}
    if probe.key:
        headers["Authorization"] = f"Bearer {keys[probe.key]}"
    body = orjson.dumps(probe.body) if probe.body is not None else b"{}"
    try:
        conn.request(probe.method, probe.path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def one_run(
    setup: Setup,
    name: str,
    tree: Path,
    run: int,
    python_flags: tuple[str, ...] = (),
    timeout: float = 60.0,
) -> tuple[Sample, Path]:
    """Spawn, poll until the first 200, read the memory and the modules, stop; the sample
    and the server's log (stdout and stderr)."""
    port = free_port()
    stem = f"{name.replace(' ', '_')}-{run}" + ("-flags" if python_flags else "")
    modules_file = setup.work / f"modules-{stem}.txt"
    env = server_env(setup, tree, port)
    env["JAN_BENCH_MODULES_FILE"] = str(modules_file)
    probe = PROBES[setup.area]
    log_path = setup.work / f"server-{stem}.log"
    log = log_path.open("wb")
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, *python_flags, "-c", WRAPPER, "serve", setup.area],
        cwd=tree,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    listen_s: float | None = None
    attempts = 0
    try:
        while True:
            elapsed = time.perf_counter() - started
            if elapsed > timeout or proc.poll() is not None:
                raise SystemExit(
                    f"coldstart: {name} run {run}: no 200 after {elapsed:.1f}s "
                    f"(exit {proc.poll()}); see {log_path}"
                )
            attempts += 1
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.connect()
            except ConnectionRefusedError:  # not listening yet
                time.sleep(0.005)
                continue
            if listen_s is None:
                listen_s = time.perf_counter() - started
            try:
                status = send(conn, probe, setup.keys)
            except (ConnectionError, http.client.HTTPException):  # listening, not answering
                status = 0
            if status == 200:
                first_200_s = time.perf_counter() - started
                break
            time.sleep(0.005)
        rss, hwm = memory_mib(proc.pid)
        proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not modules_file.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        modules = modules_file.read_text().split() if modules_file.exists() else []
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    assert listen_s is not None
    return Sample(name, run, listen_s, first_200_s, attempts, rss, hwm, modules), log_path


def top_packages(modules: list[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def our_units(modules: list[str]) -> list[str]:
    """functions.<area>, functions.common, functions.services.<sub>, the glue modules."""
    units = set()
    for m in modules:
        parts = m.split(".")
        if parts[0] == "functions" and len(parts) > 1:
            units.add(".".join(parts[:3] if parts[1] == "services" else parts[:2]))
    return sorted(units)


def report(samples: list[Sample], names: list[str], label: str) -> None:
    print(
        f"\n{'tree':24} {'run':>3} {'listen s':>9} {'first 200 s':>12} {'tries':>6} "
        f"{'RSS MiB':>8} {'HWM MiB':>8}"
    )
    for s in samples:
        print(
            f"{s.tree:24} {s.run:>3} {s.listen_s:9.3f} {s.first_200_s:12.3f} {s.attempts:6} "
            f"{s.rss_mib:8.1f} {s.hwm_mib:8.1f}"
        )
    print(f"\nmedians ({label}):")
    for name in names:
        mine = [s for s in samples if s.tree == name]
        print(
            f"  {name:24} listen {statistics.median(s.listen_s for s in mine):.3f} s, "
            f"first 200 {statistics.median(s.first_200_s for s in mine):.3f} s "
            f"(min {min(s.first_200_s for s in mine):.3f}, "
            f"max {max(s.first_200_s for s in mine):.3f}), "
            f"RSS {statistics.median(s.rss_mib for s in mine):.1f} MiB, "
            f"VmHWM {statistics.median(s.hwm_mib for s in mine):.1f} MiB"
        )
    for name in names:
        modules = next((s.modules for s in samples if s.tree == name and s.modules), [])
        if not modules:
            print(f"\n{name}: no module list came back")
            continue
        tops = top_packages(modules)
        loaded = [p for p in HEAVY if p in tops]
        absent = [p for p in HEAVY if p not in tops]
        third = sorted(
            p
            for p in tops
            if not p.startswith("_")
            and p not in sys.stdlib_module_names
            and p not in ("functions", "cython_runtime")
        )
        print(f"\n{name}: {len(modules)} modules, {len(tops)} top-level packages")
        print(f"  heavy loaded:     {', '.join(loaded) or '-'}")
        print(f"  heavy not loaded: {', '.join(absent) or '-'}")
        print(f"  ours:             {', '.join(our_units(modules))}")
        print(f"  third-party:      {', '.join(third)}")


def importtime_report(log: Path, top: int) -> None:
    """Self time of every import of one start (``-X importtime``), summed by top-level
    package and by the nearest importing module of ours: who pulls in what."""
    rows: list[tuple[int, str, int]] = []  # (depth, module, self µs), children first
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        fields = line[len("import time:") :].split("|")
        self_text, name = fields[0], fields[2]
        depth = (len(name) - len(name.lstrip(" "))) // 2
        rows.append((depth, name.strip(), int(self_text)))
    parent: dict[int, int] = {}
    for i, (depth, _, _) in enumerate(rows):  # a parent is printed after its children
        for j in range(i + 1, len(rows)):
            if rows[j][0] < depth:
                parent[i] = j
                break
    by_package: dict[str, int] = {}
    by_ours: dict[str, int] = {}
    for i, (_, module, self_us) in enumerate(rows):
        package = module.split(".")[0]
        by_package[package] = by_package.get(package, 0) + self_us
        owner: int | None = i
        while owner is not None and not rows[owner][1].startswith("functions"):
            owner = parent.get(owner)
        ours = rows[owner][1] if owner is not None else "(outside functions: the server, stdlib)"
        by_ours[ours] = by_ours.get(ours, 0) + self_us
    total = sum(r[2] for r in rows) / 1000
    print(f"\n-X importtime, one start: {len(rows)} imports, {total:.0f} ms of self time")
    for title, table in (("by top-level package", by_package), ("by module of ours", by_ours)):
        print(f"  {title}:")
        for key, us in sorted(table.items(), key=lambda kv: -kv[1])[:top]:
            print(f"    {key:52} {us / 1000:7.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="measured runs per tree")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured runs per tree first")
    parser.add_argument("--area", default="chat", choices=sorted(PROBES))
    parser.add_argument("--baseline", type=Path, help="another source tree to alternate with")
    parser.add_argument("--log-level", default="INFO", help="JAN_LOG_LEVEL of the servers")
    parser.add_argument(
        "--bytecode",
        default="cached",
        choices=["cached", "none"],
        help="cached: .pyc files from the warm-up run are read (default); none: every "
        "module is compiled at every start",
    )
    parser.add_argument(
        "--importtime",
        type=int,
        default=0,
        metavar="N",
        help="one more start of this tree under -X importtime: the N largest import costs "
        "by package and by the module of ours that pulled them in",
    )
    parser.add_argument("--json", type=Path, help="also write the samples here")
    args = parser.parse_args()
    if args.bytecode == "cached" and args.warmup < 1:
        parser.error("--bytecode cached needs a warm-up run (it writes the bytecode)")
    trees = {"this tree": ROOT}
    if args.baseline:
        baseline = args.baseline.resolve()
        assert (baseline / "functions" / "cli.py").exists(), f"no functions/ in {baseline}"
        trees["baseline"] = baseline
    work = Path(tempfile.mkdtemp(prefix="jan-coldstart-"))
    mock, upstream = start_mock()
    dsn, keys = asyncio.run(make_database())
    setup = Setup(args.area, dsn, keys, upstream, work, args.log_level, args.bytecode)
    samples: list[Sample] = []
    importtime_log: Path | None = None
    try:
        for run in range(-args.warmup, args.runs):
            for name, tree in trees.items():  # alternating, so both see the same machine
                sample, _ = one_run(setup, name, tree, run)
                tag = "warm-up" if run < 0 else f"run {run}"
                print(
                    f"{name:12} {tag:8} listen {sample.listen_s:.3f} s  first 200 "
                    f"{sample.first_200_s:.3f} s  RSS {sample.rss_mib:.1f} MiB  "
                    f"HWM {sample.hwm_mib:.1f} MiB",
                    flush=True,
                )
                if run >= 0:
                    samples.append(sample)
        if args.importtime:
            _, importtime_log = one_run(setup, "this tree", ROOT, 0, ("-X", "importtime"))
    finally:
        mock.terminate()
        mock.wait(10)
        with contextlib.suppress(Exception):
            asyncio.run(drop_database(dsn))
        shutil.rmtree(work / f"pycache-{args.bytecode}", ignore_errors=True)  # ~20 MB
    report(samples, list(trees), f"area {args.area}, bytecode {args.bytecode}")
    if importtime_log is not None:
        importtime_report(importtime_log, args.importtime)
    if args.json:
        args.json.write_bytes(
            orjson.dumps([asdict(s) for s in samples], option=orjson.OPT_INDENT_2)
        )
    print(f"\nserver logs and module lists: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
