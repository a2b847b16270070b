"""The `kgpu` command."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.text import Text

from kgpu.api.errors import ResourceValidationError
from kgpu.api.io import load_resource_file
from kgpu.api.models import object_key
from kgpu.cli import render
from kgpu.cli.client import ApiError, KgpuClient
from kgpu.cli.cluster_options import ClusterGraceOption
from kgpu.cli.describe import describe_nodepool, describe_service
from kgpu.cli.guard_options import AllowHostOption, AllowOriginOption
from kgpu.controlplane.request_guard import guard_settings
from kgpu.controlplane.resources import ALIASES, KIND_BY_PLURAL, PLURAL_BY_KIND

app = typer.Typer(
    help="kgpu: declare GPU node pools and inference services; kgpu places, serves, scales and measures them.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err = Console(stderr=True)

# Ships inside the package (the repository's examples/minilm.yaml links to it), so `kgpu up` with no
# file serves it from any directory, also after `pip install kgpu`.
DEFAULT_EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "minilm.yaml"
ServerOption = typer.Option(
    None, "--server", "-s", help="kgpu server URL (default $KGPU_SERVER or http://127.0.0.1:8000)"
)
NamespaceOption = typer.Option("default", "--namespace", "-n", help="namespace (project)")


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def _client(server: str | None) -> KgpuClient:
    try:
        return KgpuClient(server)
    except ApiError as exc:  # a malformed --server URL
        _fail(str(exc))
        raise


def _report_api_error(exc: ApiError) -> None:
    if exc.fields:
        err.print(f"[red]error:[/red] the server refused it ({exc.status}):")
        for field in exc.fields:
            err.print(f"  {field['path']}: {field['message']}")
        raise typer.Exit(1)
    _fail(str(exc))


def _plural(kind: str) -> str:
    plural = ALIASES.get(kind, kind)
    if plural in ("replicas", "replica", "nodes", "node") or plural in KIND_BY_PLURAL:
        return plural
    _fail(f'unknown resource type "{kind}": use services, replicas, nodes, nodepools or clusters', 2)
    return ""


@app.command()
def up(
    file: list[Path] = typer.Option(
        None, "--file", "-f", help="resource files to apply (default: the minilm example shipped with kgpu)"
    ),
    port: int = typer.Option(8000, "--port", "-p", min=1, max=65535, help="port of the API and gateway"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on"),
    state_dir: Path = typer.Option(Path(".kgpu"), "--state-dir", help="where state and replica logs live"),
    database_url: str = typer.Option(
        None, "--database-url", help="SQLAlchemy URL (default: SQLite in --state-dir)"
    ),
    allow_host: list[str] = AllowHostOption,
    allow_origin: list[str] = AllowOriginOption,
    cluster_grace: float = ClusterGraceOption,
) -> None:
    """Start the embedded platform (control plane + gateway) and serve the given services."""
    from kgpu.cli.up import run_up  # imported here: pulls in the server stack

    files = list(file) if file else [DEFAULT_EXAMPLE]
    for path in files:
        if not path.exists():
            _fail(f"{path}: no such file (pass -f FILE, or no -f for the example shipped with kgpu)")
        try:
            load_resource_file(path)
        except ResourceValidationError as exc:
            _fail(f"{path}:\n{exc}")
    port_check = doctor.check_port(host, port)  # before anything starts: the commonest first-run failure
    if port_check.status == doctor.FAIL:
        _fail(f"{port_check.name} is {port_check.detail}: {port_check.fix} (`kgpu doctor` checks the rest)")
    run_up(
        files,
        host,
        port,
        state_dir,
        database_url,
        guard_settings(host, allow_host or [], allow_origin or []),
        cluster_grace_s=cluster_grace,
    )


@app.command()
def apply(
    file: list[Path] = typer.Option(..., "--file", "-f", help="YAML/JSON resource file(s)"),
    server: str = ServerOption,
) -> None:
    """Create or update resources from files (validated here and again by the server)."""
    resources = []
    for path in file:
        try:
            resources += [(path, r) for r in load_resource_file(path)]
        except (ResourceValidationError, OSError) as exc:
            _fail(f"{path}:\n{exc}")
    client = _client(server)
    for _path, resource in resources:
        body = resource.model_dump(by_alias=True, mode="json", exclude_none=True)
        try:
            _, created = client.apply(PLURAL_BY_KIND[resource.kind], body)
        except ApiError as exc:
            _report_api_error(exc)
        console.print(
            f"{resource.kind.lower()}/{resource.metadata.name} {'created' if created else 'configured'}"
        )


@app.command()
def get(
    kind: str = typer.Argument(..., help="services | replicas | nodes | nodepools | clusters"),
    name: str = typer.Argument(None, help="one resource by name"),
    output: str = typer.Option(None, "--output", "-o", help="wide | yaml | json"),
    namespace: str = NamespaceOption,
    all_namespaces: bool = typer.Option(False, "--all-namespaces", "-A"),
    server: str = ServerOption,
) -> None:
    """Show resources as a table (or YAML/JSON)."""
    if output not in (None, "wide", "yaml", "json"):
        _fail(f'--output: unsupported value "{output}": use wide, yaml or json', 2)
    plural = _plural(kind)
    client = _client(server)
    wide = output == "wide"
    try:
        if plural in ("replicas", "replica"):
            items = client.replicas()
            if name:
                items = [r for r in items if name in (r["name"], r["service"], r["service"].split("/")[-1])]
            if output in ("yaml", "json"):
                _print_structured(items, output)
            else:
                render.print_table(console, render.replicas_table(items, wide))
            return
        if plural in ("nodes", "node"):
            items = client.nodes()
            if output in ("yaml", "json"):
                _print_structured(items, output)
            else:
                render.print_table(console, render.nodes_table(items, wide))
            return
        if name:
            items = [client.get(plural, namespace, name)]
        else:
            items = client.list(plural, None if all_namespaces else namespace)
    except ApiError as exc:
        _report_api_error(exc)
    if output in ("yaml", "json"):
        _print_structured(items, output)
    elif plural == "inferenceservices":
        render.print_table(console, render.services_table(items, client.replicas(), wide))
    elif plural == "nodepools":
        render.print_table(console, render.nodepools_table(items, wide))
    else:
        try:
            pools = client.list("nodepools", None)  # the POOLS column: which pools run on each cluster
        except ApiError as exc:
            _report_api_error(exc)
        render.print_table(console, render.clusters_table(items, pools, wide))


@app.command()
def describe(
    kind: str = typer.Argument(..., help="service | nodepool | cluster"),
    name: str = typer.Argument(...),
    namespace: str = NamespaceOption,
    server: str = ServerOption,
) -> None:
    """Show one resource in full: what was asked, where it stands, its replicas or nodes, recent events."""
    plural = _plural(kind)
    if plural not in KIND_BY_PLURAL:
        _fail(f'describe works on services, nodepools and clusters, not "{kind}": try `kgpu get {kind}`', 2)
    client = _client(server)
    try:
        item = client.get(plural, namespace, name)
        replicas = client.replicas() if plural == "inferenceservices" else []
    except ApiError as exc:
        _report_api_error(exc)
    if plural == "inferenceservices":
        describe_service(console, item, replicas)
    elif plural == "nodepools":
        describe_nodepool(console, item)
    else:
        _print_structured([item], "yaml")


@app.command()
def delete(
    kind: str = typer.Argument(None, help="services | nodepools | clusters"),
    name: str = typer.Argument(None),
    file: list[Path] = typer.Option(None, "--file", "-f", help="delete what these files declare"),
    namespace: str = NamespaceOption,
    server: str = ServerOption,
) -> None:
    """Delete resources; a service's replicas finish their in-flight requests first."""
    targets: list[tuple[str, str, str]] = []
    for path in file or []:
        try:
            targets += [
                (PLURAL_BY_KIND[r.kind], r.metadata.namespace, r.metadata.name)
                for r in load_resource_file(path)
            ]
        except (ResourceValidationError, OSError) as exc:
            _fail(f"{path}:\n{exc}")
    if kind and name:
        targets.append((_plural(kind), namespace, name))
    if not targets:
        _fail("say what to delete: `kgpu delete service NAME` or `kgpu delete -f FILE`", 2)
    client = _client(server)
    for plural, ns, resource_name in targets:
        try:
            client.delete(plural, ns, resource_name)
        except ApiError as exc:
            _report_api_error(exc)
        console.print(f"{KIND_BY_PLURAL[plural].lower()}/{resource_name} deleted")


@app.command()
def logs(
    name: str = typer.Argument(
        ..., help="a replica (minilm-0) or a service (minilm or namespace/minilm: all its replicas)"
    ),
    namespace: str = NamespaceOption,
    follow: bool = typer.Option(False, "--follow", "-f", help="keep printing new lines"),
    tail: int = typer.Option(100, "--tail", min=1, help="lines to show from the end of each log"),
    server: str = ServerOption,
) -> None:
    """Print a replica's log (model loading, batches, errors)."""
    client = _client(server)
    if "/" in name:
        namespace, _, name = name.partition("/")
    try:
        names = _replicas_named(client.replicas(), namespace, name)
        if not names:
            _fail(
                f'no replica or service named "{name}" in namespace "{namespace}" (see `kgpu get replicas`)'
            )
        prefix = len(names) > 1
        offsets = {}
        for replica in names:
            text, offsets[replica] = client.replica_log(replica, tail=tail)
            _print_log(replica, text, prefix)
        while follow:
            time.sleep(0.5)
            for replica in names:
                text, offsets[replica] = client.replica_log(replica, offset=offsets[replica])
                _print_log(replica, text, prefix)
    except ApiError as exc:
        _report_api_error(exc)
    except KeyboardInterrupt:
        pass


def _replicas_named(replicas: list[dict], namespace: str, name: str) -> list[str]:
    """The replica `name` or the replicas of the service `name`, of the namespace only: another
    project's service of the same name is a different service (without auth every replica is listed)."""
    own = [r for r in replicas if r["service"].partition("/")[0] == namespace]
    return [r["name"] for r in own if r["name"] == name] or sorted(
        r["name"] for r in own if r["service"] == object_key(namespace, name)
    )


def _print_structured(items: list[dict], fmt: str) -> None:
    """YAML or JSON exactly as rendered: never wrapped at the terminal's width, so `| jq` reads it."""
    typer.echo(render.structured(items, fmt), nl=fmt == "json")


def _print_log(replica: str, text: str, prefix: bool) -> None:
    for line in text.splitlines():
        text = Text(f"{replica} ", style="cyan") + Text(line) if prefix else Text(line)
        console.print(text, soft_wrap=True, highlight=False)


@app.command()
def version() -> None:
    """Print kgpu's version, Python's and torch's (with its CUDA or CPU build)."""
    from kgpu.cli.doctor import version_lines

    for line in version_lines():
        typer.echo(line)  # never wrapped: pasted into bug reports as it is


from kgpu.cli import doctor  # noqa: E402  (`kgpu doctor`)

doctor.register(app)

from kgpu.cli import telemetry  # noqa: E402  (its commands register on `app`)

telemetry.register(app)

from kgpu.cli.sim import sim_app  # noqa: E402

app.add_typer(sim_app, name="sim")

from kgpu.cli import kube  # noqa: E402  (`kgpu crds`, `kgpu cluster add`)

kube.register(app)

from kgpu.cli import server as server_commands  # noqa: E402  (`kgpu server`, `kgpu login`)

server_commands.register(app)

from kgpu.cli import tokens as token_commands  # noqa: E402  (`kgpu token list|create|revoke`)

token_commands.register(app)

if __name__ == "__main__":
    app()
