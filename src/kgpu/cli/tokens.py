"""`kgpu token list|create|revoke`: a project's API tokens (needs an admin token of the project)."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from kgpu.cli.client import ApiError, KgpuClient
from kgpu.cli.render import print_table

console = Console()
err = Console(stderr=True)

token_app = typer.Typer(help="List, create and revoke a project's API tokens.", no_args_is_help=True)
ProjectOption = typer.Option("default", "--namespace", "-n", help="project (namespace)")
ServerOption = typer.Option(None, "--server", "-s", help="kgpu server URL")


def _fail(exc: ApiError) -> None:
    err.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(1)


@token_app.command("list")
def list_tokens(namespace: str = ProjectOption, server: str = ServerOption) -> None:
    """The project's tokens: name, role, when created and last used (never the secret)."""
    try:
        items = KgpuClient(server).tokens(namespace)
    except ApiError as exc:
        _fail(exc)
    table = Table(box=None, header_style="bold")
    for column in ("NAME", "ID", "ROLE", "CREATED", "LAST USED"):
        table.add_column(column)
    for t in items:
        table.add_row(t["name"], t["id"], t["role"], t["created"], t["lastUsed"] or "never")
    print_table(console, table)


@token_app.command("create")
def create_token(
    role: str = typer.Option("viewer", "--role", help="admin (read and write) or viewer (read only)"),
    name: str = typer.Option(None, "--name", help="what the token is for (unique in the project)"),
    namespace: str = ProjectOption,
    server: str = ServerOption,
) -> None:
    """Create a token; it is printed once and cannot be shown again."""
    if role not in ("admin", "viewer"):
        err.print(f'[red]error:[/red] --role: unsupported value "{role}": use admin or viewer')
        raise typer.Exit(2)
    try:
        created = KgpuClient(server).create_token(namespace, role, name)
    except ApiError as exc:
        _fail(exc)
    err.print(f'token "{created["name"]}" ({role}) of project "{namespace}"; shown once:')
    console.print(created["token"], soft_wrap=True, markup=False, highlight=False)


@token_app.command("revoke")
def revoke_token(
    token: str = typer.Argument(..., help="the token's name or id (see `kgpu token list`)"),
    namespace: str = ProjectOption,
    server: str = ServerOption,
) -> None:
    """Revoke a token: the server refuses it from its next request on."""
    try:
        revoked = KgpuClient(server).revoke_token(namespace, token)
    except ApiError as exc:
        _fail(exc)
    console.print(f'token "{revoked["name"]}" ({revoked["id"]}) of project "{namespace}" revoked')


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")
