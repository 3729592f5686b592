"""Operator commands (`jan-server admin …`); filled in by the identity issue."""

from __future__ import annotations

import argparse
from typing import Any


def add_admin_commands(commands: Any) -> None:
    admin = commands.add_parser("admin", help="manage organizations and admin keys")
    admin.add_subparsers(dest="admin_command", required=True)
    admin.set_defaults(run=lambda args: 0)
    _ = argparse
