"""The audit log: every other service records what it did through `audit_service.record`."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from postwright.db.models import AuditEvent
from postwright.kit.ids import new_id
from postwright.kit.pagination import Page, PageRequest, paginate
from postwright.workspaces.auth import Principal


class AuditService:
    def record(
        self,
        session: AsyncSession,
        *,
        workspace_id: str,
        action: str,
        subject_type: str,
        subject_id: str | None,
        principal: Principal | None = None,
        actor_user_id: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> AuditEvent:
        event = AuditEvent(
            id=new_id("aud"),
            workspace_id=workspace_id,
            actor_user_id=principal.user_id if principal else actor_user_id,
            actor_key_id=principal.key_id if principal else None,
            action=action,
            subject_type=subject_type,
            subject_id=subject_id,
            data=data,
        )
        session.add(event)
        return event

    async def list(
        self,
        session: AsyncSession,
        principal: Principal,
        *,
        page: PageRequest,
        action: str | None,
        subject_id: str | None,
    ) -> Page[AuditEvent]:
        query = select(AuditEvent).where(AuditEvent.workspace_id == principal.workspace_id)
        if action:
            query = query.where(AuditEvent.action == action)
        if subject_id:
            query = query.where(AuditEvent.subject_id == subject_id)
        return await paginate(session, query, AuditEvent.id, page)


audit_service = AuditService()
