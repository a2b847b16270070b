"""InferenceService status from its Deployment and pods, with the scheduler's reason for Pending pods."""

from __future__ import annotations

from typing import Any

from kgpu.api.models import InferenceService
from kgpu.backends.kubernetes.labels import SERVICE_LABEL


def _unschedulable_message(pod: dict[str, Any], events: list[dict[str, Any]]) -> str | None:
    """The scheduler's message for a Pending pod: its PodScheduled condition, else its FailedScheduling event."""
    status = pod.get("status") or {}
    if status.get("phase") != "Pending":
        return None
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            if condition.get("message"):
                return condition["message"]
            break
    else:
        return None  # scheduled (or not yet looked at); pulling images or starting, not a capacity problem
    name = (pod.get("metadata") or {}).get("name")
    failed = [
        e
        for e in events
        if e.get("reason") == "FailedScheduling" and (e.get("involvedObject") or {}).get("name") == name
    ]
    if failed:
        latest = max(failed, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        return latest.get("message") or "Unschedulable"
    return "Unschedulable"


def _condition(kind: str, ok: bool, reason: str, message: str, now: str) -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": now,
    }


def service_status(
    isvc: InferenceService,
    desired: int,
    deployment: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    events: list[dict[str, Any]],
    now: str,
    previous: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The status kgpu writes: replica counts, phase, the scale selector, and conditions.

    ``lastTransitionTime`` only moves when a condition's status changes, as Kubernetes conventions ask.
    """
    dep_status = (deployment or {}).get("status") or {}
    ready = int(dep_status.get("readyReplicas") or 0)
    current = int(dep_status.get("replicas") or 0)
    gpu = isvc.gpu_request()
    gpu_text = f"{gpu[1]}x {gpu[0]}" if gpu else "none"
    pending = [(p, m) for p in pods if (m := _unschedulable_message(p, events)) is not None]
    gpu_short = gpu is not None and any(f"Insufficient {gpu[0]}" in m for _, m in pending)

    conditions = []
    if pending:
        _pod, message = pending[0]
        reason = "InsufficientGPU" if gpu_short else "Unschedulable"
        names = ", ".join(sorted(p["metadata"]["name"] for p, _ in pending))
        conditions.append(
            _condition(
                "PodsScheduled", False, reason, f"{len(pending)} pod(s) Pending ({names}): {message}", now
            )
        )
    else:
        conditions.append(_condition("PodsScheduled", True, "Scheduled", "every replica has a node", now))
    is_ready = ready >= desired
    conditions.append(
        _condition(
            "Ready",
            is_ready,
            "ReplicasReady" if is_ready else "ReplicasNotReady",
            f"{ready}/{desired} replicas ready",
            now,
        )
    )
    previous_conditions = {c.get("type"): c for c in (previous or {}).get("conditions") or []}
    for condition in conditions:
        before = previous_conditions.get(condition["type"])
        if before and before.get("status") == condition["status"] and before.get("lastTransitionTime"):
            condition["lastTransitionTime"] = before["lastTransitionTime"]

    if desired == 0:
        phase = "ScaledToZero"
    elif is_ready:
        phase = "Ready"
    elif pending:
        phase = "Pending"
    else:
        phase = "Progressing"
    status = {
        "phase": phase,
        "replicas": current,
        "readyReplicas": ready,
        "desiredReplicas": desired,
        "selector": f"{SERVICE_LABEL}={isvc.metadata.name}",
        "gpu": gpu_text,
        "message": conditions[0]["message"] if pending else conditions[1]["message"],
        "conditions": conditions,
    }
    return status
