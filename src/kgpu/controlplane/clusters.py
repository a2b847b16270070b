"""Which cluster runs a service or pool, and the backend that sends each one there.

A project (namespace) with one registered Cluster of backend `kubernetes` (`kgpu cluster add`)
runs its services and pools on that cluster; the annotation `kgpu.dev/cluster: NAME` picks one
Cluster of the project by name (required when the project has several). A service naming a `sim`
Cluster goes to the simulated backend (`kgpu.controlplane.simbackend`: placed on virtual nodes,
no process started). Everything else runs on the local backend. The reconciler sees one Backend
either way.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

from kgpu.api.errors import FieldError
from kgpu.api.io import parse_resource
from kgpu.api.models import CLUSTER_ANNOTATION, Cluster, InferenceService, NodePool
from kgpu.backends.base import Backend, ReplicaStatus
from kgpu.backends.kubernetes.cluster import KubernetesBackend, resource_key
from kgpu.controlplane.simbackend import SimBackend

ANNOTATION_PATH = f"metadata.annotations[{CLUSTER_ANNOTATION}]"
CLUSTER_CACHE_S = 0.5

# The cluster the control plane runs in (the chart's gateway): no kubeconfig, no context.
IN_CLUSTER = Cluster.model_validate(
    {"metadata": {"name": "in-cluster", "namespace": "kube-system"}, "spec": {"backend": "kubernetes"}}
)


class TargetError(ValueError):
    def __init__(self, error: FieldError) -> None:
        super().__init__(f"{error.path}: {error.message}")
        self.error = error


def target_cluster(
    resource: InferenceService | NodePool, clusters: list[Cluster], default: Cluster | None = None
) -> Cluster | None:
    """The Kubernetes cluster the resource runs on, or None for the local backend."""
    namespace = resource.metadata.namespace
    in_project = [c for c in clusters if c.metadata.namespace == namespace]
    named = resource.metadata.annotations.get(CLUSTER_ANNOTATION)
    if named:
        match = next((c for c in in_project if c.metadata.name == named), None)
        if match is None:
            raise TargetError(
                FieldError(
                    ANNOTATION_PATH,
                    f'Not found: "{named}": no Cluster of that name in namespace "{namespace}" '
                    f"(register one with kgpu cluster add)",
                )
            )
        return match if match.spec.backend == "kubernetes" else None
    kube = sorted((c for c in in_project if c.spec.backend == "kubernetes"), key=lambda c: c.metadata.name)
    if len(kube) > 1:
        names = ", ".join(c.metadata.name for c in kube)
        raise TargetError(
            FieldError(
                ANNOTATION_PATH,
                f'Required value: namespace "{namespace}" has several Kubernetes clusters ({names}); '
                "name the one to use",
            )
        )
    return kube[0] if kube else default


def connect(cluster: Cluster) -> Any:
    """A CustomObjectsApi for the cluster, from its kubeconfig and context (in-cluster without either)."""
    from kubernetes import client, config

    configuration = client.Configuration()
    spec = cluster.spec
    if spec.kubeconfig is None and spec.kube_context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(
            config_file=spec.kubeconfig,
            context=spec.kube_context,
            client_configuration=configuration,
            persist_config=False,
        )
    return client.CustomObjectsApi(client.ApiClient(configuration))


def cluster_admission(
    clusters: Callable[[], list[Cluster]],
    local_checks: list[Callable[[object], list[FieldError]]],
    default: Cluster | None = None,
) -> Callable[[object], list[FieldError]]:
    """Apply-time check: the target cluster must resolve; local-only checks (is the model on this
    machine?) apply only to what runs locally (a cluster's runtime image holds its own models)."""

    def check(resource: object) -> list[FieldError]:
        if not isinstance(resource, (InferenceService, NodePool)):
            return []
        try:
            cluster = target_cluster(resource, clusters(), default)
        except TargetError as exc:
            return [exc.error]
        if cluster is not None:
            return []
        return [e for local_check in local_checks for e in local_check(resource)]

    return check


def stored_clusters(store: Any, parse: Callable[[Any], object] | None = None) -> list[Cluster]:
    """Every stored Cluster; `parse` (e.g. ResourceService.parsed) may reuse earlier validations."""
    out = []
    for stored in store.list("Cluster"):
        cluster = parse(stored) if parse is not None else parse_resource(stored.body)
        assert isinstance(cluster, Cluster)
        out.append(cluster)
    return out


class ClusterBackends:
    """The reconciler's one Backend: each service goes to the local backend or to its cluster."""

    def __init__(
        self,
        local: Backend,
        kube: KubernetesBackend,
        clusters: Callable[[], list[Cluster]],
        default: Cluster | None = None,
        on_event: Callable[[str, str], None] = lambda key, message: None,
        sim: SimBackend | None = None,
    ) -> None:
        self.local = local
        self.kube = kube
        self.sim = sim  # services on sim clusters: placed on virtual nodes, never started here
        self._read_clusters = clusters
        self.default = default
        self._on_event = on_event
        self._clusters: tuple[float, list[Cluster]] = (float("-inf"), [])
        self._target_errors: dict[str, str] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.local, name)  # what only the local backend has (its devices, ...)

    async def clusters(self, fresh: bool = False) -> list[Cluster]:
        read_at, clusters = self._clusters
        if fresh or time.monotonic() - read_at > CLUSTER_CACHE_S:
            clusters = await asyncio.to_thread(self._read_clusters)
            self._clusters = (time.monotonic(), clusters)
        return clusters

    async def _target(self, resource: InferenceService | NodePool) -> tuple[bool, Cluster | None]:
        """(resolved, cluster); unresolved leaves the resource where it runs now."""
        key = resource_key(resource)
        try:
            try:
                cluster = target_cluster(resource, await self.clusters(), self.default)
            except TargetError:
                # Maybe created after the cached read (a Cluster applied in the same file as its
                # pools and services): only a fresh read may call it missing.
                cluster = target_cluster(resource, await self.clusters(fresh=True), self.default)
        except TargetError as exc:
            if self._target_errors.get(key) != str(exc):
                self._on_event(key, f"not moved: {exc}")
                self._target_errors[key] = str(exc)
            return False, None
        self._target_errors.pop(key, None)
        return True, cluster

    async def ensure(self, service: InferenceService, replicas: int) -> None:
        resolved, cluster = await self._target(service)
        if not resolved:
            return
        key = resource_key(service)
        if cluster is None:
            if self.kube.placed(key):
                await self.kube.remove(key)
            if self.sim is not None and self.sim.targets(service, await self.clusters()):
                if self.local.replicas(key):
                    await self.local.remove(key)
                await self.sim.ensure(service, replicas)
                return
            if self.sim is not None and self.sim.placed(key):
                await self.sim.remove(key)
            await self.local.ensure(service, replicas)
            return
        if key in self.local.services():
            await self.local.remove(key)
        if self.sim is not None and self.sim.placed(key):
            await self.sim.remove(key)
        await self.kube.ensure_on(cluster, service, replicas)

    async def remove(self, key: str) -> None:
        if self.sim is not None and self.sim.placed(key):
            await self.sim.remove(key)
        on_cluster = self.kube.placed(key)
        if on_cluster:
            await self.kube.remove(key)
        if not on_cluster or key in self.local.services():
            await self.local.remove(key)

    async def sync_pools(self, pools: list[NodePool]) -> None:
        """Once per reconcile pass: pools onto their clusters, and (once per cluster) adopt what this
        control plane created there before a restart so deleted services and pools are deleted there."""
        for cluster in await self.clusters():
            if cluster.spec.backend == "kubernetes":
                await self.kube.adopt(cluster)
        if self.default is not None:
            await self.kube.adopt(self.default)
        wanted = set()
        for pool in pools:
            resolved, cluster = await self._target(pool)
            key = resource_key(pool)
            if not resolved:
                wanted.add(key)
            elif cluster is not None:
                wanted.add(key)
                await self.kube.ensure_pool_on(cluster, pool)
        for key in self.kube.pools():
            if key not in wanted:
                await self.kube.remove_pool(key)

    def service_report(self, key: str, desired: int) -> dict | None:
        if self.sim is not None and (report := self.sim.service_report(key, desired)) is not None:
            return report
        return self.kube.service_report(key, desired)

    def pool_report(self, key: str) -> dict | None:
        return self.kube.pool_report(key)

    def ready_replicas(self, key: str) -> int | None:
        if self.sim is not None and (ready := self.sim.ready_replicas(key)) is not None:
            return ready
        return self.kube.ready_replicas(key)

    def replicas(self, key: str | None = None) -> list[ReplicaStatus]:
        simulated = self.sim.replicas(key) if self.sim is not None else []
        return self.local.replicas(key) + self.kube.replicas(key) + simulated

    def services(self) -> list[str]:
        simulated = self.sim.services() if self.sim is not None else []
        return sorted(set(self.local.services()) | set(self.kube.services()) | set(simulated))

    def log_path(self, replica: str):
        return self.local.log_path(replica)

    async def shutdown(self) -> None:
        await self.local.shutdown()
        await self.kube.shutdown()
        if self.sim is not None:
            await self.sim.shutdown()
