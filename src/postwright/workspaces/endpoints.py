from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import Field

from postwright.api.deps import PageDep, PrincipalDep, SessionDep
from postwright.audit.service import audit_service
from postwright.db.models import Workspace
from postwright.kit.clock import isoformat_z
from postwright.posts.schemas import StrictModel
from postwright.workspaces.auth import Role
from postwright.workspaces.service import workspaces_service

router = APIRouter(tags=["Workspace"])


class WorkspaceUpdate(StrictModel):
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    requireApproval: bool | None = None


def workspace_to_dict(workspace: Workspace) -> dict[str, Any]:
    return {
        "id": workspace.id,
        "name": workspace.name,
        "requireApproval": workspace.require_approval,
        "createdAt": isoformat_z(workspace.created_at),
    }


@router.get("/workspace", summary="The workspace this request acts in, with its settings")
async def get_workspace(session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    workspace = await workspaces_service.get_workspace(session, principal)
    return {**workspace_to_dict(workspace), "role": principal.role.value, "scopes": sorted(principal.scopes)}


@router.patch("/workspace", summary="Change workspace settings (admin/owner)")
async def update_workspace(body: WorkspaceUpdate, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    workspace = await workspaces_service.update_settings(
        session, principal, name=body.name, require_approval=body.requireApproval
    )
    return workspace_to_dict(workspace)


@router.get("/audit-log", tags=["Audit"], summary="Who did what, newest first (admin/owner)")
async def list_audit_log(
    session: SessionDep,
    principal: PrincipalDep,
    page: PageDep,
    action: Annotated[str | None, Query(max_length=64)] = None,
    subjectId: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    principal.require_role(Role.ADMIN, "read the audit log")
    result = await audit_service.list(session, principal, page=page, action=action, subject_id=subjectId)
    return {
        "data": [
            {
                "id": e.id,
                "workspaceId": e.workspace_id,
                "actorUserId": e.actor_user_id,
                "actorKeyId": e.actor_key_id,
                "action": e.action,
                "subjectType": e.subject_type,
                "subjectId": e.subject_id,
                "data": e.data,
                "createdAt": isoformat_z(e.created_at),
            }
            for e in result.items
        ],
        "pagination": result.pagination(),
    }
