"""Sandbox mode (`postwright serve --sandbox`): fake X and Bluesky served in-process, and a call that
connects sandbox accounts, so a newcomer sees a post go from SCHEDULED to PUBLISHED without credentials."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from postwright.accounts.schemas import CredentialsIn, SocialAccountCreate, account_to_dict
from postwright.accounts.service import accounts_service
from postwright.api.deps import PrincipalDep, SessionDep
from postwright.errors import NotFound
from postwright.testing.fakes import create_fake_app
from postwright.workspaces.auth import Scope

router = APIRouter(prefix="/sandbox", tags=["Sandbox"])
X_PREFIX = "/sandbox/x"
BLUESKY_PREFIX = "/sandbox/bluesky"


def mount_fakes(app: FastAPI) -> None:
    app.mount(X_PREFIX, create_fake_app("X"))
    app.mount(BLUESKY_PREFIX, create_fake_app("BLUESKY"))


@router.post("/accounts", status_code=201, summary="Connect a sandbox X and Bluesky account (sandbox mode only)")
async def connect_sandbox_accounts(request: Request, session: SessionDep, principal: PrincipalDep) -> JSONResponse:
    if not getattr(request.app.state, "sandbox", False):
        raise NotFound("Sandbox mode is off; start the server with `postwright serve --sandbox`.")
    principal.require_scopes(Scope.ACCOUNTS_WRITE)
    base = request.app.state.settings.base_public_url.rstrip("/")
    suffix = principal.workspace_id[-8:].lower()
    wanted = [
        SocialAccountCreate(
            platform="X",
            handle=f"sandbox_{suffix}",
            displayName="Sandbox X",
            credentials=CredentialsIn(
                accessToken=f"sandbox-{principal.workspace_id}",
                refreshToken=f"sandbox-refresh-{principal.workspace_id}",
            ),
        ),
        SocialAccountCreate(
            platform="BLUESKY",
            handle=f"sandbox-{suffix}.bsky.test",
            credentials=CredentialsIn(appPassword="sandbox-app-password", serviceUrl=f"{base}{BLUESKY_PREFIX}"),
        ),
    ]
    created: list[dict[str, Any]] = []
    for data in wanted:
        account, _ = await accounts_service.import_account(session, principal, data, request.app.state.cipher)
        created.append(account_to_dict(account))
    return JSONResponse(
        {"data": created, "fakes": {"X": f"{base}{X_PREFIX}", "BLUESKY": f"{base}{BLUESKY_PREFIX}"}}, status_code=201
    )
