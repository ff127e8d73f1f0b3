"""Encryption of platform tokens at rest and hashing of API keys.

Tokens use MultiFernet: the first key encrypts, every listed key decrypts, so a key can be rotated by
prepending a new one and running `postwright rotate-secrets`.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, MultiFernet

API_KEY_PREFIX = "pw_live_"


def load_or_create_keys(secret_key: str | None, data_dir: Path) -> list[str]:
    if secret_key:
        return [k.strip() for k in secret_key.split(",") if k.strip()]
    path = data_dir / "secret.key"
    if path.exists():
        return [k.strip() for k in path.read_text().split(",") if k.strip()]
    data_dir.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key().decode()
    # O_EXCL: two processes starting together must not write two different keys.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return [k.strip() for k in path.read_text().split(",") if k.strip()]
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return [key]


class TokenCipher:
    def __init__(self, keys: list[str]) -> None:
        self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])

    def encrypt_json(self, value: dict[str, Any]) -> bytes:
        return self._fernet.encrypt(json.dumps(value, separators=(",", ":")).encode())

    def decrypt_json(self, token: bytes) -> dict[str, Any]:
        return json.loads(self._fernet.decrypt(token))

    def rotate(self, token: bytes) -> bytes:
        return self._fernet.rotate(token)


def generate_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(raw_key: str) -> str:
    # Keys carry 256 bits of randomness, so a fast hash is enough; no salt needed for lookup by hash.
    return hashlib.sha256(raw_key.encode()).hexdigest()
