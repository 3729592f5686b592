"""What every tool shares: its result, the error the model is meant to see, and the limits.

A tool never raises past its caller for a failure the model can act on (a bad argument, a
search provider that is down, a page that is too slow): it raises ``ToolError``, and the
tool box turns that into a result marked as an error. Anything else is our bug.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from functions.common.settings import Settings

TRUNCATION_NOTE = "\n\n[output truncated]"


class ToolError(Exception):
    """A failure reported to the model (or MCP client) as the tool's result."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class ToolResult:
    text: str
    structured: dict[str, Any] | None = None
    is_error: bool = False

    @classmethod
    def error(cls, message: str) -> ToolResult:
        return cls(text=message, is_error=True)


@dataclass(frozen=True, slots=True)
class ToolLimits:
    timeout_seconds: float
    fetch_max_bytes: int
    result_max_chars: int
    default_daily_calls: int
    allowed_hosts: tuple[str, ...] = field(default=())
    # The operator's ceiling on any project's daily quota (0: none, unlimited allowed).
    max_daily_calls: int = 0
    # A guest's project never gets more than this (0: no guest-specific cap).
    guest_daily_calls: int = 0

    @classmethod
    def from_settings(cls, s: Settings) -> ToolLimits:
        return cls(
            timeout_seconds=s.jan_tool_timeout_seconds,
            fetch_max_bytes=s.jan_fetch_max_bytes,
            result_max_chars=s.jan_tool_result_max_chars,
            default_daily_calls=s.jan_tool_calls_per_day,
            allowed_hosts=s.jan_fetch_allowed_hosts,
            max_daily_calls=(
                s.jan_tool_calls_per_day
                if s.jan_tool_calls_per_day_max is None
                else s.jan_tool_calls_per_day_max
            ),
            guest_daily_calls=s.jan_guest_tool_calls_per_day,
        )


def cap_text(text: str, limit: int) -> str:
    """Cut text to ``limit`` characters, saying so, so the model knows it saw only part."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(TRUNCATION_NOTE))] + TRUNCATION_NOTE
