"""Kubernetes commands: `kgpu crds` and `kgpu cluster add NAME --kubeconfig FILE [--context C]`."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml
from rich.console import Console

from kgpu.api.errors import ResourceValidationError
from kgpu.api.io import parse_resource
from kgpu.cli.client import ApiError, KgpuClient

cluster_app = typer.Typer(help="Register Kubernetes clusters with the control plane.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)


class KubeconfigError(ValueError):
    """The kubeconfig file or context cannot be used; the message says which and why."""


def check_kubeconfig(path: Path, context: str | None) -> str:
    """Load the kubeconfig the way the operator will and return the context that will be used."""
    from kubernetes import client as kube_client
    from kubernetes import config as kube_config
    from kubernetes.config.config_exception import ConfigException

    if not path.is_file():
        raise KubeconfigError(f"--kubeconfig: {path}: no such file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise KubeconfigError(f"--kubeconfig: {path}: not a kubeconfig file ({exc})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("contexts"), list):
        raise KubeconfigError(f"--kubeconfig: {path}: not a kubeconfig file (no contexts list)")
    contexts = [c for c in raw["contexts"] if isinstance(c, dict) and c.get("name")]
    active = {"name": raw.get("current-context")} if raw.get("current-context") else None
    names = [c["name"] for c in contexts or []]
    chosen = context or (active or {}).get("name")
    if not chosen:
        raise KubeconfigError(
            f"--kubeconfig: {path}: no current-context; pass --context (one of: {', '.join(names)})"
        )
    if chosen not in names:
        raise KubeconfigError(
            f'--context: "{chosen}" is not in {path}; contexts there: {", ".join(names) or "none"}'
        )
    try:
        # Builds a client configuration (server, credentials) without contacting the cluster; a fresh
        # Configuration keeps the process-wide default untouched.
        kube_config.load_kube_config(
            config_file=str(path), context=chosen, client_configuration=kube_client.Configuration()
        )
    # The client raises plain ValueError/TypeError for malformed fields (base64 data, a number for a list).
    except (ConfigException, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise KubeconfigError(f'--context: "{chosen}" in {path} cannot be used: {exc}') from None
    return chosen


def cluster_resource(name: str, context: str, namespace: str, kubeconfig_secret: str | None = None) -> dict:
    """The Cluster; `kubeconfig_secret`: the name its kubeconfig is stored under on the server."""
    spec = {"backend": "kubernetes", "kubeContext": context}
    if kubeconfig_secret is not None:
        spec["kubeconfigSecret"] = kubeconfig_secret
    body = {
        "apiVersion": "kgpu.dev/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    parse_resource(body)  # the same rules the server applies, with field paths, before any request
    return body


@cluster_app.command("add")
def cluster_add(
    name: str = typer.Argument(..., help="name of the Cluster resource"),
    kubeconfig: Path = typer.Option(..., "--kubeconfig", help="kubeconfig file of the cluster"),
    context: str = typer.Option(None, "--context", help="kubeconfig context (default: its current-context)"),
    namespace: str = typer.Option("default", "--namespace", "-n", help="namespace (project)"),
    server: str = typer.Option(None, "--server", "-s", help="kgpu server URL (default $KGPU_SERVER)"),
) -> None:
    """Register a Kubernetes cluster (backend kubernetes) with the control plane."""
    try:
        chosen = check_kubeconfig(kubeconfig, context)
        body = cluster_resource(name, chosen, namespace, kubeconfig_secret=name)
    except (KubeconfigError, ResourceValidationError) as exc:
        err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        raise typer.Exit(1) from None
    try:
        client = KgpuClient(server)
        # The content goes to the server as a secret (the server never reads a file a client names).
        client.put_kubeconfig(namespace, name, kubeconfig.read_text(encoding="utf-8"))
        _, created = client.apply("clusters", body)
    except ApiError as exc:
        err.print(f"[red]error:[/red] {exc}")
        for field in exc.fields:
            err.print(f"  {field['path']}: {field['message']}")
        raise typer.Exit(1) from None
    console.print(f"cluster/{name} {'created' if created else 'configured'} (context {chosen})")


def crds() -> None:
    """Print kgpu's CustomResourceDefinitions as YAML (kgpu crds | kubectl apply -f -)."""
    from kgpu.api.crds import crds_yaml

    typer.echo(crds_yaml(), nl=False)


def register(app: typer.Typer) -> None:
    app.command("crds")(crds)
    app.add_typer(cluster_app, name="cluster")
