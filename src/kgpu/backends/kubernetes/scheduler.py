"""The kgpu scheduler for clusters: a secondary scheduler (``schedulerName: kgpu``) with kgpu's placement.

It keeps a snapshot of the cluster from watches of nodes and pods (GPU capacity as the device
plugin advertises it, see :mod:`cluster_view`), takes its pods one at a time in queue order
(priority, then creation), places each with the same ``scheduling`` framework and policy as the
embedded platform (plus the Kubernetes rules in :mod:`node_constraints`), and binds it through
the Binding API, writing where on the node it went as the ``kgpu.dev/placement`` annotation (the
Binding's annotations land on the pod). As kube-scheduler does, it counts the pod on the node
as soon as it decides ("assumes" it), so the next pod sees it before the watch confirms.

A pod that fits nowhere gets a ``FailedScheduling`` event and its ``PodScheduled=False``
condition, both with kube-scheduler's message ("0/100 nodes are available: 3 Insufficient
nvidia.com/gpu, ..."), and waits until something frees capacity (a pod leaves, a node comes or
changes) or five minutes pass. A bind the API server refuses is undone: a 409 means another
scheduler bound the pod first (the watch brings where), a 404 that the pod is gone, anything else
re-queues the pod with a backoff. Pods another scheduler placed are counted wherever they run.

The fragmentation-aware policies learn the workload's typical pods from the pods this scheduler
sees (pending and running), relearned when new shapes appear.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

import numpy as np

from kgpu.backends.kubernetes.cluster_view import (
    PLACEMENT_ANNOTATION,
    gpu_resource_name,
    node_facts,
    placement_annotation,
    placement_from_annotation,
    pod_request,
    replicas_from_device_plugin_config,
)
from kgpu.backends.kubernetes.informer import Informer, raw_call, start
from kgpu.backends.kubernetes.node_constraints import AFFINITY_REASON, NodeConstraints, PodConstraints
from kgpu.backends.kubernetes.workload import SCHEDULER_NAME
from kgpu.scheduling.framework import Framework
from kgpu.scheduling.policies import make_framework
from kgpu.scheduling.requests import PodRequest
from kgpu.scheduling.snapshot import ClusterSnapshot, Placement

log = logging.getLogger("kgpu.scheduler")

UNSCHEDULABLE_FLUSH_S = 300.0  # kube-scheduler's podMaxInUnschedulablePodsDuration
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 10.0)  # kube-scheduler's initial 1 s doubling to 10 s
RELEARN_S = 30.0
TERMINAL = ("Succeeded", "Failed")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _creation(pod: dict[str, Any]) -> str:
    return (pod.get("metadata") or {}).get("creationTimestamp") or ""


def _priority(pod: dict[str, Any]) -> int:
    return int((pod.get("spec") or {}).get("priority") or 0)


@dataclass
class Accounted:
    """A pod counted on a node: bound (seen with spec.nodeName) or assumed (our bind in flight)."""

    node_name: str
    request: PodRequest
    constraints: PodConstraints
    placement: Placement
    assumed: bool = False


@dataclass
class Decision:
    uid: str
    namespace: str
    name: str
    placement: Placement | None
    message: str = ""


class KgpuScheduler:
    def __init__(
        self,
        core: Any,
        scheduler_name: str = SCHEDULER_NAME,
        policy: str = "kgpu",
        device_plugin_configmap: tuple[str, str] | None = None,
        stop: threading.Event | None = None,
        identity: str | None = None,
        relearn_s: float = RELEARN_S,
    ) -> None:
        self.core = core
        self.scheduler_name = scheduler_name
        self.policy = policy
        self.device_plugin_configmap = device_plugin_configmap
        self.stop = stop or threading.Event()
        self.identity = identity or f"{scheduler_name}-{uuid.uuid4().hex[:8]}"
        self.relearn_s = relearn_s
        self.lock = threading.Condition(threading.RLock())
        self.nodes: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, dict[str, Any]] = {}  # uid -> pod as last seen
        self.accounted: dict[str, Accounted] = {}
        self.replicas_by_config: dict[str, int] = {}
        self._heap: list[tuple[int, str, int, str]] = []
        self._queued: set[str] = set()
        self._seq = itertools.count()
        self.unschedulable: dict[str, float] = {}  # uid -> monotonic time it was parked
        self.backoff: dict[str, tuple[float, int]] = {}  # uid -> (retry at, attempts)
        self._dirty = True
        self._learned: set[tuple] = set()
        self._learned_at = -1e9
        self.snapshot: ClusterSnapshot | None = None
        self.framework: Framework | None = None
        self.constraints: NodeConstraints | None = None
        self._index: dict[str, int] = {}
        self._events: queue.Queue[tuple[str, tuple]] = queue.Queue()
        self._reported: dict[str, tuple[str, str, int]] = {}  # uid -> (event name, message, count)
        self.informers: list[Informer] = []
        self.stats: Counter[str] = Counter()

    # ------------------------------------------------------------ watches

    def _ours(self, pod: dict[str, Any]) -> bool:
        return (pod.get("spec") or {}).get("schedulerName") == self.scheduler_name

    def _pending(self, pod: dict[str, Any]) -> bool:
        spec, meta = pod.get("spec") or {}, pod.get("metadata") or {}
        return (
            not spec.get("nodeName")
            and not meta.get("deletionTimestamp")
            and (pod.get("status") or {}).get("phase", "Pending") == "Pending"
        )

    def on_nodes_listed(self, items: list[dict[str, Any]]) -> None:
        with self.lock:
            self.nodes = {n["metadata"]["name"]: n for n in items}
            self._nodes_changed()

    def on_node(self, kind: str, node: dict[str, Any]) -> None:
        name = node["metadata"]["name"]
        with self.lock:
            before = self.nodes.get(name)
            if kind == "DELETED":
                self.nodes.pop(name, None)
            else:
                self.nodes[name] = node
            if before is None or kind == "DELETED" or _node_signature(before) != _node_signature(node):
                self._nodes_changed()

    def on_pods_listed(self, items: list[dict[str, Any]]) -> None:
        with self.lock:
            assumed = {uid: a for uid, a in self.accounted.items() if a.assumed}
            self.pods = {p["metadata"]["uid"]: p for p in items}
            self.accounted = {uid: a for uid, a in assumed.items() if uid in self.pods}
            self._heap.clear()
            self._queued.clear()
            for pod in sorted(items, key=lambda p: (_creation(p), p["metadata"].get("name", ""))):
                self._consider(pod)
            self._dirty = True
            self.lock.notify_all()

    def on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self.lock:
            if kind == "DELETED" or (pod.get("status") or {}).get("phase") in TERMINAL:
                if kind == "DELETED":
                    self.pods.pop(uid, None)
                else:
                    self.pods[uid] = pod
                self._reported.pop(uid, None)
                if self._release(uid):
                    self._capacity_freed()
                return
            self.pods[uid] = pod
            node_name = (pod.get("spec") or {}).get("nodeName")
            held = self.accounted.get(uid)
            if node_name:
                if held is not None and held.node_name == node_name:
                    held.assumed = False  # our bind, confirmed
                    return
                if held is not None:  # bound elsewhere than we assumed (another scheduler won)
                    self._release(uid)
                self._account_bound(uid, pod)
                return
            self._consider(pod)
            self.lock.notify_all()

    def on_device_plugin_config(self, _kind: str, configmap: dict[str, Any]) -> None:
        with self.lock:
            replicas = replicas_from_device_plugin_config(configmap.get("data") or {})
            if replicas != self.replicas_by_config:
                self.replicas_by_config = replicas
                self._nodes_changed()

    def _nodes_changed(self) -> None:
        self._dirty = True  # the snapshot is rebuilt before the next decision
        self._capacity_freed()

    def _capacity_freed(self) -> None:
        """Nodes came or changed, or a pod left: parked pods may fit now."""
        for uid in list(self.unschedulable):
            self._requeue(uid)
        self.lock.notify_all()

    def _consider(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        if (
            self._ours(pod)
            and self._pending(pod)
            and uid not in self._queued
            and uid not in self.accounted
            and uid not in self.unschedulable
            and uid not in self.backoff
        ):
            self._push(pod)

    def _push(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        heapq.heappush(self._heap, (-_priority(pod), _creation(pod), next(self._seq), uid))
        self._queued.add(uid)

    def _requeue(self, uid: str) -> None:
        self.unschedulable.pop(uid, None)
        self.backoff.pop(uid, None)
        pod = self.pods.get(uid)
        if pod is not None:
            self._consider(pod)

    # ------------------------------------------------------------ snapshot

    def _rebuild(self) -> None:
        """A fresh snapshot of every node, every counted pod reserved on it, and the policy's framework."""
        facts = [node_facts(self.nodes[name], self.replicas_by_config) for name in sorted(self.nodes)]
        self.stats["rebuilds"] += 1
        self._dirty = False
        if not facts:
            self.snapshot = self.framework = self.constraints = None
            return
        workload = self._workload()
        self.snapshot = ClusterSnapshot([f.spec for f in facts])
        self._index = {f.spec.name: i for i, f in enumerate(facts)}
        self.constraints = NodeConstraints(facts)
        try:
            self.framework = make_framework(self.policy, self.snapshot, workload)
        except ValueError:
            # No pod yet that typical pods can be learnt from (none at all, or only time slices and
            # MIG devices, which fragmentation does not measure): learn from a CPU-only pod instead.
            self.framework = make_framework(self.policy, self.snapshot, [*workload, PodRequest()])
        self.framework.filters.insert(0, self.constraints)
        self._learned = {r.shape for r in workload}
        self._learned_at = time.monotonic()
        previous, self.accounted = self.accounted, {}
        for uid, held in previous.items():
            node = self._index.get(held.node_name)
            if node is None:
                continue
            if all(g < self.snapshot.gpu_count[node] for g in held.placement.gpus):
                self._reserve(uid, replace(held, placement=replace(held.placement, node=node)))
        for uid, pod in self.pods.items():
            bound = (pod.get("spec") or {}).get("nodeName")
            if uid not in self.accounted and bound and (pod.get("status") or {}).get("phase") not in TERMINAL:
                self._account_bound(uid, pod)

    def _workload(self) -> list[PodRequest]:
        """The requests of the pods this scheduler places, pending or running: its typical pods."""
        out = []
        for pod in self.pods.values():
            if self._ours(pod) and (pod.get("status") or {}).get("phase") not in TERMINAL:
                try:
                    out.append(pod_request(pod))
                except ValueError:
                    continue
        return out

    def _reserve(self, uid: str, held: Accounted) -> None:
        assert self.framework is not None and self.constraints is not None
        self.framework.reserve(held.placement, held.request)
        self.constraints.account(held.placement.node, held.constraints, +1)
        self.accounted[uid] = held

    def _release(self, uid: str) -> bool:
        held = self.accounted.pop(uid, None)
        if held is None or self.framework is None or self.constraints is None:
            return held is not None
        self.framework.unreserve(held.placement, held.request)
        self.constraints.account(held.placement.node, held.constraints, -1)
        return True

    def _account_bound(self, uid: str, pod: dict[str, Any]) -> None:
        """Count a pod bound by anyone on its node (where kgpu put it, else where it fits best)."""
        if self._dirty or self.framework is None:
            self._dirty = True
            return  # the rebuild counts it
        node_name = pod["spec"]["nodeName"]
        node = self._index.get(node_name)
        if node is None:
            return
        try:
            request = pod_request(pod)
        except ValueError:
            request = PodRequest()
        annotation = ((pod.get("metadata") or {}).get("annotations") or {}).get(PLACEMENT_ANNOTATION)
        placement = placement_from_annotation(annotation, node, request) if annotation else None
        if placement is None:
            placement = self.framework.placement_on(self.framework.context(request), node)
        if placement is None:  # overcommitted by someone else: count its CPU and memory at least
            placement = Placement(
                node=node,
                node_name=node_name,
                kind="none",
                cpu_milli=request.cpu_milli,
                memory_mib=request.memory_mib,
            )
        self._reserve(uid, Accounted(node_name, request, PodConstraints.of(pod), placement))

    # ------------------------------------------------------------ scheduling

    def next_pod(self, timeout_s: float) -> dict[str, Any] | None:
        """The next pod to place (waiting up to ``timeout_s``), with parked pods released on time."""
        with self.lock:
            deadline = time.monotonic() + timeout_s
            while not self.stop.is_set():
                now = time.monotonic()
                for uid, (at, _n) in list(self.backoff.items()):
                    if at <= now:
                        self._requeue(uid)
                for uid, since in list(self.unschedulable.items()):
                    if now - since >= UNSCHEDULABLE_FLUSH_S:
                        self._requeue(uid)
                while self._heap:
                    *_, uid = heapq.heappop(self._heap)
                    self._queued.discard(uid)
                    pod = self.pods.get(uid)
                    if pod is not None and self._pending(pod) and uid not in self.accounted:
                        return pod
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.lock.wait(min(remaining, 0.2))
            return None

    def decide(self, pod: dict[str, Any]) -> Decision:
        """Place one pod in the snapshot (assumed until bound), or say why it fits nowhere."""
        meta = pod["metadata"]
        uid = meta["uid"]
        with self.lock:
            try:
                request = pod_request(pod)
            except ValueError as exc:
                self.unschedulable[uid] = time.monotonic()
                return Decision(uid, meta["namespace"], meta["name"], None, f"invalid request: {exc}")
            if (
                not self._dirty
                and request.shape not in self._learned
                and time.monotonic() - self._learned_at >= self.relearn_s
            ):
                self._dirty = True  # a new kind of pod: learn the typical pods again
            if self._dirty:
                self._rebuild()
            if self.framework is None or self.constraints is None:
                self.unschedulable[uid] = time.monotonic()
                return Decision(uid, meta["namespace"], meta["name"], None, "0/0 nodes are available.")
            constraints = PodConstraints.of(pod)
            self.constraints.pod = constraints
            placement = self.framework.schedule(request)
            if placement is None:
                self.unschedulable[uid] = time.monotonic()
                return Decision(uid, meta["namespace"], meta["name"], None, self.failure_message(request))
            self.constraints.account(placement.node, constraints, +1)
            self.accounted[uid] = Accounted(
                placement.node_name, request, constraints, placement, assumed=True
            )
            return Decision(uid, meta["namespace"], meta["name"], placement)

    def failure_message(self, request: PodRequest) -> str:
        """kube-scheduler's FailedScheduling message: per node the first filter that refused it."""
        assert self.framework is not None and self.constraints is not None and self.snapshot is not None
        ctx = self.framework.context(request)
        masks = {plugin.name: plugin.filter(ctx) for plugin in self.framework.filters}
        s = self.snapshot
        reasons: Counter[str] = Counter()
        for node in range(s.num_nodes):
            why = self.constraints.reason(node)
            if why is not None:
                reasons[why] += 1
                continue
            if not masks["NodeResourcesFit"][node]:
                if s.cpu_left[node] < request.cpu_milli:
                    reasons["Insufficient cpu"] += 1
                if s.memory_left[node] < request.memory_mib:
                    reasons["Insufficient memory"] += 1
            elif not masks.get("GpuModelMatch", np.ones(s.num_nodes, dtype=bool))[node] and s.gpu_count[node]:
                reasons[AFFINITY_REASON] += 1  # GPUs of a model the pod does not allow
            else:
                reasons[f"Insufficient {gpu_resource_name(request)}"] += 1
        text = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
        return f"0/{s.num_nodes} nodes are available: {text}."

    def bind(self, decision: Decision) -> bool:
        """POST the pod's Binding; on refusal undo the assumption (and re-queue unless it is moot)."""
        placement = decision.placement
        assert placement is not None
        if self.stop.is_set():  # leadership lost while deciding: the new leader places the pod
            with self.lock:
                self._release(decision.uid)
            self.stats["not_leading"] += 1
            return False
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {
                "name": decision.name,
                "namespace": decision.namespace,
                "annotations": {PLACEMENT_ANNOTATION: placement_annotation(placement)},
            },
            "target": {"apiVersion": "v1", "kind": "Node", "name": placement.node_name},
        }
        try:
            raw_call(self.core.create_namespaced_pod_binding, decision.name, decision.namespace, body)
        except Exception as exc:  # any failure undoes the assumption
            status = getattr(exc, "status", None)
            with self.lock:
                held = self.accounted.get(decision.uid)
                if held is not None and held.assumed:  # (the watch may have brought the winner's binding)
                    self._release(decision.uid)
                if status == 409:
                    self.stats["bind_conflicts"] += 1  # bound by another scheduler: the watch says where
                elif status == 404:
                    self.stats["bind_gone"] += 1
                else:
                    self.stats["bind_errors"] += 1
                    _, attempts = self.backoff.get(decision.uid, (0.0, 0))
                    delay = BACKOFF_S[min(attempts, len(BACKOFF_S) - 1)]
                    self.backoff[decision.uid] = (time.monotonic() + delay, attempts + 1)
                log.info("bind %s/%s failed (%s): %s", decision.namespace, decision.name, status, exc)
            return False
        self.stats["bound"] += 1
        self._events.put(("scheduled", (decision,)))
        return True

    def schedule_one(self, timeout_s: float = 0.2) -> Decision | None:
        pod = self.next_pod(timeout_s)
        if pod is None:
            return None
        try:
            decision = self.decide(pod)
        except Exception:  # a bug must not stop every other pod from being placed
            log.exception("placing %s/%s failed", pod["metadata"]["namespace"], pod["metadata"]["name"])
            with self.lock:
                self.unschedulable[pod["metadata"]["uid"]] = time.monotonic()
            self.stats["errors"] += 1
            return None
        if decision.placement is None:
            self.stats["unschedulable"] += 1
            self._events.put(("failed", (pod, decision.message)))
        else:
            self.bind(decision)
        return decision

    # ------------------------------------------------------------ events (written off the hot path)

    def write_events(self) -> None:
        while not self.stop.is_set() or not self._events.empty():
            try:
                kind, args = self._events.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                if kind == "failed":
                    self.report_failure(*args)
                else:
                    self.report_scheduled(*args)
            except Exception as exc:  # an event lost is no reason to stop
                log.warning("event not written: %s", exc)
            finally:
                self._events.task_done()

    def _event(
        self, pod_ref: dict[str, Any], reason: str, kind: str, message: str, now: str
    ) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{pod_ref['name']}.{uuid.uuid4().hex[:16]}",
                "namespace": pod_ref["namespace"],
            },
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", **pod_ref},
            "reason": reason,
            "message": message,
            "type": kind,
            "action": "Scheduling",
            "source": {"component": self.scheduler_name},
            "reportingComponent": self.scheduler_name,
            "reportingInstance": self.identity,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }

    def report_scheduled(self, decision: Decision) -> None:
        ref = {"namespace": decision.namespace, "name": decision.name, "uid": decision.uid}
        assert decision.placement is not None
        message = (
            f"Successfully assigned {decision.namespace}/{decision.name} to {decision.placement.node_name}"
        )
        raw_call(
            self.core.create_namespaced_event,
            decision.namespace,
            self._event(ref, "Scheduled", "Normal", message, _now()),
        )

    def report_failure(self, pod: dict[str, Any], message: str) -> None:
        """A FailedScheduling event (repeats counted on one event, as the event recorder does) and the
        pod's PodScheduled=False condition."""
        meta = pod["metadata"]
        uid, namespace, name = meta["uid"], meta["namespace"], meta["name"]
        now = _now()
        previous = self._reported.get(uid)
        if previous is not None and previous[1] == message:
            event_name, _, count = previous
            raw_call(
                self.core.patch_namespaced_event,
                event_name,
                namespace,
                {"count": count + 1, "lastTimestamp": now},
                _content_type="application/merge-patch+json",
            )
            self._reported[uid] = (event_name, message, count + 1)
            return
        ref = {"namespace": namespace, "name": name, "uid": uid}
        event = self._event(ref, "FailedScheduling", "Warning", message, now)
        raw_call(self.core.create_namespaced_event, namespace, event)
        self._reported[uid] = (event["metadata"]["name"], message, 1)
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastProbeTime": None,
            "lastTransitionTime": now,
        }
        raw_call(
            self.core.patch_namespaced_pod_status, name, namespace, {"status": {"conditions": [condition]}}
        )

    # ------------------------------------------------------------ run

    def start_watches(self, watch_timeout_s: int = 300) -> None:
        core = self.core
        self.informers = [
            Informer(core.list_node, self.on_nodes_listed, self.on_node, self.stop, watch_timeout_s),
            Informer(
                core.list_pod_for_all_namespaces, self.on_pods_listed, self.on_pod, self.stop, watch_timeout_s
            ),
        ]
        if self.device_plugin_configmap:
            namespace, name = self.device_plugin_configmap

            def listed(items: list[dict[str, Any]]) -> None:
                for item in items:
                    self.on_device_plugin_config("ADDED", item)

            self.informers.append(
                Informer(
                    core.list_namespaced_config_map,
                    listed,
                    self.on_device_plugin_config,
                    self.stop,
                    watch_timeout_s,
                    namespace=namespace,
                    field_selector=f"metadata.name={name}",
                )
            )
        for informer in self.informers:
            start(informer)

    def wait_synced(self, timeout_s: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout_s
        return all(i.synced.wait(max(0.0, deadline - time.monotonic())) for i in self.informers)

    def run(self, watch_timeout_s: int = 300) -> None:
        """Watch, then place pods until ``stop`` is set."""
        self.start_watches(watch_timeout_s)
        writer = threading.Thread(target=self.write_events, name="kgpu-scheduler-events", daemon=True)
        writer.start()
        while not self.stop.is_set() and not self.wait_synced(1.0):
            pass
        while not self.stop.is_set():
            self.schedule_one()
        for informer in self.informers:
            informer.close()
        writer.join(timeout=5)

    def drain_events(self) -> None:
        """Wait until every queued event is written (tests and benchmarks)."""
        self._events.join()


def _node_signature(node: dict[str, Any]) -> tuple:
    """What about a node placement depends on (heartbeats and images do not count)."""
    meta, spec, status = node.get("metadata") or {}, node.get("spec") or {}, node.get("status") or {}
    ready = [c.get("status") for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    return (
        tuple(sorted((meta.get("labels") or {}).items())),
        repr(spec.get("taints")),
        spec.get("unschedulable"),
        tuple(sorted((status.get("allocatable") or {}).items())),
        tuple(ready),
    )


def build_parser() -> Any:
    import argparse

    from kgpu.backends.kubernetes.nodepool import DEVICE_PLUGIN_CONFIGMAP, GPU_OPERATOR_NAMESPACE
    from kgpu.backends.kubernetes.process import add_cluster_flags
    from kgpu.scheduling.policies import POLICIES

    parser = argparse.ArgumentParser(
        prog="python -m kgpu.backends.kubernetes.scheduler", description="kgpu scheduler"
    )
    parser.add_argument(
        "--scheduler-name", default=SCHEDULER_NAME, help="the schedulerName of the pods it places"
    )
    parser.add_argument("--policy", default="kgpu", choices=sorted(POLICIES))
    parser.add_argument("--gpu-operator-namespace", default=GPU_OPERATOR_NAMESPACE)
    parser.add_argument("--device-plugin-configmap", default=DEVICE_PLUGIN_CONFIGMAP)
    add_cluster_flags(parser, "kgpu-scheduler")
    return parser


def main(argv: Any = None) -> int:
    from kubernetes import client as k8s

    from kgpu.backends.kubernetes.process import connect, run_elected

    args = build_parser().parse_args(argv)
    connect(args)

    def work(stop: threading.Event) -> None:
        KgpuScheduler(
            k8s.CoreV1Api(),
            scheduler_name=args.scheduler_name,
            policy=args.policy,
            device_plugin_configmap=(args.gpu_operator_namespace, args.device_plugin_configmap),
            stop=stop,
        ).run()

    return run_elected(args, work)


if __name__ == "__main__":
    raise SystemExit(main())
