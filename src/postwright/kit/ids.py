"""Prefixed, time-ordered identifiers (ULIDs): `post_01HZX...`."""

from __future__ import annotations

from ulid import ULID

PREFIXES = ("wks", "usr", "key", "post", "tgt", "soc", "med", "whk", "att", "aud", "req", "idem")


def new_id(prefix: str) -> str:
    assert prefix in PREFIXES, prefix
    return f"{prefix}_{ULID()}"
