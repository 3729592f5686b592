"""Local mode: an embedded PostgreSQL (the `pgserver` package) and generated secrets.

Used when ``DB_POSTGRESQL_WRITE_DSN`` is unset, so one command gives a working server with
its state in ``JAN_DATA_DIR``. With an external database nothing here runs and the
secrets are required instead.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from pydantic import SecretStr

from functions.common import logs
from functions.common.settings import (
    SECRET_NAMES,
    ConfigError,
    Settings,
    load_settings,
    require_secrets,
)

log = logging.getLogger(__name__)


def load(overrides: Mapping[str, Any] | None = None, *, need_secrets: bool = True) -> Settings:
    """Settings from the environment for a process of ours (server or command): logging
    set up as they say, then ``prepare``d."""
    settings = load_settings(overrides)
    logs.setup(settings.jan_log_level)
    return prepare(settings, need_secrets=need_secrets)


def prepare(settings: Settings, *, need_secrets: bool = True) -> Settings:
    """Return settings with a database and secrets, starting PostgreSQL when embedded.

    ``need_secrets=False`` is for commands that use none (migrations): with an external
    database they then run on the DSN alone.
    """
    if not settings.uses_database and need_secrets:  # the console alone: uses neither
        return settings
    if not settings.embedded_database:
        if need_secrets:
            require_secrets(settings)
        return settings
    if settings.k_service:
        # Knative (`func deploy` included) scales pods to zero and replaces them: an
        # embedded database there would lose everything at the first scale-down.
        raise ConfigError(
            f"DB_POSTGRESQL_WRITE_DSN must be set on Knative (K_SERVICE={settings.k_service}): "
            "an embedded database in a pod that scales to zero loses its data"
        )
    data_dir = settings.jan_data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    generated = load_or_generate_secrets(data_dir / "secrets.json")
    update: dict[str, Any] = {
        name: SecretStr(generated[name]) for name in SECRET_NAMES if getattr(settings, name) is None
    }
    update["db_postgresql_write_dsn"] = SecretStr(start_embedded_postgres(data_dir / "postgres"))
    update["jan_data_dir"] = data_dir
    update["jan_embedded"] = True  # the DSN is filled in now; bootstrap still needs to know
    return settings.model_copy(update=update)


def load_or_generate_secrets(path: Path) -> dict[str, str]:
    """Secrets generated once and kept (mode 0600) so restarts keep sessions and keys valid."""
    if path.exists():
        stored: dict[str, str] = orjson.loads(path.read_bytes())
        if all(stored.get(n) for n in SECRET_NAMES):
            return stored
    values = {name: secrets.token_urlsafe(32) for name in SECRET_NAMES}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(orjson.dumps(values, option=orjson.OPT_INDENT_2))
    os.chmod(path, 0o600)
    log.info("generated secrets", extra={"path": str(path)})
    return values


def start_embedded_postgres(pgdata: Path) -> str:
    """Start (or reuse) the embedded server and return its DSN (a Unix socket)."""
    # pgserver picks a runtime directory at import; give it one under the data directory
    # rather than warning about an unset XDG_RUNTIME_DIR.
    runtime_dir = pgdata.parent / "run"
    runtime_dir.mkdir(mode=0o700, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime_dir))
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    try:
        import pgserver  # type: ignore[attr-defined,unused-ignore]
    except ImportError:  # images install without the `local` extra, on purpose
        raise ConfigError(
            "DB_POSTGRESQL_WRITE_DSN is not set and the embedded PostgreSQL is not installed "
            "(the `local` extra, for `make run`): set DB_POSTGRESQL_WRITE_DSN"
        ) from None

    try:
        # cleanup_mode="stop": the server stops when the last process using it exits.
        server = pgserver.get_server(  # type: ignore[attr-defined,unused-ignore]
            pgdata, cleanup_mode="stop"
        )
    except Exception as exc:  # pgserver raises plain subprocess/OS errors
        raise ConfigError(f"embedded PostgreSQL in {pgdata} failed to start: {exc}") from exc
    uri: str = server.get_uri()
    log.info("embedded postgresql running", extra={"pgdata": str(pgdata)})
    return uri
