from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from postwright.accounts.schemas import SocialAccountCreate, account_to_dict
from postwright.accounts.service import accounts_service
from postwright.api.deps import PrincipalDep, SessionDep
from postwright.workspaces.auth import Scope

router = APIRouter(prefix="/social-accounts", tags=["Social accounts"])


@router.get("", summary="List connected social accounts")
async def list_accounts(session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    principal.require_scopes(Scope.ACCOUNTS_READ)
    return {"data": [account_to_dict(a) for a in await accounts_service.list(session, principal)]}


@router.get("/{account_id}", summary="Get one social account")
async def get_account(account_id: str, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    principal.require_scopes(Scope.ACCOUNTS_READ)
    return account_to_dict(await accounts_service.get(session, principal, account_id))


@router.post("", status_code=201, summary="Import an account with credentials you already have")
async def import_account(
    body: SocialAccountCreate, request: Request, session: SessionDep, principal: PrincipalDep
) -> JSONResponse:
    principal.require_scopes(Scope.ACCOUNTS_WRITE)
    account, created = await accounts_service.import_account(session, principal, body, request.app.state.cipher)
    return JSONResponse(account_to_dict(account), status_code=201 if created else 200)


@router.delete("/{account_id}", summary="Disconnect a social account")
async def delete_account(account_id: str, session: SessionDep, principal: PrincipalDep) -> Response:
    principal.require_scopes(Scope.ACCOUNTS_WRITE)
    await accounts_service.delete(session, principal, account_id)
    return Response(content=b'{"success":true}', media_type="application/json")
