"""GPU placement: a snapshot of nodes and GPUs, a kube-scheduler-style framework, and policies."""

from __future__ import annotations

from kgpu.scheduling.framework import Framework, Placement
from kgpu.scheduling.policies import POLICIES, make_framework
from kgpu.scheduling.requests import PodRequest
from kgpu.scheduling.snapshot import ClusterSnapshot, NodeSpec

__all__ = [
    "POLICIES",
    "ClusterSnapshot",
    "Framework",
    "NodeSpec",
    "Placement",
    "PodRequest",
    "make_framework",
]
