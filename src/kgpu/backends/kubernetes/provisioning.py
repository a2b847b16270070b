"""NodePool -> the objects of an existing node autoscaler, so minNodes/maxNodes create and remove nodes.

kgpu has no cloud API of its own. A cluster picks one path (the operator's ``--node-provisioner``):

- ``cluster-api``: a Cluster API ``MachineDeployment`` per pool, with the cluster-autoscaler's
  node-group size annotations (min and max) and its scale-from-zero capacity annotations (CPU,
  memory, GPU type and count, labels, taints), so the autoscaler can create the first node of an
  empty pool. ``replicas`` is left out: the autoscaler owns it (Cluster API defaults it to the
  minimum). The machine and bootstrap templates are the cluster's (one per pool, named from the
  pool by a pattern), since only they know the provider's instance type.
- ``karpenter``: a Karpenter ``NodePool`` (karpenter.sh/v1) per pool, requiring the pool's GPU
  (name and count) through Karpenter's well-known labels and the node class the cluster names,
  with limits of maxNodes times the flavor (GPUs, CPU, memory). Karpenter has no minimum: a pool's
  minNodes is reported as not enforced.

The operator finds a new node by its pool and applies the pool's labels and taints (see
:mod:`nodepool`): Karpenter puts the template's labels (``kgpu.dev/pool`` among them) on its
nodes; Cluster API propagates only labels under ``node.cluster.x-k8s.io/``, so its nodes come with
``node.cluster.x-k8s.io/kgpu-pool``, and the autoscaler's scale-from-zero template carries the
pool's full labels in the capacity annotation.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from kgpu.api.models import NodePool
from kgpu.api.quantity import parse_quantity
from kgpu.backends.kubernetes.labels import MANAGED_BY, POOL_LABEL, provider_values
from kgpu.backends.kubernetes.nodepool import node_config, pool_config_name
from kgpu.gpu.catalog import get_model

PROVIDERS = ("none", "cluster-api", "karpenter")
CAPI_API_VERSION = "cluster.x-k8s.io/v1beta1"
KARPENTER_API_VERSION = "karpenter.sh/v1"
MIN_SIZE = "cluster.x-k8s.io/cluster-api-autoscaler-node-group-min-size"
MAX_SIZE = "cluster.x-k8s.io/cluster-api-autoscaler-node-group-max-size"
CAPACITY = "capacity.cluster-autoscaler.kubernetes.io/"
# Cluster API copies Machine labels under this prefix to the Node (since v1.4): a new node of a
# pool carries this one, which the operator looks for, before it applies kgpu.dev/pool.
CAPI_POOL_NODE_LABEL = "node.cluster.x-k8s.io/kgpu-pool"
KARPENTER_GPU_NAME = "karpenter.k8s.aws/instance-gpu-name"
KARPENTER_GPU_COUNT = "karpenter.k8s.aws/instance-gpu-count"


@dataclass(frozen=True)
class ProvisioningSettings:
    """How this cluster creates nodes (operator flags / Helm values)."""

    provider: str = "none"
    # Cluster API
    cluster_name: str = ""
    namespace: str = "default"
    kubernetes_version: str = ""
    infrastructure_api_version: str = ""
    infrastructure_kind: str = ""
    infrastructure_name: str = "{cluster}-{pool}"  # the provider's machine template of a pool
    bootstrap_api_version: str = "bootstrap.cluster.x-k8s.io/v1beta1"
    bootstrap_kind: str = "KubeadmConfigTemplate"
    bootstrap_name: str = "{cluster}-{pool}"
    # Karpenter
    node_class_group: str = "karpenter.k8s.aws"
    node_class_kind: str = "EC2NodeClass"
    node_class_name: str = "default"
    consolidate_after: str = "10m"

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ValueError(
                f"node provisioner: must be one of {', '.join(PROVIDERS)}, got {self.provider!r}"
            )
        if self.provider == "cluster-api":
            missing = [
                flag
                for flag, value in (
                    ("--capi-cluster", self.cluster_name),
                    ("--capi-infrastructure-kind", self.infrastructure_kind),
                    ("--capi-infrastructure-api-version", self.infrastructure_api_version),
                    ("--capi-kubernetes-version", self.kubernetes_version),
                )
                if not value
            ]
            if missing:
                raise ValueError(f"node provisioner cluster-api: {', '.join(missing)} required")


def resource_name(pool: NodePool) -> str:
    """One cluster-wide name per pool (both kinds live outside the pool's namespace)."""
    return pool_config_name(pool)


def _flavor_capacity(pool: NodePool) -> tuple[Decimal, Decimal]:
    flavor = pool.spec.flavor
    cpu = parse_quantity(flavor.cpu) if flavor.cpu is not None else Decimal(0)
    memory = parse_quantity(flavor.memory) if flavor.memory is not None else Decimal(0)
    return cpu, memory


def _number(value: Decimal) -> str:
    return str(int(value)) if value == value.to_integral_value() else str(value.normalize())


def _gpu_resource(pool: NodePool) -> str | None:
    model = pool.spec.flavor.gpu_model
    return get_model(model).resource_name if model and pool.spec.flavor.gpu_count else None


def _taints_annotation(taints: list[dict[str, str]]) -> str:
    return ",".join(f"{t['key']}={t.get('value', '')}:{t['effect']}" for t in taints)


def render_machine_deployment(pool: NodePool, settings: ProvisioningSettings) -> dict[str, Any]:
    name = resource_name(pool)
    config = node_config(pool)
    cpu, memory = _flavor_capacity(pool)
    annotations = {MIN_SIZE: str(pool.spec.min_nodes), MAX_SIZE: str(pool.spec.max_nodes)}
    if cpu:
        annotations[CAPACITY + "cpu"] = _number(cpu)
    if memory:
        annotations[CAPACITY + "memory"] = f"{_number(memory / 2**20)}Mi"
    gpu = _gpu_resource(pool)
    if gpu is not None:
        annotations[CAPACITY + "gpu-type"] = gpu
        annotations[CAPACITY + "gpu-count"] = str(pool.spec.flavor.gpu_count)
    annotations[CAPACITY + "labels"] = ",".join(f"{k}={v}" for k, v in sorted(config.labels.items()))
    if config.taints:
        annotations[CAPACITY + "taints"] = _taints_annotation(config.taints)
    names = {
        "cluster": settings.cluster_name,
        "pool": pool.metadata.name,
        "namespace": pool.metadata.namespace,
    }
    selector = {"cluster.x-k8s.io/cluster-name": settings.cluster_name, POOL_LABEL: pool.metadata.name}
    machine_labels = {**selector, CAPI_POOL_NODE_LABEL: pool.metadata.name}
    return {
        "apiVersion": CAPI_API_VERSION,
        "kind": "MachineDeployment",
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": {**MANAGED_BY, **selector},
            "annotations": annotations,
        },
        "spec": {
            "clusterName": settings.cluster_name,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": machine_labels},
                "spec": {
                    "clusterName": settings.cluster_name,
                    "version": settings.kubernetes_version,
                    "bootstrap": {
                        "configRef": {
                            "apiVersion": settings.bootstrap_api_version,
                            "kind": settings.bootstrap_kind,
                            "name": settings.bootstrap_name.format(**names),
                        }
                    },
                    "infrastructureRef": {
                        "apiVersion": settings.infrastructure_api_version,
                        "kind": settings.infrastructure_kind,
                        "name": settings.infrastructure_name.format(**names),
                    },
                },
            },
        },
    }


def render_karpenter_node_pool(pool: NodePool, settings: ProvisioningSettings) -> dict[str, Any]:
    config = node_config(pool)
    flavor = pool.spec.flavor
    requirements: list[dict[str, Any]] = []
    if flavor.gpu_model and flavor.gpu_count:
        gpu_names = provider_values(KARPENTER_GPU_NAME, flavor.gpu_model)
        if not gpu_names:
            raise ValueError(
                f"pool {pool.metadata.name}: Karpenter names no instance GPU for {flavor.gpu_model}"
            )
        requirements += [
            {"key": KARPENTER_GPU_NAME, "operator": "In", "values": gpu_names},
            {"key": KARPENTER_GPU_COUNT, "operator": "In", "values": [str(flavor.gpu_count)]},
        ]
    requirements.append({"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]})
    limits: dict[str, str] = {}
    cpu, memory = _flavor_capacity(pool)
    nodes = pool.spec.max_nodes
    if cpu:
        limits["cpu"] = _number(cpu * nodes)
    if memory:
        limits["memory"] = f"{_number(memory * nodes / 2**20)}Mi"
    gpu = _gpu_resource(pool)
    if gpu is not None:
        limits[gpu] = str(flavor.gpu_count * nodes)
    # The device-plugin and MIG config labels come with the node, so its GPUs start as the pool
    # wants them; label domains Karpenter keeps for itself are left to the operator to apply.
    labels = {k: v for k, v in config.labels.items() if not _karpenter_restricted(k)}
    return {
        "apiVersion": KARPENTER_API_VERSION,
        "kind": "NodePool",
        "metadata": {"name": resource_name(pool), "labels": {**MANAGED_BY, POOL_LABEL: pool.metadata.name}},
        "spec": {
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeClassRef": {
                        "group": settings.node_class_group,
                        "kind": settings.node_class_kind,
                        "name": settings.node_class_name,
                    },
                    "requirements": requirements,
                    "taints": [dict(t) for t in config.taints],
                },
            },
            "limits": limits,
            "disruption": {
                "consolidationPolicy": "WhenEmptyOrUnderutilized",
                "consolidateAfter": settings.consolidate_after,
            },
        },
    }


def _karpenter_restricted(key: str) -> bool:
    domain = key.split("/", 1)[0] if "/" in key else ""
    if domain.endswith(("node.kubernetes.io", "node-restriction.kubernetes.io")):
        return False
    return domain.endswith(("kubernetes.io", "k8s.io", "karpenter.sh"))


def render_provisioning(pool: NodePool, settings: ProvisioningSettings) -> dict[str, Any] | None:
    """The autoscaler object of one pool on this cluster, or None when nodes are made another way."""
    if settings.provider == "cluster-api":
        return render_machine_deployment(pool, settings)
    if settings.provider == "karpenter":
        return render_karpenter_node_pool(pool, settings)
    return None


def provisioning_status(pool: NodePool, settings: ProvisioningSettings) -> dict[str, Any]:
    """What the pool's status says about node provisioning (and what this path cannot do)."""
    if settings.provider == "none":
        return {}  # nodes are made outside kgpu (a managed service's own node groups)
    status: dict[str, Any] = {"provisioner": settings.provider, "provisioningObject": resource_name(pool)}
    if settings.provider == "karpenter" and pool.spec.min_nodes:
        status["message"] = (
            f"minNodes {pool.spec.min_nodes} not enforced: Karpenter creates nodes for pending pods only"
        )
    return status
