"""The `jan-server` command: serve, migrate, version (and admin and export, for operators)."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from functions import __version__
from functions.common import local, migrate
from functions.common.settings import AREAS, ConfigError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag gets one line on stderr, not the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="jan-server", description="Jan Server: self-hosted OpenAI-compatible API."
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = commands.add_parser("serve", help="serve one API area, or all of them")
    serve.add_argument(
        "area", nargs="?", choices=[*AREAS, "all"], help="area to serve (default: JAN_FUNCTION)"
    )
    serve.add_argument(
        "--server",
        choices=["hypercorn", "uvicorn"],
        default="hypercorn",
        help="hypercorn through func-python, as Knative serves it (default), or uvicorn",
    )
    serve.add_argument("--listen", help="address:port list (default: LISTEN_ADDRESS or PORT)")
    serve.set_defaults(run=_serve)

    mig = commands.add_parser("migrate", help="apply or inspect database migrations")
    mig.add_argument("action", choices=["apply", "status"], help="apply pending, or list them")
    mig.set_defaults(run=_migrate)

    ver = commands.add_parser("version", help="print the version")
    ver.set_defaults(run=_version)

    from functions.admin_cli import add_admin_commands, add_export_commands

    add_admin_commands(commands)
    add_export_commands(commands)
    return parser


def _console_url(listen: str) -> str:
    """Where a browser on this machine finds the console (the first address listened on)."""
    host, _, port = listen.split(",")[0].strip().rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/console/"


def _serve(args: argparse.Namespace) -> int:
    if args.area:
        os.environ["JAN_FUNCTION"] = args.area
    if args.listen:
        os.environ["LISTEN_ADDRESS"] = args.listen
    elif "LISTEN_ADDRESS" not in os.environ and os.environ.get("PORT"):
        os.environ["LISTEN_ADDRESS"] = f"0.0.0.0:{os.environ['PORT']}"
    from functions.entry import new

    function = new()  # validates settings and starts the embedded database if needed
    settings = function.runtime.settings
    listen = os.environ.get("LISTEN_ADDRESS", "[::]:8080,0.0.0.0:8080")
    print(f"jan-server {__version__}: serving {settings.jan_function} on {listen}", flush=True)
    if settings.embedded_database or os.environ.get("JAN_DATA_DIR"):
        print(f"jan-server: data in {settings.jan_data_dir}", flush=True)
    if "console" in settings.areas:
        print(f"jan-server: web console at {_console_url(listen)}", flush=True)
    from functions.entry import serve

    serve(function, listen, args.server)
    return 0


def _migrate(args: argparse.Namespace) -> int:
    # Migrations use no secret: the migration Job has the database's DSN only.
    settings = local.load(need_secrets=False)
    assert settings.db_postgresql_write_dsn is not None
    dsn = settings.db_postgresql_write_dsn.get_secret_value()

    async def run() -> int:
        import asyncpg

        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            migrations = migrate.load()
            if args.action == "apply":
                done = await migrate.apply(conn, migrations)
                print(f"applied {len(done)} migration(s)" + (f": {done}" if done else ""))
            state = await migrate.status(conn, migrations)
            print(f"applied: {len(state.applied)}, pending: {len(state.pending)}")
            for m in state.pending:
                print(f"  pending {m.version:04d}_{m.name}")
            return 0 if args.action == "apply" or state.current else 1
        finally:
            await conn.close()

    return asyncio.run(run())


def _version(args: argparse.Namespace) -> int:
    commit = os.environ.get("JAN_COMMIT", "unknown")
    print(f"jan-server {__version__} (commit {commit}, Python {platform.python_version()})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except ConfigError as exc:
        print(f"jan-server: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except migrate.MigrationError as exc:
        print(f"jan-server: migration error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"jan-server: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
