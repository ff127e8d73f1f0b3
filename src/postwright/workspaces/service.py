"""Workspaces, users, memberships and API keys; turning a raw key into a Principal."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import any_, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from postwright.audit.service import audit_service
from postwright.db.models import ApiKey, Membership, User, Workspace
from postwright.errors import NotFound, Unauthenticated, ValidationFailed
from postwright.kit.clock import utcnow
from postwright.kit.crypto import API_KEY_PREFIX, generate_api_key, hash_api_key
from postwright.kit.ids import new_id
from postwright.workspaces.auth import ALL_SCOPES, Principal, Role, lower_role


@dataclass(frozen=True)
class CreatedKey:
    key: ApiKey
    raw_key: str


@dataclass(frozen=True)
class Bootstrapped:
    workspace: Workspace
    user: User
    key: CreatedKey


def _check_scopes(scopes: list[str]) -> list[str]:
    unknown = sorted(set(scopes) - set(ALL_SCOPES))
    if unknown:
        raise ValidationFailed(f"Unknown scope(s): {', '.join(unknown)}. Known: {', '.join(ALL_SCOPES)}.")
    return sorted(set(scopes))


_AUTHENTICATE = """
    SELECT k.id, k.user_id, k.role, k.scopes, k.workspace_ids, m.workspace_id, m.role
      FROM api_keys AS k
      LEFT JOIN memberships AS m ON m.user_id = k.user_id AND m.workspace_id = ANY(k.workspace_ids)
     WHERE k.key_hash = $1 AND k.revoked_at IS NULL
"""


class WorkspacesService:
    async def _get_or_create_user(self, session: AsyncSession, email: str) -> User:
        email = email.strip().lower()
        if "@" not in email or len(email) > 320:
            raise ValidationFailed("email is not a valid address.")
        user = await session.scalar(select(User).where(User.email == email))
        if user is None:
            user = User(id=new_id("usr"), email=email)
            session.add(user)
            await session.flush()
        return user

    async def bootstrap(self, session: AsyncSession, *, workspace_name: str, email: str) -> Bootstrapped:
        """Create a workspace, its OWNER and an all-scopes key for that owner."""
        name = workspace_name.strip()
        if not name or len(name) > 200:
            raise ValidationFailed("workspace name must be 1-200 characters.")
        user = await self._get_or_create_user(session, email)
        workspace = Workspace(id=new_id("wks"), name=name, require_approval=False)
        session.add(workspace)
        await session.flush()
        session.add(Membership(workspace_id=workspace.id, user_id=user.id, role=Role.OWNER.value))
        await session.flush()
        created = await self.create_key(
            session,
            workspace_ids=[workspace.id],
            user_id=user.id,
            scopes=ALL_SCOPES,
            role=None,
            name="bootstrap",
        )
        audit_service.record(
            session,
            workspace_id=workspace.id,
            action="workspace.create",
            subject_type="workspace",
            subject_id=workspace.id,
            actor_user_id=user.id,
            data={"name": name},
        )
        return Bootstrapped(workspace, user, created)

    async def create_key(
        self,
        session: AsyncSession,
        *,
        workspace_ids: list[str],
        user_id: str | None = None,
        email: str | None = None,
        scopes: list[str],
        role: str | None,
        name: str | None = None,
    ) -> CreatedKey:
        """Issue a key acting as a member (the workspace owner unless an email is given)."""
        if not workspace_ids:
            raise ValidationFailed("A key needs at least one workspace.")
        role_cap = Role(role) if role else None
        for workspace_id in workspace_ids:
            if await session.get(Workspace, workspace_id) is None:
                raise NotFound(f"Workspace {workspace_id} not found.")
        if email:
            user = await self._get_or_create_user(session, email)
            user_id = user.id
            for workspace_id in workspace_ids:
                await self._ensure_member(session, workspace_id, user_id, role_cap or Role.EDITOR)
        elif user_id is None:
            user_id = await session.scalar(
                select(Membership.user_id)
                .where(Membership.workspace_id == workspace_ids[0], Membership.role == Role.OWNER.value)
                .order_by(Membership.id)
                .limit(1)
            )
            if user_id is None:
                raise NotFound("That workspace has no owner to issue a key for.")
        for workspace_id in workspace_ids:
            if await self._membership(session, workspace_id, user_id) is None:
                raise ValidationFailed(f"User {user_id} is not a member of {workspace_id}.")
        raw = generate_api_key()
        key = ApiKey(
            id=new_id("key"),
            user_id=user_id,
            name=name,
            key_hash=hash_api_key(raw),
            display_prefix=raw[: len(API_KEY_PREFIX) + 4],
            scopes=_check_scopes(scopes),
            role=role_cap.value if role_cap else None,
            workspace_ids=list(dict.fromkeys(workspace_ids)),
        )
        session.add(key)
        await session.flush()
        for workspace_id in key.workspace_ids:
            audit_service.record(
                session,
                workspace_id=workspace_id,
                action="key.create",
                subject_type="api_key",
                subject_id=key.id,
                actor_user_id=user_id,
                data={"scopes": key.scopes, "role": key.role},
            )
        return CreatedKey(key, raw)

    async def _membership(self, session: AsyncSession, workspace_id: str, user_id: str) -> Membership | None:
        return await session.scalar(
            select(Membership).where(Membership.workspace_id == workspace_id, Membership.user_id == user_id)
        )

    async def _ensure_member(self, session: AsyncSession, workspace_id: str, user_id: str, role: Role) -> None:
        if await self._membership(session, workspace_id, user_id) is None:
            session.add(Membership(workspace_id=workspace_id, user_id=user_id, role=role.value))
            await session.flush()

    async def list_keys(self, session: AsyncSession, *, workspace_id: str) -> list[ApiKey]:
        rows = await session.scalars(
            select(ApiKey).where(literal(workspace_id) == any_(ApiKey.workspace_ids)).order_by(ApiKey.id)
        )
        return list(rows)

    async def revoke_key(self, session: AsyncSession, *, key_id: str, workspace_id: str | None = None) -> ApiKey:
        key = await session.get(ApiKey, key_id)
        if key is None or (workspace_id and workspace_id not in key.workspace_ids):
            raise NotFound(f"API key {key_id} not found.")
        if key.revoked_at is None:
            key.revoked_at = utcnow()
            for ws in key.workspace_ids:
                audit_service.record(
                    session,
                    workspace_id=ws,
                    action="key.revoke",
                    subject_type="api_key",
                    subject_id=key.id,
                    actor_user_id=key.user_id,
                )
        return key

    async def authenticate(
        self, session: AsyncSession, *, raw_key: str | None, workspace_hint: str | None
    ) -> Principal:
        """Resolve a raw key; a key for several workspaces must name one."""
        if not raw_key or not raw_key.startswith(API_KEY_PREFIX):
            raise Unauthenticated()
        # One round trip: the key and the caller's membership in every workspace it reaches. Every request
        # runs this, so it goes straight to asyncpg on the session's connection (no statement building).
        connection = await session.connection()
        raw = (await connection.get_raw_connection()).driver_connection
        rows = await raw.fetch(_AUTHENTICATE, hash_api_key(raw_key))  # type: ignore[union-attr]
        if not rows:
            raise Unauthenticated()
        key_id, user_id, key_role, scopes, workspace_ids = rows[0][:5]
        roles = {ws: role for *_, ws, role in rows if ws is not None}
        if workspace_hint:
            if workspace_hint not in workspace_ids:
                raise NotFound("Workspace not found.")
            workspace_id = workspace_hint
        elif len(workspace_ids) == 1:
            workspace_id = workspace_ids[0]
        else:
            raise ValidationFailed(
                "This API key reaches several workspaces: name one with the X-Workspace-Id header "
                "or the workspaceId query parameter.",
                details=[{"field": "workspaceId", "message": "required for multi-workspace keys"}],
            )
        if workspace_id not in roles:
            raise NotFound("Workspace not found.")
        return Principal(
            user_id=user_id,
            key_id=key_id,
            workspace_id=workspace_id,
            role=lower_role(Role(roles[workspace_id]), Role(key_role) if key_role else None),
            scopes=frozenset(scopes),
        )

    async def get_workspace(self, session: AsyncSession, principal: Principal) -> Workspace:
        workspace = await session.get(Workspace, principal.workspace_id)
        if workspace is None:
            raise NotFound("Workspace not found.")
        return workspace

    async def update_settings(
        self, session: AsyncSession, principal: Principal, *, name: str | None, require_approval: bool | None
    ) -> Workspace:
        principal.require_role(Role.ADMIN, "change workspace settings")
        workspace = await self.get_workspace(session, principal)
        changes: dict[str, object] = {}
        if name is not None:
            if not name.strip() or len(name) > 200:
                raise ValidationFailed("name must be 1-200 characters.")
            workspace.name = changes["name"] = name.strip()
        if require_approval is not None:
            workspace.require_approval = changes["requireApproval"] = require_approval
        audit_service.record(
            session,
            workspace_id=workspace.id,
            action="workspace.update",
            subject_type="workspace",
            subject_id=workspace.id,
            principal=principal,
            data=changes,
        )
        await session.flush()
        return workspace


workspaces_service = WorkspacesService()
