"""Encryption at rest for provider credentials: AES-256-GCM under MODEL_PROVIDER_SECRET.

The key is SHA-256 of the secret, so any length of secret works. A ciphertext is
``version byte || 12-byte nonce || AES-GCM output``; the caller passes associated data (the
row's ID) so a ciphertext copied onto another row does not decrypt.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = b"\x01"
_NONCE_BYTES = 12


class DecryptError(ValueError):
    """The ciphertext is corrupt, or was made under another secret or for another row."""


class SecretBox:
    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("MODEL_PROVIDER_SECRET is empty")
        self._aead = AESGCM(hashlib.sha256(secret.encode()).digest())

    def encrypt(self, plaintext: str, *, associated: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), associated.encode())
        return _VERSION + nonce + sealed

    def decrypt(self, ciphertext: bytes, *, associated: str) -> str:
        if ciphertext[:1] != _VERSION or len(ciphertext) < 1 + _NONCE_BYTES + 16:
            raise DecryptError("unknown ciphertext format")
        nonce = ciphertext[1 : 1 + _NONCE_BYTES]
        try:
            plain = self._aead.decrypt(nonce, ciphertext[1 + _NONCE_BYTES :], associated.encode())
        except InvalidTag:
            raise DecryptError("ciphertext does not authenticate") from None
        return plain.decode()
