"""The `postwright` command: serve, worker, migrate, bootstrap, keys."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from postwright.config import Settings, get_settings

app = typer.Typer(help="postwright: self-hosted social-media publishing API.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
console = Console(stderr=True)
T = TypeVar("T")

DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar="POSTWRIGHT_DATA_DIR", help="Where the embedded database and secrets live."),
]


def _settings(data_dir: Path | None = None, **overrides: Any) -> Settings:
    base = get_settings()
    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    return base.model_copy(update=values)


class Database:
    """DATABASE_URL when set, else the embedded server in the data dir (stopped on exit)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.server: Any = None

    def __enter__(self) -> str:
        if self.settings.database_url:
            return self.settings.database_url
        from postwright.db.embedded import start_embedded

        self.server, url = start_embedded(self.settings.data_dir)
        return url

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            from postwright.db.embedded import stop_embedded

            stop_embedded(self.server)


def run_async(coro: Awaitable[T]) -> T:
    """Run on uvloop when it is installed (uvicorn[standard] brings it): a faster event loop."""
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coro)  # type: ignore[arg-type]


def _run_with_session(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    from postwright.db.migrate import migrate
    from postwright.db.session import create_engine, create_sessionmaker, unit_of_work

    with Database(settings) as url:

        async def main() -> T:
            engine = create_engine(url, pool_size=2)
            try:
                await migrate(engine)
                async with unit_of_work(create_sessionmaker(engine)) as session:
                    return await work(session)
            finally:
                await engine.dispose()

        return asyncio.run(main())


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(envvar="POSTWRIGHT_HOST", help="Default 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(envvar="POSTWRIGHT_PORT", help="Default 4100")] = None,
    data_dir: DataDirOption = None,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="Run the API only.")] = False,
    sandbox: Annotated[bool, typer.Option("--sandbox", help="Also serve fake platforms and sandbox accounts.")] = False,
) -> None:
    """Run the API (and the publishing worker) on an embedded or external PostgreSQL."""
    from postwright.log_config import configure_logging
    from postwright.server import run_server

    settings = _settings(data_dir, host=host, port=port)
    configure_logging(settings.log_level)
    with Database(settings) as url:
        settings = settings.model_copy(update={"database_url": url})
        run_async(run_server(settings, with_worker=not no_worker, sandbox=sandbox))


@app.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(help="Targets published at once.")] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Run only the publishing worker (any number may share one database)."""
    from postwright.log_config import configure_logging
    from postwright.server import run_worker_only

    settings = _settings(data_dir, worker_concurrency=concurrency)
    configure_logging(settings.log_level)
    with Database(settings) as url:
        settings = settings.model_copy(update={"database_url": url})
        run_async(run_worker_only(settings))


@app.command()
def migrate(data_dir: DataDirOption = None) -> None:
    """Apply database migrations (serve does this on start too)."""

    async def noop(_: Any) -> None:
        return None

    _run_with_session(_settings(data_dir), noop)
    console.print("[green]database is up to date[/green]")


@app.command()
def bootstrap(
    workspace: Annotated[str, typer.Option(help="Name of the new workspace.")],
    email: Annotated[str, typer.Option(help="Email of its owner.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Create a workspace, its OWNER and an API key with every scope."""
    from postwright.workspaces.service import workspaces_service

    async def work(session: Any) -> Any:
        return await workspaces_service.bootstrap(session, workspace_name=workspace, email=email)

    result = _run_with_session(_settings(data_dir), work)
    payload = {"workspaceId": result.workspace.id, "userId": result.user.id, "apiKey": result.key.raw_key}
    if as_json:
        typer.echo(json.dumps(payload))
        return
    console.print(f"workspace [bold]{result.workspace.id}[/bold] ({workspace}), owner {result.user.id}")
    console.print("API key (shown once, store it now):")
    typer.echo(result.key.raw_key)


@keys_app.command("create")
def keys_create(
    workspace: Annotated[list[str], typer.Option(help="Workspace id; repeat for a multi-workspace key.")],
    role: Annotated[str | None, typer.Option(help="Cap the key's role: OWNER, ADMIN, EDITOR or VIEWER.")] = None,
    scopes: Annotated[str | None, typer.Option(help="Comma-separated scopes (default: all).")] = None,
    email: Annotated[str | None, typer.Option(help="Act as this member (created if new) instead of the owner.")] = None,
    name: Annotated[str | None, typer.Option(help="A label for the key.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Create an API key; it is printed once."""
    from postwright.errors import PostwrightError
    from postwright.workspaces.auth import ALL_SCOPES, Role
    from postwright.workspaces.service import workspaces_service

    if role and role.upper() not in Role.__members__:
        raise typer.BadParameter(f"role must be one of {', '.join(Role.__members__)}")
    scope_list = [s.strip() for s in scopes.split(",") if s.strip()] if scopes else list(ALL_SCOPES)

    async def work(session: Any) -> Any:
        return await workspaces_service.create_key(
            session,
            workspace_ids=workspace,
            scopes=scope_list,
            role=role.upper() if role else None,
            email=email,
            name=name,
        )

    try:
        created = _run_with_session(_settings(data_dir), work)
    except PostwrightError as exc:
        console.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(json.dumps({"id": created.key.id, "apiKey": created.raw_key}))
        return
    console.print(f"key [bold]{created.key.id}[/bold] scopes={','.join(created.key.scopes)} (shown once):")
    typer.echo(created.raw_key)


@keys_app.command("list")
def keys_list(
    workspace: Annotated[str, typer.Option(help="Workspace id.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
    data_dir: DataDirOption = None,
) -> None:
    """List a workspace's API keys (never the keys themselves)."""
    from postwright.kit.clock import isoformat_z
    from postwright.workspaces.service import workspaces_service

    async def work(session: Any) -> Any:
        return await workspaces_service.list_keys(session, workspace_id=workspace)

    keys = _run_with_session(_settings(data_dir), work)
    rows = [
        {
            "id": k.id,
            "prefix": k.display_prefix,
            "userId": k.user_id,
            "role": k.role,
            "scopes": k.scopes,
            "workspaceIds": k.workspace_ids,
            "revokedAt": isoformat_z(k.revoked_at),
            "createdAt": isoformat_z(k.created_at),
        }
        for k in keys
    ]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table("id", "prefix", "role", "scopes", "revoked")
    for row in rows:
        table.add_row(
            row["id"],
            row["prefix"] + "…",
            row["role"] or "-",
            ",".join(row["scopes"]),
            row["revokedAt"] or "",
        )
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str, data_dir: DataDirOption = None) -> None:
    """Revoke an API key at once."""
    from postwright.errors import PostwrightError
    from postwright.workspaces.service import workspaces_service

    async def work(session: Any) -> Any:
        return await workspaces_service.revoke_key(session, key_id=key_id)

    try:
        _run_with_session(_settings(data_dir), work)
    except PostwrightError as exc:
        console.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(2) from exc
    console.print(f"revoked {key_id}")


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
