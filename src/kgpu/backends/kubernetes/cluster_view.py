"""Kubernetes nodes and pods as the ``scheduling`` framework sees them, and back (for trace replays).

A node's GPUs come from what the device plugin advertises in ``status.allocatable``: whole GPUs
(``nvidia.com/gpu``: exclusive), the renamed shared resource (``nvidia.com/gpu.shared``:
time-slicing or MPS, replicas per GPU from GFD's ``nvidia.com/gpu.replicas`` label, else the
device-plugin config the node's ``nvidia.com/device-plugin.config`` label selects, else shared
count ÷ GPU count), or MIG devices (``nvidia.com/mig-<profile>``, mixed strategy). The GPU model
is kgpu's pool label, else GFD's product label mapped through the catalog.

A pod's request is its containers' CPU and memory (the larger of the sum and any init
container, plus overhead, as kube-scheduler counts them) and one GPU form: whole GPUs, one shared
replica, one MIG device, or a share of one GPU in milli-GPU (annotation ``kgpu.dev/gpu-milli``,
which only kgpu's scheduler honours, as the FGD paper's scheduler does with its own annotation).
Allowed GPU models come from a required node-affinity term on ``kgpu.dev/gpu-model``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import yaml

from kgpu.api.quantity import QuantityError, parse_quantity
from kgpu.backends.kubernetes.labels import DEVICE_PLUGIN_CONFIG_LABEL, GFD_PRODUCT_LABEL, GPU_MODEL_LABEL
from kgpu.gpu.catalog import GPUModel, get_model, mig_profile_of_resource, model_for_product_name
from kgpu.scheduling.requests import MILLI, PodRequest
from kgpu.scheduling.snapshot import NodeSpec, Placement

GPU_COUNT_LABEL = "nvidia.com/gpu.count"
GPU_REPLICAS_LABEL = "nvidia.com/gpu.replicas"
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"  # MiB, from GFD
GPU_MILLI_ANNOTATION = "kgpu.dev/gpu-milli"
PLACEMENT_ANNOTATION = "kgpu.dev/placement"
WHOLE_GPU_RESOURCES = (
    "nvidia.com/gpu",
    "amd.com/gpu",
    "gpu.intel.com/i915",
    "gpu.intel.com/xe",
    "habana.ai/gaudi",
)
SHARED_SUFFIX = ".shared"
_MIB = Decimal(2**20)


def _int(value: Any) -> int:
    try:
        return int(parse_quantity(value)) if value is not None else 0
    except QuantityError:
        return 0


def cpu_milli(value: Any) -> int:
    try:
        return int(parse_quantity(value) * 1000) if value is not None else 0
    except QuantityError:
        return 0


def memory_mib(value: Any) -> int:
    try:
        return int(parse_quantity(value) / _MIB) if value is not None else 0
    except QuantityError:
        return 0


# ------------------------------------------------------------------ nodes


@dataclass
class NodeFacts:
    """One node: the framework's NodeSpec and what only the Kubernetes filters look at."""

    spec: NodeSpec
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, Any]] = field(default_factory=list)
    schedulable: bool = True  # Ready and not cordoned
    not_ready: bool = False
    max_pods: int | None = None
    extended: dict[str, int] = field(default_factory=dict)  # counted resources (MIG devices, replicas)


def _gpu_model(labels: dict[str, str], gpu_present: bool) -> tuple[str | None, GPUModel | None]:
    """(model name for the NodeSpec, model itself when the catalog lacks it)."""
    named = labels.get(GPU_MODEL_LABEL)
    if named:
        try:
            get_model(named)
            return named, None
        except KeyError:
            pass
    product = labels.get(GFD_PRODUCT_LABEL)
    if product:
        model = model_for_product_name(product)
        if model is not None:
            return model.name, None
    if not gpu_present:
        return None, None
    name = product or named or "unknown-gpu"
    memory = _int(labels.get(GPU_MEMORY_LABEL)) // 1024
    return name, GPUModel(
        name=name,
        vendor="nvidia",
        memory_gib=memory,
        nvml_names=(name,),
        resource_name="nvidia.com/gpu",
        memory_known=memory > 0,
    )


def _ready(node: dict[str, Any]) -> bool:
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


def node_facts(node: dict[str, Any], replicas_by_config: dict[str, int] | None = None) -> NodeFacts:
    meta = node.get("metadata") or {}
    labels = dict(meta.get("labels") or {})
    spec = node.get("spec") or {}
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    whole = {k: _int(v) for k, v in allocatable.items() if k in WHOLE_GPU_RESOURCES and _int(v) > 0}
    shared = {k: _int(v) for k, v in allocatable.items() if k.endswith(SHARED_SUFFIX) and _int(v) > 0}
    mig = {k: _int(v) for k, v in allocatable.items() if mig_profile_of_resource(k) and _int(v) > 0}
    labelled_count = _int(labels.get(GPU_COUNT_LABEL))
    model_name, model_spec = _gpu_model(labels, bool(whole or shared or mig))
    sharing, count, replicas = "exclusive", 0, 0
    if mig:
        sharing, count = "mig", labelled_count or 1
    elif shared:
        total = sum(shared.values())
        count = labelled_count or 1
        config_replicas = (replicas_by_config or {}).get(labels.get(DEVICE_PLUGIN_CONFIG_LABEL, ""), 0)
        replicas = _int(labels.get(GPU_REPLICAS_LABEL)) or config_replicas or max(1, total // count)
        if replicas >= 2:
            sharing = "time-slicing"
        else:
            count = total  # one replica per GPU is a whole GPU
    elif whole:
        count = sum(whole.values())
    if not count:
        model_name, model_spec = None, None
    node_spec = NodeSpec(
        name=meta.get("name", ""),
        cpu_milli=cpu_milli(allocatable.get("cpu")),
        memory_mib=memory_mib(allocatable.get("memory")),
        gpu_count=count,
        gpu_model=model_name,
        sharing=sharing,
        time_slice_replicas=replicas if sharing == "time-slicing" else 0,
        labels=labels,
        model_spec=model_spec,
    )
    ready = _ready(node)
    return NodeFacts(
        spec=node_spec,
        labels=labels,
        taints=list(spec.get("taints") or []),
        schedulable=ready and not spec.get("unschedulable"),
        not_ready=not ready,
        max_pods=_int(allocatable["pods"]) if "pods" in allocatable else None,
        extended={**mig, **shared},
    )


def replicas_from_device_plugin_config(data: dict[str, str]) -> dict[str, int]:
    """Config name -> replicas per GPU, from the NVIDIA device plugin's ConfigMap (one key per config)."""
    out: dict[str, int] = {}
    for name, text in (data or {}).items():
        try:
            config = yaml.safe_load(text) or {}
        except yaml.YAMLError:
            continue
        sharing = config.get("sharing") or {} if isinstance(config, dict) else {}
        for mode in ("timeSlicing", "mps"):
            for resource in (sharing.get(mode) or {}).get("resources") or []:
                if int(resource.get("replicas") or 0) >= 2:
                    out[name] = int(resource["replicas"])
    return out


# ------------------------------------------------------------------ pods


def _resources(container: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    resources = container.get("resources") or {}
    limits = resources.get("limits") or {}
    requests = {**limits, **(resources.get("requests") or {})}  # a request defaults to its limit
    return requests, limits


def _cpu_memory(pod_spec: dict[str, Any]) -> tuple[int, int]:
    cpu = memory = 0
    for container in pod_spec.get("containers") or []:
        requests, _ = _resources(container)
        cpu += cpu_milli(requests.get("cpu"))
        memory += memory_mib(requests.get("memory"))
    for container in pod_spec.get("initContainers") or []:
        requests, _ = _resources(container)
        cpu = max(cpu, cpu_milli(requests.get("cpu")))
        memory = max(memory, memory_mib(requests.get("memory")))
    overhead = pod_spec.get("overhead") or {}
    return cpu + cpu_milli(overhead.get("cpu")), memory + memory_mib(overhead.get("memory"))


def gpu_models_of(pod_spec: dict[str, Any]) -> tuple[str, ...]:
    """Models a required node-affinity term on kgpu.dev/gpu-model allows (terms are ORed)."""
    affinity = ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    models: list[str] = []
    for term in affinity.get("nodeSelectorTerms") or []:
        for expression in term.get("matchExpressions") or []:
            if expression.get("key") == GPU_MODEL_LABEL and expression.get("operator") == "In":
                models += [v for v in expression.get("values") or [] if v not in models]
    selected = (pod_spec.get("nodeSelector") or {}).get(GPU_MODEL_LABEL)
    if selected and selected not in models:
        models.append(selected)
    return tuple(models)


def gpu_resource_of(pod_spec: dict[str, Any]) -> tuple[str, int] | None:
    """The pod's GPU resource and count (summed over containers), or None."""
    found: dict[str, int] = {}
    for container in pod_spec.get("containers") or []:
        _, limits = _resources(container)
        for key, value in limits.items():
            if key in WHOLE_GPU_RESOURCES or key.endswith(SHARED_SUFFIX) or mig_profile_of_resource(key):
                found[key] = found.get(key, 0) + _int(value)
    if not found:
        return None
    key = sorted(found)[0]
    return key, found[key]


def pod_request(pod: dict[str, Any]) -> PodRequest:
    """What the pod asks of the framework; ValueError names what cannot be placed."""
    spec = pod.get("spec") or {}
    cpu, memory = _cpu_memory(spec)
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    gpu = gpu_resource_of(spec)
    models = gpu_models_of(spec)
    if gpu is None:
        share = annotations.get(GPU_MILLI_ANNOTATION)
        if share is None:
            return PodRequest(cpu, memory)
        if not share.isdigit() or not 1 <= int(share) <= MILLI:
            raise ValueError(
                f"annotation {GPU_MILLI_ANNOTATION}: must be an integer in 1..{MILLI}, got {share!r}"
            )
        return PodRequest(cpu, memory, gpu_count=1, gpu_milli=int(share), gpu_models=models)
    resource, count = gpu
    profile = mig_profile_of_resource(resource)
    if profile:
        return PodRequest(cpu, memory, mig_profile=profile, gpu_models=models)
    if resource.endswith(SHARED_SUFFIX):
        return PodRequest(cpu, memory, time_slice=True, gpu_models=models)
    return PodRequest(cpu, memory, gpu_count=count, gpu_milli=MILLI, gpu_models=models)


def gpu_resource_name(request: PodRequest) -> str:
    """The resource a request's GPU part is counted in (for "Insufficient ..." reasons)."""
    if request.kind == "mig":
        return f"nvidia.com/mig-{request.mig_profile}"
    if request.kind == "time-slice":
        return "nvidia.com/gpu.shared"
    if request.kind in ("share", "memory-share"):
        return GPU_MILLI_ANNOTATION
    return "nvidia.com/gpu"


def placement_annotation(placement: Placement) -> str:
    return json.dumps(placement.to_dict(), sort_keys=True, separators=(",", ":"))


def placement_from_annotation(text: str, node: int, request: PodRequest) -> Placement | None:
    """The placement kgpu wrote on a pod when it bound it (None when absent or unreadable)."""
    try:
        data = json.loads(text)
        return Placement(
            node=node,
            node_name=str(data["node"]),
            kind=str(data["kind"]),
            gpus=tuple(int(g) for g in data.get("gpus") or ()),
            milli_per_gpu=int(data.get("milli_per_gpu") or 0),
            cpu_milli=request.cpu_milli,
            memory_mib=request.memory_mib,
            mig_profile=data.get("profile"),
            mig_start=int(data.get("start") or 0),
            mig_size=int(data.get("size") or 0),
        )
    except (ValueError, KeyError, TypeError):
        return None


# ------------------------------------------------------------------ replays: framework inputs as objects


def _mib(value: int) -> str:
    return f"{value}Mi"


def node_object(spec: NodeSpec, max_pods: int = 1000) -> dict[str, Any]:
    """A Ready node advertising ``spec``'s CPU, memory and GPUs as the device plugin would."""
    allocatable: dict[str, str] = {
        "cpu": f"{spec.cpu_milli}m",
        "memory": _mib(spec.memory_mib),
        "pods": str(max_pods),
    }
    labels = dict(spec.labels)
    if spec.gpu_count:
        labels[GPU_MODEL_LABEL] = spec.gpu_model or ""
        labels[GPU_COUNT_LABEL] = str(spec.gpu_count)
        if spec.sharing == "time-slicing":
            labels[GPU_REPLICAS_LABEL] = str(spec.time_slice_replicas)
            allocatable["nvidia.com/gpu.shared"] = str(spec.gpu_count * spec.time_slice_replicas)
        elif spec.sharing == "exclusive":
            allocatable["nvidia.com/gpu"] = str(spec.gpu_count)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": spec.name, "labels": labels},
        "spec": {},
        "status": {
            "capacity": dict(allocatable),
            "allocatable": allocatable,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        },
    }


def pod_object(
    request: PodRequest, name: str, namespace: str = "default", scheduler_name: str = "kgpu"
) -> dict[str, Any]:
    """A pod asking for ``request`` (the inverse of :func:`pod_request`)."""
    requests: dict[str, str] = {}
    if request.cpu_milli:
        requests["cpu"] = f"{request.cpu_milli}m"
    if request.memory_mib:
        requests["memory"] = _mib(request.memory_mib)
    limits: dict[str, str] = {}
    annotations: dict[str, str] = {}
    kind = request.kind
    if kind == "whole":
        limits["nvidia.com/gpu"] = str(request.gpu_count)
    elif kind == "share":
        annotations[GPU_MILLI_ANNOTATION] = str(request.gpu_milli)
    elif kind == "time-slice":
        limits["nvidia.com/gpu.shared"] = "1"
    elif kind == "mig":
        limits[f"nvidia.com/mig-{request.mig_profile}"] = "1"
    elif kind == "memory-share":
        raise ValueError("a memory share has no pod form; give it in milli-GPU")
    resources: dict[str, Any] = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    spec: dict[str, Any] = {
        "schedulerName": scheduler_name,
        "containers": [{"name": "main", "image": "registry.example/replay:1", "resources": resources}],
    }
    if request.gpu_models:
        term = {
            "matchExpressions": [
                {"key": GPU_MODEL_LABEL, "operator": "In", "values": list(request.gpu_models)}
            ]
        }
        spec["affinity"] = {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}
        }
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": {"phase": "Pending"}}
