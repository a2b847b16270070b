"""`kgpu server` (a control plane shared by teams) and `kgpu login` (the CLI's token for it)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console

from kgpu.cli.cluster_options import ClusterGraceOption
from kgpu.cli.guard_options import AllowHostOption, AllowOriginOption

console = Console()
err = Console(stderr=True)


def server(
    port: int = typer.Option(8000, "--port", "-p", min=1, max=65535, help="port of the API and gateway"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on"),
    state_dir: Path = typer.Option(Path(".kgpu"), "--state-dir", help="where state and replica logs live"),
    database_url: str = typer.Option(
        None, "--database-url", help="SQLAlchemy URL (default: SQLite in --state-dir)"
    ),
    auth: bool = typer.Option(
        True, "--auth/--no-auth", help="require API tokens (projects, roles, quotas) on the control plane"
    ),
    allow_host: list[str] = AllowHostOption,
    allow_origin: list[str] = AllowOriginOption,
    cluster_grace: float = ClusterGraceOption,
) -> None:
    """Run the control plane and gateway without applying files (resources come through the API)."""
    import uvicorn  # imported here: pulls in the server stack

    from kgpu.controlplane.auth import bootstrap_cluster_admin, bootstrap_metrics_token
    from kgpu.controlplane.platform import Platform, PlatformConfig
    from kgpu.controlplane.request_guard import guard_settings
    from kgpu.controlplane.server import create_server_app
    from kgpu.http_limits import uvicorn_limits

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    public_url = f"http://{host}:{port}"
    config = PlatformConfig(
        state_dir=state_dir, public_url=public_url, database_url=database_url, cluster_grace_s=cluster_grace
    )
    platform = Platform(config)
    app = create_server_app(
        platform, auth=auth, guard=guard_settings(host, allow_host or [], allow_origin or [])
    )
    if auth:
        token = bootstrap_cluster_admin(app.state.access.store, state_dir)
        token_file = Path(state_dir).resolve() / "admin-token"
        if token:
            console.print(
                f"cluster-admin token (shown once; also in {token_file}, mode 0600):\n{token}", soft_wrap=True
            )
        else:
            console.print(f"auth on; the cluster-admin token was made at first start ({token_file})")
        metrics_token = bootstrap_metrics_token(app.state.access.store, state_dir).resolve()
        console.print(
            f"/metrics needs the metrics token in {metrics_token}: "
            f"kgpu prometheus-config --token-file {metrics_token}",
            soft_wrap=True,
        )
    else:
        console.print("[yellow]auth off: anyone who reaches this port can change everything[/yellow]")
    console.print(f"state in {Path(state_dir).resolve()}; API and gateway on {public_url}")
    uvicorn.run(
        app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=30, **uvicorn_limits()
    )


def login(
    server_url: str = typer.Option(..., "--server", "-s", help="kgpu server URL"),
    token: str = typer.Option(..., "--token", help="API token (from the server's admin or `kgpu server`)"),
    check: bool = typer.Option(
        True, "--check/--no-check", help="ask the server to accept the token before saving it"
    ),
) -> None:
    """Save the server and token for the CLI ($KGPU_SERVER / $KGPU_TOKEN still win)."""
    from kgpu.cli.client import ApiError, KgpuClient
    from kgpu.cli.config import save_config

    if not server_url.startswith(("http://", "https://")):
        err.print(f'[red]error:[/red] --server: "{server_url}" is not an http(s) URL')
        raise typer.Exit(2)
    url, token = server_url.rstrip("/"), token.strip()
    projects = None
    if check:  # as `docker login` does: a typo in the URL or the token shows now, not at the next command
        client = KgpuClient(url, token=token)
        try:
            projects = [p["name"] for p in client.projects()]
        except ApiError as exc:
            reason = f"the server at {url} did not accept this token" if exc.status == 401 else str(exc)
            err.print(
                f"[red]error:[/red] {reason}; nothing saved (--no-check saves without asking)", soft_wrap=True
            )
            raise typer.Exit(1) from None
        finally:
            client.close()
    path = save_config(url, token)
    seen = f"; projects: {', '.join(projects) or 'none'}" if projects is not None else ""
    console.print(f"logged in to {url} (saved in {path}{seen})", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("server")(server)
    app.command()(login)
