"""Tables for `kgpu get`: the columns answer "is it serving, where, and is anything wrong"."""

from __future__ import annotations

import json
import time

import yaml
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from kgpu.api.models import CLUSTER_ANNOTATION

_PHASE_STYLE = {
    "Ready": "green",
    "Progressing": "yellow",
    "Starting": "yellow",
    "Loading": "yellow",
    "Pending": "magenta",
    "Draining": "cyan",
    "Degraded": "red",
    "CrashLoopBackOff": "red",
    "ScaledToZero": "dim",
    "Terminated": "dim",
}


def print_table(console: Console, table: Table) -> None:
    """Print a table at its full width, as kubectl does: a narrow terminal (or a pipe, which rich
    treats as 80 columns) wraps long lines instead of cutting names to "minilm…", which
    could then not be copied into the next command."""
    natural = Measurement.get(console, console.options.update_width(100_000), table).maximum
    if natural <= console.width:
        console.print(table)
        return
    width = console.width
    console.width = natural  # print() caps its own width argument at the console's
    try:
        console.print(table)
    finally:
        console.width = width


def key_values(values: dict, sep: str = ",") -> str:
    """``a=1,b=2`` (tables keep it compact; describe passes ", "), or "-" when empty."""
    return sep.join(f"{k}={v}" for k, v in values.items()) or "-"


def pool_nodes(status: dict) -> str:
    """A pool's nodes: ``ready/total`` where its nodes are known one by one (a sim cluster), else the count."""
    if "readyNodes" in status:
        return f"{status['readyNodes']}/{status['nodes']}"
    return str(status.get("nodes", "-"))


def age(since: float | None, now: float | None = None) -> str:
    if not since:
        return "-"
    seconds = int((now or time.time()) - since)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def phase(text: str) -> str:
    style = _PHASE_STYLE.get(text)
    return f"[{style}]{text}[/{style}]" if style else text


def structured(items: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(items[0] if len(items) == 1 else {"items": items}, indent=2)
    docs = items if items else []
    return yaml.safe_dump_all(docs, sort_keys=False) if docs else ""


def _resources(spec: dict) -> str:
    limits = (spec.get("resources") or {}).get("limits") or {}
    return key_values(limits) if limits else "cpu"


def services_table(items: list[dict], replicas: list[dict], wide: bool) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    columns = ["NAMESPACE", "NAME", "MODEL", "READY", "STATUS", "DEVICES", "AGE"]
    if wide:
        columns += [
            "RESTARTS",
            "RUNTIME",
            "RESOURCES",
            "ENDPOINT",
            "PENDING",
            "NODES",
            "CLUSTERS",
            "LAST EVENT",
        ]
    for c in columns:
        table.add_column(c, no_wrap=c != "LAST EVENT")
    for item in items:
        meta, spec, status = item["metadata"], item["spec"], item.get("status") or {}
        key = f"{meta.get('namespace', 'default')}/{meta['name']}"
        own = [r for r in replicas if r["service"] == key and r["phase"] != "Draining"]
        devices = ",".join(sorted({r["device"] for r in own if r["device"]})) or "-"
        row = [
            meta.get("namespace", "default"),
            meta["name"],
            spec["model"]["uri"],
            f"{status.get('readyReplicas', 0)}/{status.get('replicas', spec.get('replicas', 1))}",
            phase(status.get("phase", "-")),
            devices,
            age(meta.get("creationTimestamp")),
        ]
        if wide:
            runtime = spec.get("runtime") or {}
            events = status.get("events") or []
            row += [
                str(sum(r["restarts"] for r in own)),
                f"{runtime.get('dtype', 'auto')}/{runtime.get('maxBatchTokens', '-')}tok",
                _resources(spec),
                status.get("endpoint", "-"),
                str(status.get("pendingReplicas", sum(1 for r in own if r["phase"] == "Pending"))),
                _nodes(own),
                cluster_counts(status.get("clusters") or []),
                events[-1]["message"] if events else "-",
            ]
        table.add_row(*row)
    return table


def cluster_counts(clusters: list[dict]) -> str:
    """Ready/asked replicas per cluster of a service with spec.placement: `here=2/2,cloud=1/2`."""
    return ",".join(f"{c['name']}={c['readyReplicas']}/{c['replicas']}" for c in clusters) or "-"


def placement_text(placement: dict) -> str:
    """`fill over on-prem, cloud, then clusters with region=eu`."""
    names = ", ".join(placement.get("clusters") or [])
    labels = key_values(((placement.get("clusterSelector") or {}).get("matchLabels")) or {})
    where = " then ".join(part for part in (names, f"clusters with {labels}" if labels else "") if part)
    return f"{placement.get('policy', 'spread')} over {where}"


def service_clusters_table(clusters: list[dict]) -> Table:
    """Each cluster of a service with spec.placement: its share, ready replicas, and why it has none."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    for c in ("NAME", "BACKEND", "REPLICAS", "READY", "HEALTH", "REASON"):
        table.add_column(c, no_wrap=c != "REASON")
    for c in clusters:
        table.add_row(
            c["name"],
            c.get("backend", "-"),
            str(c["replicas"]),
            str(c["readyReplicas"]),
            # healthy, suspect or unavailable (kgpu.multicluster.health); an unregistered one: unavailable
            c.get("health") or ("healthy" if c.get("available") else "unavailable"),
            c.get("reason", ""),
        )
    return table


def _nodes(replicas: list[dict]) -> str:
    """Nodes holding the replicas, with how many each: `h100-0=8,h100-1=4`."""
    counts: dict[str, int] = {}
    for r in replicas:
        if r["node"] and r["phase"] != "Pending":
            counts[r["node"]] = counts.get(r["node"], 0) + 1
    return ",".join(f"{node}={n}" for node, n in sorted(counts.items())) or "-"


def replicas_table(items: list[dict], wide: bool) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    columns = ["NAME", "SERVICE", "STATUS", "DEVICE", "RESTARTS", "AGE"]
    if wide:
        columns += ["NODE", "PID", "URL", "MESSAGE"]
    for c in columns:
        table.add_column(c, no_wrap=c != "MESSAGE")
    for r in items:
        row = [
            r["name"],
            r["service"],
            phase(r["phase"]),
            r["device"] or "-",
            str(r["restarts"]),
            age(r["started_at"]),
        ]
        if wide:
            row += [r["node"] or "-", str(r["pid"] or "-"), r["url"] or "-", r["message"] or ""]
        table.add_row(*row)
    return table


def nodes_table(items: list[dict], wide: bool) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    columns = [
        "NAME",
        "STATUS",
        "BACKEND",
        "POOL",
        "GPUS",
        "GPU MODEL",
        "GPU MEMORY",
        "CPUS",
        "MEMORY",
        "REPLICAS",
    ]
    if wide:
        columns += ["DRIVER", "MIG", "ALLOCATED", "NOTE"]
    for c in columns:
        table.add_column(c, no_wrap=c != "NOTE")
    for n in items:
        gpus = n.get("gpus") or []
        models = ",".join(sorted({g.get("catalog_model") or g.get("name") for g in gpus})) or "-"
        memory = ",".join(f"{g['memory_used_mib']}/{g['memory_total_mib']}Mi" for g in gpus) or "-"
        pool = f"{n['namespace']}/{n['pool']}" if n.get("pool") else "-"
        row = [
            n["hostname"],
            n.get("status", "Ready"),
            n.get("backend", "local"),
            pool,
            str(len(gpus)),
            models,
            memory,
            str(n["cpu_count"]),
            f"{n['memory_mib'] / 1024:.0f}Gi",
            str(n.get("replicas", 0)),
        ]
        if wide:
            mig = (
                ",".join(
                    str(len(g.get("mig_devices") or [])) if g.get("mig_enabled") else "off" for g in gpus
                )
                or "-"
            )
            allocated = key_values(n.get("allocated") or {})
            row += [n.get("driver_version") or "-", mig, allocated, n.get("note") or ""]
        table.add_row(*row)
    return table


def _gpu_resource(resources: dict) -> tuple[str, int] | None:
    """The GPU entry of a resource map (nvidia.com/gpu, amd.com/gpu, a MIG profile...): name, count."""
    for name, value in resources.items():
        if name not in ("cpu", "memory") and isinstance(value, int):
            return name, value
    return None


def nodepools_table(items: list[dict], wide: bool) -> Table:
    """Is the pool at the size it should be, and how full are its GPUs."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    columns = ["NAMESPACE", "NAME", "CLUSTER", "FLAVOR", "GPUS/NODE", "NODES", "MIN", "MAX", "SHARING", "AGE"]
    if wide:
        columns += ["GPUS ALLOCATED", "MIG CONFIG", "NODE LIST"]
    for c in columns:
        table.add_column(c, no_wrap=c != "NODE LIST")
    for item in items:
        meta, spec, status = item["metadata"], item["spec"], item.get("status") or {}
        flavor = spec["flavor"]
        gpus = f"{flavor.get('gpuCount', 0)}x {flavor['gpuModel']}" if flavor.get("gpuModel") else "0"
        row = [
            meta.get("namespace", "default"),
            meta["name"],
            (meta.get("annotations") or {}).get(CLUSTER_ANNOTATION, "-"),
            flavor["name"],
            gpus,
            pool_nodes(status),
            str(spec.get("minNodes", 0)),
            str(spec.get("maxNodes", 1)),
            (spec.get("sharing") or {}).get("mode", "exclusive"),
            age(meta.get("creationTimestamp")),
        ]
        if wide:
            node_list = status.get("nodeList") or []
            total = _gpu_resource(status.get("allocatable") or {})
            used = sum((_gpu_resource(n.get("allocated") or {}) or ("", 0))[1] for n in node_list)
            row += [
                f"{used}/{total[1]} {total[0]}" if total and node_list else "-",
                status.get("migConfigState", "-"),
                ",".join(f"{n['name']}={n['status']}" for n in node_list) or "-",
            ]
        table.add_row(*row)
    return table


def clusters_table(items: list[dict], pools: list[dict], wide: bool) -> Table:
    """Where each cluster is and which pools run on it."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    columns = ["NAMESPACE", "NAME", "BACKEND", "STATUS", "CONTEXT", "POOLS", "AGE"]
    if wide:
        columns += ["VERSION", "KUBECONFIG", "AUTOSCALER"]
    for c in columns:
        table.add_column(c, no_wrap=c != "AUTOSCALER")
    for item in items:
        meta, spec = item["metadata"], item.get("spec") or {}
        namespace = meta.get("namespace", "default")
        own = sorted(
            p["metadata"]["name"]
            for p in pools
            if p["metadata"].get("namespace", "default") == namespace
            and (p["metadata"].get("annotations") or {}).get(CLUSTER_ANNOTATION) == meta["name"]
        )
        row = [
            namespace,
            meta["name"],
            spec.get("backend", "local"),
            phase((item.get("status") or {}).get("phase", "-")),
            spec.get("kubeContext") or "-",
            ",".join(own) or "-",
            age(meta.get("creationTimestamp")),
        ]
        if wide:
            flags = spec.get("autoscaler") or {}
            row += [
                spec.get("version") or "-",
                spec.get("kubeconfig") or "-",
                key_values(flags),
            ]
        table.add_row(*row)
    return table
