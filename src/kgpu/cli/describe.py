"""`kgpu describe`: one resource in full, for "why is it not serving?" (kubectl describe's job).

A service shows what was asked (model, resources, runtime, autoscaling), where it stands (phase and
the reason, ready against desired, what the autoscaler sees), every replica with its message, and
the recent events, oldest first, so the story reads top to bottom.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from kgpu.api.models import CLUSTER_ANNOTATION
from kgpu.cli.render import (
    age,
    key_values,
    phase,
    placement_text,
    pool_nodes,
    print_table,
    replicas_table,
    service_clusters_table,
)


def _fields(console: Console, rows: list[tuple[str, str]]) -> None:
    width = max(len(label) for label, _ in rows) + 2
    for label, value in rows:
        console.print(f"[bold]{label + ':':<{width}}[/bold]{value}", highlight=False, soft_wrap=True)


def _section(console: Console, title: str) -> None:
    console.print(f"\n[bold]{title}:[/bold]")


def _map(values: dict) -> str:
    return key_values(values, ", ")


def describe_service(console: Console, item: dict, replicas: list[dict]) -> None:
    meta, spec, status = item["metadata"], item["spec"], item.get("status") or {}
    key = f"{meta.get('namespace', 'default')}/{meta['name']}"
    runtime = spec.get("runtime") or {}
    resources = spec.get("resources") or {}
    rows = [
        ("Name", meta["name"]),
        ("Namespace", meta.get("namespace", "default")),
        ("Created", f"{age(meta.get('creationTimestamp'))} ago"),
        ("Model", spec["model"]["uri"]),
        ("Endpoint", f"{status.get('endpoint', '-')}  (model: {meta['name']})"),
        ("Resources", f"limits {_map(resources.get('limits') or {})}" if resources.get("limits") else "cpu"),
        ("Runtime", _map(runtime)),
    ]
    if meta.get("annotations", {}).get(CLUSTER_ANNOTATION):
        rows.append(("Cluster", meta["annotations"][CLUSTER_ANNOTATION]))
    if spec.get("placement"):
        rows.append(("Placement", placement_text(spec["placement"])))
    if spec.get("containerConcurrency"):
        rows.append(("Concurrency", f"at most {spec['containerConcurrency']} requests per replica"))
    scaling = spec.get("autoscaling")
    if scaling:
        rows.append(("Autoscaling", _map(scaling)))
    else:
        rows.append(("Replicas", f"{spec.get('replicas', 1)} (fixed)"))
    _fields(console, rows)

    _section(console, "Status")
    conditions = status.get("conditions") or []
    reason = conditions[0].get("reason", "") if conditions else ""
    message = conditions[0].get("message", "") if conditions else ""
    state = [
        ("Phase", f"{phase(status.get('phase', '-'))}" + (f" ({reason})" if reason else "")),
        ("Ready", f"{status.get('readyReplicas', 0)}/{status.get('replicas', '-')}"),
    ]
    if message:
        state.append(("Message", message))
    now = status.get("autoscaling")
    if now:
        state.append(
            (
                "Autoscaler",
                f"{now.get('policy')}: wants {now.get('desiredReplicas')}, "
                f"sees {now.get('concurrency')} requests in flight or waiting"
                + (", panicking" if now.get("panicking") else ""),
            )
        )
    _fields(console, state)

    if status.get("clusters"):
        _section(console, "Clusters")
        print_table(console, service_clusters_table(status["clusters"]))

    own = [r for r in replicas if r["service"] == key]
    _section(console, f"Replicas ({len(own)})")
    if own:
        print_table(console, replicas_table(own, wide=True))
    else:
        console.print("  none")
    _events(console, status.get("events") or [])


def _events(console: Console, events: list[dict]) -> None:
    _section(console, "Events")
    if not events:
        console.print("  none")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("AGE", no_wrap=True)
    table.add_column("MESSAGE")
    for event in events:
        table.add_row(age(event["time"]), event["message"])
    print_table(console, table)


def describe_nodepool(console: Console, item: dict) -> None:
    meta, spec, status = item["metadata"], item["spec"], item.get("status") or {}
    flavor = spec["flavor"]
    _fields(
        console,
        [
            ("Name", meta["name"]),
            ("Namespace", meta.get("namespace", "default")),
            ("Created", f"{age(meta.get('creationTimestamp'))} ago"),
            ("Cluster", (meta.get("annotations") or {}).get(CLUSTER_ANNOTATION, "-")),
            ("Flavor", _map(flavor)),
            ("Nodes", f"{pool_nodes(status)} (min {spec.get('minNodes', 0)}, max {spec.get('maxNodes', 1)})"),
            ("Sharing", _map(spec.get("sharing") or {})),
            ("Labels", _map(spec.get("labels") or {})),
            ("Taints", ", ".join(f"{t['key']}={t.get('value', '')}:{t['effect']}" for t in spec.get("taints") or [])
             or "-"),
            ("Per node", _map(status.get("allocatablePerNode") or {})),
            ("Allocatable", _map(status.get("allocatable") or {})),
        ],
    )  # fmt: skip
    nodes = status.get("nodeList") or []
    _section(console, f"Nodes ({len(nodes)})")
    if not nodes:
        console.print("  none")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("NAME", "STATUS", "REPLICAS", "ALLOCATED", "ALLOCATABLE"):
        table.add_column(column, no_wrap=True)
    for n in nodes:
        joining = f" (ready in {n['readyInS']:g}s)" if "readyInS" in n else ""
        table.add_row(
            n["name"],
            n["status"] + joining,
            str(n.get("replicas", 0)),
            _map(n.get("allocated") or {}),
            _map(n.get("allocatable") or {}),
        )
    print_table(console, table)
