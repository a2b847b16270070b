"""InferenceService status from its Deployment and pods, with the scheduler's reason for Pending pods.

Each pod is also reported as a replica (`status.replicaStatuses`), with the phases the local backend
uses: Pending (not placed yet, or its image is being pulled), Starting, Loading (its container runs but has not
passed its startup or readiness probe yet: the server is loading its model), Ready, CrashLoopBackOff,
Terminating. A loading replica's message says for how long, and the kubelet's last probe failure
(its `Unhealthy` event) where there is one, as `kgpu get replicas -o wide` does locally.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kgpu.api.models import InferenceService
from kgpu.backends.kubernetes.labels import SERVICE_LABEL
from kgpu.terminal_text import shown


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


def _seconds_between(start: str | None, end: str) -> float | None:
    """Seconds from one RFC 3339 time (as the API server writes them) to another; None if unreadable."""
    try:
        began = datetime.fromisoformat((start or "").replace("Z", "+00:00"))
        return (datetime.fromisoformat(end.replace("Z", "+00:00")) - began).total_seconds()
    except ValueError:
        return None


def _last_probe_failure(pod_name: str, events: list[dict[str, Any]]) -> str | None:
    """The kubelet's latest `Unhealthy` event for the pod ("Readiness probe failed: ...")."""
    failed = [
        e
        for e in events
        if e.get("reason") == "Unhealthy" and (e.get("involvedObject") or {}).get("name") == pod_name
    ]
    if not failed:
        return None
    latest = max(failed, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    return latest.get("message") or None


def is_pending(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Pending"


def is_loading(pod: dict[str, Any]) -> bool:
    """The pod's containers run but are not all ready: started, and not yet past their probes."""
    status = pod.get("status") or {}
    containers = status.get("containerStatuses") or []
    if status.get("phase") != "Running" or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    running = all("running" in (c.get("state") or {}) for c in containers)
    return bool(containers) and running and not all(c.get("ready") for c in containers)


def replica_status(pod: dict[str, Any], events: list[dict[str, Any]], now: str) -> dict[str, Any]:
    """One pod as a replica: its name, node, phase (as the local backend names them) and message."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    containers = status.get("containerStatuses") or []
    restarts = sum(int(c.get("restartCount") or 0) for c in containers)
    waiting = [(c.get("state") or {}).get("waiting") or {} for c in containers]
    message = ""
    if meta.get("deletionTimestamp"):
        phase = "Terminating"
    elif any(w.get("reason") == "CrashLoopBackOff" for w in waiting):
        phase = "CrashLoopBackOff"
        message = next(w.get("message") or "" for w in waiting if w.get("reason") == "CrashLoopBackOff")
    elif status.get("phase") == "Running" and containers and all(c.get("ready") for c in containers):
        phase = "Ready"
    elif is_loading(pod):
        phase = "Loading"
        started = min(c["state"]["running"].get("startedAt") or "" for c in containers)
        seconds = _seconds_between(started, now)
        message = f"loading for {seconds:.0f}s" if seconds is not None else "loading"
        reason = _last_probe_failure(meta.get("name", ""), events) or next(
            (
                c.get("message")
                for c in status.get("conditions") or []
                if c.get("type") == "ContainersReady" and c.get("message")
            ),
            None,
        )
        if reason:
            message += f": {reason}"
    elif status.get("phase") in ("Pending", None):
        phase = "Pending"
        message = _unschedulable_message(pod, events) or next(
            (w.get("reason") or "" for w in waiting if w.get("reason")), ""
        )
    elif status.get("phase") == "Running":
        phase = "Starting"  # placed and running, its containers not reported yet
    else:
        phase = str(status["phase"])  # Succeeded or Failed: the container exited and will not restart
    return {
        "name": meta.get("name", ""),
        "node": (pod.get("spec") or {}).get("nodeName") or "",
        "phase": phase,
        "restarts": restarts,
        # The kubelet's words can carry the workload's (an exec probe's output): printed by `kgpu describe`.
        "message": shown(message),
    }


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
    replicas = sorted((replica_status(p, events, now) for p in pods), key=lambda r: r["name"])
    loading = [r for r in replicas if r["phase"] == "Loading"]
    ready_message = f"{ready}/{desired} replicas ready"
    if loading and not is_ready:  # what the replicas not ready yet are doing
        ready_message += "; " + "; ".join(f"{r['name']} {r['message']}" for r in loading)
    conditions.append(
        _condition(
            "Ready",
            is_ready,
            "ReplicasReady" if is_ready else ("ReplicasLoading" if loading else "ReplicasNotReady"),
            ready_message,
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
        "replicaStatuses": replicas,
    }
    return status
