"""The Kubernetes-only filters of the kgpu scheduler: what kube-scheduler checks besides resources.

Node readiness and cordons, ``nodeSelector``, required node affinity, taints and tolerations, the
node's pod limit, and counted extended resources (MIG devices, shared replicas) are one filter
plugin of the ``scheduling`` framework, so placement runs the same framework and policy as the
embedded platform with these rules added. Each rule also says why a node failed, in the words
kube-scheduler uses, for the FailedScheduling event.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kgpu.backends.kubernetes.cluster_view import NodeFacts, gpu_resource_of
from kgpu.scheduling.context import RequestContext

NOT_READY_TAINT = "node.kubernetes.io/not-ready"
AFFINITY_REASON = "node(s) didn't match Pod's node affinity/selector"
UNSCHEDULABLE_REASON = "node(s) were unschedulable"
TOO_MANY_PODS = "Too many pods"


def _expression_matches(expression: dict[str, Any], labels: dict[str, str]) -> bool:
    key, op = expression.get("key", ""), expression.get("operator", "")
    values = expression.get("values") or []
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in ("Gt", "Lt") and key in labels and values:
        try:
            have, want = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return have > want if op == "Gt" else have < want
    return False


def affinity_matches(pod_spec: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in (pod_spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return False
    required = ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if not required:
        return True
    return any(
        all(_expression_matches(e, labels) for e in term.get("matchExpressions") or [])
        for term in required.get("nodeSelectorTerms") or []
    )


def _tolerates(toleration: dict[str, Any], taint: dict[str, Any]) -> bool:
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    if toleration.get("operator") == "Exists":
        return not toleration.get("key") or toleration["key"] == taint.get("key")
    return toleration.get("key") == taint.get("key") and (toleration.get("value") or "") == (
        taint.get("value") or ""
    )


def untolerated_taint(pod_spec: dict[str, Any], taints: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    tolerations = pod_spec.get("tolerations") or []
    for taint in taints:
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if not any(_tolerates(t, taint) for t in tolerations):
            return taint
    return None


@dataclass
class PodConstraints:
    """The parts of a pod spec the Kubernetes filters read."""

    spec: dict[str, Any]
    counted: tuple[str, int] | None  # a counted extended resource and how many

    @classmethod
    def of(cls, pod: dict[str, Any]) -> PodConstraints:
        spec = pod.get("spec") or {}
        gpu = gpu_resource_of(spec)
        counted = gpu if gpu and (gpu[0].endswith(".shared") or "/mig-" in gpu[0]) else None
        return cls(spec, counted)

    @property
    def key(self) -> str:
        spec = self.spec
        return json.dumps(
            [spec.get("nodeSelector"), spec.get("affinity"), spec.get("tolerations")], sort_keys=True
        )


class NodeConstraints:
    """Filter plugin: readiness, cordon, selector and affinity, taints, pod count, counted resources.

    The scheduler sets :attr:`pod` before each cycle (the framework passes only the request).
    Static masks (labels and taints) are cached per constraint set until the nodes change.
    """

    name = "NodeConstraints"

    def __init__(self, nodes: Sequence[NodeFacts]) -> None:
        self.nodes = list(nodes)
        n = len(self.nodes)
        self.schedulable = np.array([f.schedulable for f in self.nodes], dtype=bool)
        self.max_pods = np.array([f.max_pods if f.max_pods is not None else 1 << 30 for f in self.nodes])
        self.pods = np.zeros(n, dtype=np.int64)  # pods accounted on each node
        self.extended_used: list[dict[str, int]] = [{} for _ in range(n)]
        self._static: dict[str, np.ndarray] = {}
        self.pod: PodConstraints | None = None

    def account(self, node: int, constraints: PodConstraints, sign: int) -> None:
        self.pods[node] += sign
        if constraints.counted:
            resource, count = constraints.counted
            used = self.extended_used[node]
            used[resource] = used.get(resource, 0) + sign * count

    def _static_mask(self, pod: PodConstraints) -> np.ndarray:
        key = pod.key
        mask = self._static.get(key)
        if mask is None:
            mask = np.array(
                [
                    affinity_matches(pod.spec, f.labels) and untolerated_taint(pod.spec, f.taints) is None
                    for f in self.nodes
                ],
                dtype=bool,
            )
            self._static[key] = mask
        return mask

    def _counted_mask(self, pod: PodConstraints) -> np.ndarray:
        if pod.counted is None:
            return np.ones(len(self.nodes), dtype=bool)
        resource, count = pod.counted
        return np.array(
            [
                f.extended.get(resource, 0) - used.get(resource, 0) >= count
                for f, used in zip(self.nodes, self.extended_used, strict=True)
            ],
            dtype=bool,
        )

    def filter(self, ctx: RequestContext) -> np.ndarray:
        pod = self.pod or PodConstraints({}, None)
        return (
            self.schedulable & (self.pods < self.max_pods) & self._static_mask(pod) & self._counted_mask(pod)
        )

    def reason(self, node: int) -> str | None:
        """Why this node fails the pod, in kube-scheduler's words (None: it passes)."""
        pod = self.pod or PodConstraints({}, None)
        facts = self.nodes[node]
        if facts.not_ready:
            return f"node(s) had untolerated taint {{{NOT_READY_TAINT}: }}"
        if not facts.schedulable:
            return UNSCHEDULABLE_REASON
        if not affinity_matches(pod.spec, facts.labels):
            return AFFINITY_REASON
        taint = untolerated_taint(pod.spec, facts.taints)
        if taint is not None:
            return f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value') or ''}}}"
        if self.pods[node] >= self.max_pods[node]:
            return TOO_MANY_PODS
        if pod.counted and not self._counted_mask(pod)[node]:
            return f"Insufficient {pod.counted[0]}"
        return None
