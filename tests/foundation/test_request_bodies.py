"""Request bodies against the real server (`jan-server serve`, hypercorn through func-python
as Knative runs it, and uvicorn): bodies over the limit, bodies a handler never reads and
bodies that never finish are answered in OpenAI's envelope and their connections closed,
without leaving sockets or memory behind. Raw sockets, since clients hide all of this."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import copied_database, make_settings
from tests.e2e import ROOT, stop, wait_ready
from tests.pg import free_port

LIMIT = 8 * 1024 * 1024  # JAN_MAX_BODY_BYTES's default, the size of the report's bodies
BODY_TIMEOUT = 1.0  # JAN_BODY_TIMEOUT_SECONDS, short for the test
PIECE = 64 * 1024


@dataclass(frozen=True)
class Server:
    port: int
    pid: int

    def connections(self) -> int:
        """Client connections the server process holds open (CLOSE-WAIT ones included):
        its socket descriptors matched against the kernel's TCP tables."""
        inodes = set()
        for fd in Path(f"/proc/{self.pid}/fd").iterdir():
            with contextlib.suppress(OSError):  # closed while we looked
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
        count = 0
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local_port = int(fields[1].rpartition(":")[2], 16)
                listening = fields[3] == "0A"
                count += fields[9] in inodes and local_port == self.port and not listening
        return count

    def rss(self) -> int:
        """Resident memory in bytes."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def settle(self, baseline: int) -> int:
        """The connection count, once it is back to ``baseline`` (or after 10 s: hypercorn
        closes a connection the client left only when its keep-alive timeout, 5 s, ends)."""
        deadline = time.monotonic() + 10
        while (count := self.connections()) > baseline and time.monotonic() < deadline:
            time.sleep(0.05)
        return count


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


@pytest.fixture(scope="module")
async def served_database(template_database: str) -> AsyncIterator[str]:
    async with copied_database(template_database, prefix="jan_bodies") as dsn:
        yield dsn


@pytest.fixture(scope="module", params=["hypercorn", "uvicorn"])
def server(
    request: pytest.FixtureRequest, served_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    settings = make_settings(served_database)
    port = free_port()
    data_dir = tmp_path_factory.mktemp(f"bodies-{request.param}")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DB_POSTGRESQL", "JAN_"))},
        "DB_POSTGRESQL_WRITE_DSN": served_database,
        "JWT_SECRET": _secret(settings.jwt_secret),
        "APIKEY_SECRET": _secret(settings.apikey_secret),
        "MODEL_PROVIDER_SECRET": _secret(settings.model_provider_secret),
        "JAN_DATA_DIR": str(data_dir),
        "JAN_LOG_LEVEL": "WARNING",
        "JAN_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
        "JAN_SHUTDOWN_DRAIN_SECONDS": "0",  # nothing to drain for: stop at once
        "LISTEN_ADDRESS": f"127.0.0.1:{port}",
    }
    log = data_dir / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "functions", "serve", "all", "--server", request.param],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", proc, log, 60)
        yield Server(port, proc.pid)
    finally:
        stop(proc)


def _secret(value: object) -> str:
    text: str = value.get_secret_value()  # type: ignore[attr-defined]
    return text


def _head(path: str, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: jan.test", "Content-Type: application/json"]
    return ("\r\n".join([*lines, *headers]) + "\r\n\r\n").encode()


def _read_reply(sock: socket.socket) -> Reply:
    data = b""
    while b"\r\n\r\n" not in data:
        got = sock.recv(65536)
        assert got, f"connection closed before a response: {data!r}"
        data += got
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers["content-length"])
    while len(rest) < length:
        got = sock.recv(65536)
        assert got, "connection closed in the middle of the response"
        rest += got
    return Reply(int(status_line.split()[1]), headers, rest[:length])


def _closed_by_server(sock: socket.socket) -> bool:
    """True once the server closes the connection (within the socket's timeout)."""
    try:
        return sock.recv(65536) == b""
    except TimeoutError:
        return False


def _send_oversized(port: int, path: str, *, chunked: bool) -> tuple[Reply | None, bool]:
    """A body of LIMIT + 1 MiB, chunked (no length) or with its Content-Length declared;
    the reply (None: the connection was reset instead), and whether the server then closed
    the connection (within 3 s)."""
    total = LIMIT + 1024 * 1024
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    piece = (b"%x\r\n" % PIECE + b"x" * PIECE + b"\r\n") if chunked else b"x" * PIECE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(_head(path, framing))
            for _ in range(total // PIECE):
                sock.sendall(piece)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
            reply = _read_reply(sock)
        except (ConnectionResetError, BrokenPipeError):
            return None, True
        sock.settimeout(3)
        return reply, _closed_by_server(sock)


def _assert_envelope(reply: Reply, status: int, code: str) -> None:
    assert reply.status == status, reply
    error = json.loads(reply.body)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code, error


def _assert_refused(reply: Reply, status: int, code: str) -> None:
    """An error in the envelope, the connection closed after it."""
    _assert_envelope(reply, status, code)
    assert reply.headers.get("connection") == "close", reply.headers


def test_oversized_bodies_get_413_and_leave_nothing_behind(server: Server) -> None:
    for chunked in (True, False):  # warm up: first-use allocations are not a leak
        _send_oversized(server.port, "/v1/auth/logout", chunked=chunked)
    sockets, rss = server.settle(0), server.rss()
    sent = [_send_oversized(server.port, "/v1/auth/logout", chunked=n % 4 != 3) for n in range(20)]
    assert server.settle(sockets) == sockets, "connections left open"
    growth_mib = (server.rss() - rss) / 2**20
    # Each body is 9 MiB: holding on to them would grow the process by about 180 MiB.
    assert growth_mib < 40, f"RSS grew by {growth_mib:.0f} MiB over 20 refused bodies"
    for reply, closed in sent:
        assert reply is not None, "the connection was reset instead of answered"
        _assert_refused(reply, 413, "request_too_large")
        assert closed, "the server kept the connection open"


def _send_slowly(port: int, *, chunked: bool) -> tuple[Reply, float]:
    framing = "Transfer-Encoding: chunked" if chunked else "Content-Length: 100"
    with socket.create_connection(("127.0.0.1", port), timeout=BODY_TIMEOUT + 10) as sock:
        started = time.monotonic()
        sock.sendall(_head("/v1/auth/logout", framing) + (b'5\r\n{"ref' if chunked else b'{"ref'))
        reply = _read_reply(sock)  # ... and never the rest
        assert _closed_by_server(sock), "the server kept the connection open"
        return reply, time.monotonic() - started


def test_a_body_that_stalls_gets_408_and_is_closed(server: Server) -> None:
    sockets = server.settle(0)
    for chunked in (True, False):
        reply, elapsed = _send_slowly(server.port, chunked=chunked)
        _assert_refused(reply, 408, "request_timeout")
        assert elapsed < BODY_TIMEOUT + 5
    assert server.settle(sockets) == sockets, "connections left open"


def test_a_body_the_handler_never_reads_is_drained(server: Server) -> None:
    """A refusal before the body is read (no credentials) while the client is still sending
    a large body: the answer arrives, the rest of the body is dropped, the connection can
    carry the next request, and nothing stays open once the client leaves."""
    total = 4 * 1024 * 1024  # under the limit, far more than the server buffers
    sockets = server.settle(0)
    for _ in range(10):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(_head("/v1/chat/completions", f"Content-Length: {total}"))
            for _ in range(total // PIECE):
                sock.sendall(b"x" * PIECE)
            _assert_envelope(_read_reply(sock), 401, "missing_api_key")
            sock.sendall(b"GET /v1/version HTTP/1.1\r\nHost: jan.test\r\n\r\n")
            assert _read_reply(sock).status == 200
    assert server.settle(sockets) == sockets, "connections left open"


def test_well_formed_bodies_keep_the_connection(server: Server) -> None:
    """The limits cost nothing to clients that send what they announce."""
    body = b'{"refresh_token": "nope"}'
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for _ in range(3):  # one connection, several requests (keep-alive)
            sock.sendall(_head("/v1/auth/logout", f"Content-Length: {len(body)}") + body)
            reply = _read_reply(sock)
            assert reply.status == 200 and "connection" not in reply.headers, reply
            assert json.loads(reply.body)["object"] == "auth.logout"
