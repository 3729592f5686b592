"""``python -m jan_predictor`` / ``jan-predictor``: serve with uvicorn.

Settings come from ``PREDICTOR_*`` variables (and Knative's ``PORT``); the flags KServe passes
to model servers (``--http_port``, ``--model_name``) override them.
"""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from jan_predictor.app import create_app
from jan_predictor.settings import Settings


def _parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="jan-predictor", description=__doc__)
    parser.add_argument("--http_port", "--port", dest="port", type=int, help="listen port")
    parser.add_argument("--host", help="listen address (default 0.0.0.0)")
    parser.add_argument("--model_name", help="name the model is served under")
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Read the settings, build the app and serve it until stopped."""
    args, unknown = _parse_args(argv)
    overrides = {
        key: value
        for key, value in (
            ("port", args.port),
            ("host", args.host),
            ("model_name", args.model_name),
        )
        if value is not None
    }
    settings = Settings().model_copy(update=overrides)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    log = logging.getLogger("jan_predictor")
    if unknown:
        log.warning("ignoring unknown arguments: %s", " ".join(unknown))
    log.info(
        "jan-predictor serving %r on http://%s:%d/openai/v1 (health: /v2/health/ready)",
        settings.model_name,
        settings.host,
        settings.port,
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
