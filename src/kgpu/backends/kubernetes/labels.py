"""Label keys kgpu writes and reads on Kubernetes objects, and GPU node label values per catalog model."""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

import yaml

from kgpu.gpu.catalog import get_model

MANAGED_BY = {"app.kubernetes.io/managed-by": "kgpu"}
SERVICE_LABEL = "kgpu.dev/service"
POOL_LABEL = "kgpu.dev/pool"
GPU_MODEL_LABEL = "kgpu.dev/gpu-model"

# GPU Feature Discovery and the NVIDIA GPU Operator.
GFD_PRODUCT_LABEL = "nvidia.com/gpu.product"
DEVICE_PLUGIN_CONFIG_LABEL = "nvidia.com/device-plugin.config"
MIG_CONFIG_LABEL = "nvidia.com/mig.config"
MIG_CONFIG_STATE_LABEL = "nvidia.com/mig.config.state"

GKE_ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
KARPENTER_GPU_NAME_LABEL = "karpenter.k8s.aws/instance-gpu-name"

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@lru_cache(maxsize=1)
def _provider_values() -> dict[str, dict[str, list[str]]]:
    text = resources.files(__package__).joinpath("provider_gpu_labels.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def gfd_product_values(model_name: str) -> list[str]:
    """GFD's nvidia.com/gpu.product values for a catalog model: NVML names with blanks as dashes."""
    model = get_model(model_name)
    if model.vendor != "nvidia":
        return []  # GFD labels NVIDIA GPUs only
    values = []
    for name in model.nvml_names:
        value = re.sub(r"\s+", "-", name.strip())
        if len(value) <= 63 and _LABEL_VALUE.match(value) and value not in values:
            values.append(value)
    return values


def provider_values(label_key: str, model_name: str) -> list[str]:
    return list(_provider_values().get(label_key, {}).get(get_model(model_name).name, []))


def provider_label_keys() -> list[str]:
    return list(_provider_values())


def service_labels(name: str) -> dict[str, str]:
    """Labels on every object of one InferenceService; the selector is the service label alone."""
    return {
        "app.kubernetes.io/name": "kgpu-replica",
        "app.kubernetes.io/instance": name,
        **MANAGED_BY,
        SERVICE_LABEL: name,
    }
