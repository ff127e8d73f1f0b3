"""Who is calling: API key → user, workspace, effective role and scopes."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from postwright.errors import ForbiddenRole, ForbiddenScope


class Role(StrEnum):
    OWNER = "OWNER"
    ADMIN = "ADMIN"
    EDITOR = "EDITOR"
    VIEWER = "VIEWER"


ROLE_RANK = {Role.VIEWER: 0, Role.EDITOR: 1, Role.ADMIN: 2, Role.OWNER: 3}


class Scope(StrEnum):
    POSTS_READ = "posts:read"
    POSTS_WRITE = "posts:write"
    PUBLISH_WRITE = "publish:write"
    MEDIA_WRITE = "media:write"
    ACCOUNTS_READ = "accounts:read"
    ACCOUNTS_WRITE = "accounts:write"
    WEBHOOKS_MANAGE = "webhooks:manage"
    KEYS_MANAGE = "keys:manage"


ALL_SCOPES = [s.value for s in Scope]


def lower_role(a: Role, b: Role | None) -> Role:
    if b is None:
        return a
    return a if ROLE_RANK[a] <= ROLE_RANK[b] else b


@dataclass(frozen=True)
class Principal:
    user_id: str
    key_id: str | None
    workspace_id: str
    role: Role
    scopes: frozenset[str]
    via_api: bool = True

    def require_scopes(self, *scopes: Scope) -> None:
        missing = [s.value for s in scopes if s.value not in self.scopes]
        if missing:
            raise ForbiddenScope(f"This API key lacks the scope(s): {', '.join(missing)}.")

    def require_role(self, minimum: Role, action: str) -> None:
        if ROLE_RANK[self.role] < ROLE_RANK[minimum]:
            raise ForbiddenRole(f"Your role {self.role.value} may not {action}; it needs {minimum.value} or above.")
