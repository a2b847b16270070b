"""NodePool -> node labels and taints, the NVIDIA device plugin's sharing config, and mig-parted's config.

The NVIDIA GPU Operator reads one device-plugin ConfigMap (ClusterPolicy
``devicePlugin.config.name``) whose keys are config names; a node picks one with the label
``nvidia.com/device-plugin.config``. mig-manager reads one mig-parted ConfigMap
(``migManager.config.name``, key ``config.yaml``) whose ``mig-configs`` a node picks with
``nvidia.com/mig.config`` and reports progress in ``nvidia.com/mig.config.state``. kgpu writes
one config per pool into each and the selecting label onto the pool's nodes; it never changes
MIG mode itself.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import yaml

from kgpu.api.models import NodePool
from kgpu.backends.kubernetes.labels import (
    DEVICE_PLUGIN_CONFIG_LABEL,
    GPU_MODEL_LABEL,
    MANAGED_BY,
    MIG_CONFIG_LABEL,
    MIG_CONFIG_STATE_LABEL,
    POOL_LABEL,
)
from kgpu.gpu.catalog import VENDOR_DOMAINS, get_model, is_gpu_resource

DEVICE_PLUGIN_CONFIGMAP = "kgpu-device-plugin-config"
MIG_PARTED_CONFIGMAP = "kgpu-mig-parted-config"
GPU_OPERATOR_NAMESPACE = "gpu-operator"
MIG_DISABLED_CONFIG = "all-disabled"  # mig-manager's default config name
DEFAULT_DEVICE_PLUGIN_CONFIG = "default"
MIG_STATES = ("pending", "rebooting", "success", "failed")
# On a node: the taints kgpu set there (JSON), so taints it no longer wants can be told from others'.
APPLIED_TAINTS_ANNOTATION = "kgpu.dev/applied-taints"


def pool_config_name(pool: NodePool) -> str:
    """The key of this pool's config in both ConfigMaps (label values: at most 63 characters)."""
    return f"kgpu-{pool.metadata.namespace}-{pool.metadata.name}"[:63].rstrip("-.")


@dataclass
class NodeConfig:
    """What every node of a pool carries: its labels and taints."""

    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)


def gpu_taint(pool: NodePool) -> dict[str, str] | None:
    """Keep non-GPU pods off GPU nodes: ``nvidia.com/gpu:NoSchedule`` (the resource name for other vendors)."""
    model_name = pool.spec.flavor.gpu_model
    if model_name is None:
        return None
    model = get_model(model_name)
    key = f"{VENDOR_DOMAINS['nvidia']}/gpu" if model.vendor == "nvidia" else model.resource_name
    return {"key": key, "effect": "NoSchedule"}


def node_config(pool: NodePool) -> NodeConfig:
    spec = pool.spec
    labels = {**spec.labels, POOL_LABEL: pool.metadata.name}
    if spec.flavor.gpu_model is not None:
        labels[GPU_MODEL_LABEL] = spec.flavor.gpu_model
    if spec.sharing.mode in ("time-slicing", "mps"):
        labels[DEVICE_PLUGIN_CONFIG_LABEL] = pool_config_name(pool)
    if spec.sharing.mode == "mig":
        labels[MIG_CONFIG_LABEL] = pool_config_name(pool)
    elif spec.flavor.gpu_model is not None and get_model(spec.flavor.gpu_model).supports_mig:
        # A pool that does not use MIG asks mig-manager for whole GPUs, so a pool switched from MIG
        # to another mode gets its GPUs back rather than keeping the old layout.
        labels[MIG_CONFIG_LABEL] = MIG_DISABLED_CONFIG
    taints = []
    for taint in spec.taints:
        entry = {"key": taint.key, "effect": taint.effect}
        if taint.value:
            entry["value"] = taint.value
        taints.append(entry)
    gpu = gpu_taint(pool)
    if gpu is not None and all(t["key"] != gpu["key"] for t in taints):
        taints.append(gpu)
    return NodeConfig(labels=labels, taints=taints)


def shared_resource_name(pool: NodePool) -> str:
    """What a time-sliced/MPS GPU is advertised as with renameByDefault (``nvidia.com/gpu.shared``)."""
    whole = get_model(pool.spec.flavor.gpu_model or "").resource_name
    shared = f"{whole}.shared"
    if not is_gpu_resource(shared):
        raise ValueError(f"the GPU catalog has no shared resource {shared}")
    return shared


def device_plugin_config(pool: NodePool) -> dict[str, Any]:
    """The device plugin config of one time-slicing or MPS pool."""
    mode = pool.spec.sharing.mode
    if mode not in ("time-slicing", "mps"):
        raise ValueError(
            f"pool {pool.metadata.name}: sharing mode {mode} has no device plugin sharing config"
        )
    whole = get_model(pool.spec.flavor.gpu_model or "").resource_name
    sharing_key = "timeSlicing" if mode == "time-slicing" else "mps"
    shared_resource_name(pool)  # the renamed resource must be one kgpu services can ask for
    return {
        "version": "v1",
        "flags": {"migStrategy": "none"},
        "sharing": {
            sharing_key: {
                "renameByDefault": True,
                # A pod asking for two slices of one GPU gets no more compute; refuse it instead.
                "failRequestsGreaterThanOne": True,
                "resources": [{"name": whole, "replicas": pool.spec.sharing.replicas}],
            }
        },
    }


def mig_parted_config(pool: NodePool) -> list[dict[str, Any]]:
    layout = pool.spec.sharing.mig_layout or {}
    return [{"devices": "all", "mig-enabled": True, "mig-devices": dict(layout)}]


def _configmap(name: str, namespace: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {**MANAGED_BY}},
        "data": data,
    }


def _dump(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False)


def render_device_plugin_configmap(
    pools: list[NodePool], namespace: str = GPU_OPERATOR_NAMESPACE
) -> dict[str, Any]:
    """One ConfigMap, one key per sharing pool, plus the default (exclusive GPUs, MIG mixed strategy)."""
    data = {DEFAULT_DEVICE_PLUGIN_CONFIG: _dump({"version": "v1", "flags": {"migStrategy": "mixed"}})}
    for pool in sorted(pools, key=pool_config_name):
        if pool.spec.sharing.mode in ("time-slicing", "mps"):
            data[pool_config_name(pool)] = _dump(device_plugin_config(pool))
    return _configmap(DEVICE_PLUGIN_CONFIGMAP, namespace, data)


def render_mig_parted_configmap(
    pools: list[NodePool], namespace: str = GPU_OPERATOR_NAMESPACE
) -> dict[str, Any]:
    configs: dict[str, Any] = {MIG_DISABLED_CONFIG: [{"devices": "all", "mig-enabled": False}]}
    for pool in sorted(pools, key=pool_config_name):
        if pool.spec.sharing.mode == "mig":
            configs[pool_config_name(pool)] = mig_parted_config(pool)
    return _configmap(
        MIG_PARTED_CONFIGMAP, namespace, {"config.yaml": _dump({"version": "v1", "mig-configs": configs})}
    )


def node_label_apply(node_name: str, config: NodeConfig) -> dict[str, Any]:
    """The server-side apply body for a node's labels (field manager ``kgpu``).

    The labels kgpu applied before and no longer wants (a pool switched from time-slicing to
    exclusive drops ``nvidia.com/device-plugin.config``) are removed by the API server, because
    kgpu's field manager owns them; labels that others set are not kgpu's and are never touched.
    The annotation records the taints kgpu set, which taints (an atomic list) cannot record.
    """
    taints = sorted(config.taints, key=lambda t: (t["key"], t["effect"]))
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node_name,
            "labels": dict(config.labels),
            "annotations": {APPLIED_TAINTS_ANNOTATION: json.dumps(taints, sort_keys=True)},
        },
    }


def _applied_taints(node: dict[str, Any]) -> set[tuple[str, str]]:
    annotations = (node.get("metadata") or {}).get("annotations") or {}
    try:
        applied = json.loads(annotations.get(APPLIED_TAINTS_ANNOTATION) or "[]")
    except json.JSONDecodeError:
        return set()
    return {(t.get("key", ""), t.get("effect", "")) for t in applied if isinstance(t, dict)}


def node_taints_patch(node: dict[str, Any], config: NodeConfig) -> dict[str, Any] | None:
    """A merge patch giving ``node`` the pool's taints, or None when it has them already.

    ``spec.taints`` is an atomic list: whoever writes it writes all of it, so server-side apply
    would take other controllers' taints. Instead the node's other taints are kept, the taints kgpu
    set before (its annotation) and no longer wants are dropped, and the patch carries the node's
    resourceVersion, so a concurrent change is a 409 and the caller reads the node again.
    """
    meta = node.get("metadata") or {}
    current = (node.get("spec") or {}).get("taints") or []
    wanted = {(t["key"], t["effect"]) for t in config.taints}
    dropped = _applied_taints(node) - wanted
    kept = [t for t in current if (t.get("key"), t.get("effect")) not in wanted | dropped]
    taints = kept + config.taints
    if _taint_set(taints) == _taint_set(current):
        return None
    return {"metadata": {"resourceVersion": meta.get("resourceVersion")}, "spec": {"taints": taints}}


def _taint_set(taints: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(t.get("key", ""), t.get("value", ""), t.get("effect", "")) for t in taints}


def pool_status(pool: NodePool, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """NodePool status from its nodes' labels, including mig-manager's progress for MIG pools."""
    status: dict[str, Any] = {"nodes": len(nodes)}
    if pool.spec.sharing.mode != "mig":
        return status
    states = Counter(
        ((n.get("metadata") or {}).get("labels") or {}).get(MIG_CONFIG_STATE_LABEL, "") for n in nodes
    )
    status["migConfig"] = pool_config_name(pool)
    status["migConfigStates"] = {state or "unknown": count for state, count in sorted(states.items())}
    # The worst state wins: one failed node makes the pool failed, one pending node keeps it pending.
    for state in ("failed", "rebooting", "pending", ""):
        if states.get(state):
            status["migConfigState"] = state or "pending"
            break
    else:
        status["migConfigState"] = "success" if nodes else "pending"
    return status
