"""Prefixed, opaque, time-ordered IDs (``user_…``, ``org_…``, ``proj_…``, ``key_…``).

The body is 24 characters of Crockford base32: a 48-bit millisecond timestamp then 72
random bits. The alphabet is in ASCII order and the length fixed, so IDs of one prefix sort
in creation order: list endpoints page with ``ORDER BY id`` and ``id < $after``.
"""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_BODY_CHARS = 24  # 120 bits / 5 bits per character

USER = "user_"
ORGANIZATION = "org_"
PROJECT = "proj_"
INVITE = "invite-"
API_KEY = "key_"
SERVICE_ACCOUNT = "svcacct_"
REFRESH_TOKEN = "rt_"  # noqa: S105 (an ID prefix, not a secret)
TOKEN_FAMILY = "rtf_"  # noqa: S105


def new_id(prefix: str) -> str:
    """A fresh ID with the given prefix (one of the constants above, or an area's own)."""
    value = (time.time_ns() // 1_000_000) << 72 | secrets.randbits(72)
    chars = []
    for _ in range(_BODY_CHARS):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return prefix + "".join(reversed(chars))
