"""The backend registry: which cluster runs a service or pool, and the backend of that cluster's kind.

A project (namespace) with one registered Cluster of backend `kubernetes` (`kgpu cluster add`)
runs its services and pools on that cluster; the annotation `kgpu.dev/cluster: NAME` picks one
Cluster of the project by name (required when the project has several). A service naming a `sim`
Cluster goes to the sim backend (`kgpu.backends.sim`: placed on virtual nodes, no process
started). Everything else runs on the local backend. The reconciler sees one Backend either way.

This is the one module of the control plane that knows the concrete backends: it builds them
(`embedded_registry`) and calls each through `kgpu.backends.base.Backend` only.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from kgpu.api.errors import FieldError
from kgpu.api.io import parse_resource
from kgpu.api.models import CLUSTER_ANNOTATION, Cluster, InferenceService, NodePool
from kgpu.backends.base import Backend, DeviceUse, ReplicaHooks, ReplicaStatus, RouteHooks
from kgpu.backends.kubernetes.cluster import KubernetesBackend
from kgpu.backends.local import LocalBackend
from kgpu.backends.sim import SimBackend, SimNodes, sim_cluster_of, sim_flag_errors
from kgpu.gpu.discovery import NodeInventory

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


def connect_stored(cluster: Cluster, kubeconfigs: Callable[[str, str], str | None]) -> Any:
    """A CustomObjectsApi for a Cluster whose kubeconfig the control plane stores (`kubeconfigSecret`)."""
    from kubernetes import client, config

    spec = cluster.spec
    content = kubeconfigs(cluster.metadata.namespace, spec.kubeconfig_secret or "")
    if content is None:
        raise ValueError(
            f'no stored kubeconfig "{spec.kubeconfig_secret}" in namespace {cluster.metadata.namespace}'
        )
    configuration = client.Configuration()
    config.load_kube_config_from_dict(
        yaml.safe_load(content),
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


# The kinds of Cluster (`spec.backend`), each run by one backend.
LOCAL, KUBERNETES, SIM = "local", "kubernetes", "sim"


class BackendRegistry:
    """The reconciler's one Backend: each service and pool goes to the backend of its cluster's kind."""

    def __init__(
        self,
        backends: dict[str, Backend],
        clusters: Callable[[], list[Cluster]],
        default: Cluster | None = None,
        on_event: Callable[[str, str], None] = lambda key, message: None,
    ) -> None:
        """`backends`: cluster kind -> its backend; `local` is required (what runs on no named cluster)."""
        self.by_kind = backends
        self.local = backends[LOCAL]
        self._read_clusters = clusters
        self.default = default
        self._on_event = on_event
        self._clusters: tuple[float, list[Cluster]] = (float("-inf"), [])
        self._target_errors: dict[str, str] = {}

    async def clusters(self, fresh: bool = False) -> list[Cluster]:
        read_at, clusters = self._clusters
        if fresh or time.monotonic() - read_at > CLUSTER_CACHE_S:
            clusters = await asyncio.to_thread(self._read_clusters)
            self._clusters = (time.monotonic(), clusters)
        return clusters

    async def _target(self, resource: InferenceService | NodePool) -> tuple[bool, Cluster | None]:
        """(resolved, Kubernetes cluster or None); unresolved leaves the resource where it runs now."""
        key = resource.key
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

    async def backend_for(
        self, resource: InferenceService | NodePool
    ) -> tuple[Backend, Cluster | None] | None:
        """The backend and cluster the resource runs on; None while its cluster cannot be resolved."""
        resolved, cluster = await self._target(resource)
        if not resolved:
            return None
        if cluster is not None:
            return self.by_kind[KUBERNETES], cluster
        sim = self.by_kind.get(SIM)
        if sim is not None and (on_sim := sim_cluster_of(resource, await self.clusters())) is not None:
            return sim, on_sim
        return self.local, None

    def _others(self, backend: Backend) -> list[Backend]:
        return [b for b in self.by_kind.values() if b is not backend]

    # ------------------------------------------------------------ Backend

    async def ensure(self, service: InferenceService, replicas: int, cluster: Cluster | None = None) -> None:
        target = await self.backend_for(service)
        if target is None:
            return
        backend, cluster = target
        for other in self._others(backend):  # moved: what ran elsewhere goes
            if other.placed(service.key):
                await other.remove(service.key)
        await backend.ensure(service, replicas, cluster)

    async def remove(self, service_key: str) -> None:
        for backend in self.by_kind.values():
            if backend.placed(service_key):
                await backend.remove(service_key)

    async def sync_all_pools(self, pools: list[NodePool]) -> None:
        """Once per reconcile pass, with every stored pool: each backend gets the pools on its clusters,
        and keeps those whose cluster cannot be resolved now where they are."""
        registered = await self.clusters()
        placed: dict[str, list[tuple[NodePool, Cluster]]] = {kind: [] for kind in self.by_kind}
        unresolved: set[str] = set()
        for pool in pools:
            resolved, cluster = await self._target(pool)
            if not resolved:
                unresolved.add(pool.key)
            elif cluster is not None:
                placed[KUBERNETES].append((pool, cluster))
        for kind, backend in self.by_kind.items():
            own = [c for c in registered if c.spec.backend == kind]
            if kind == KUBERNETES and self.default is not None:
                own.append(self.default)
            await backend.sync_pools(own, placed[kind], unresolved)

    def placed(self, service_key: str) -> bool:
        return any(b.placed(service_key) for b in self.by_kind.values())

    def replicas(self, service_key: str | None = None) -> list[ReplicaStatus]:
        return [r for b in self.by_kind.values() for r in b.replicas(service_key)]

    def services(self) -> list[str]:
        return sorted({key for b in self.by_kind.values() for key in b.services()})

    def service_report(self, service_key: str, desired: int) -> dict | None:
        return self._first(lambda b: b.service_report(service_key, desired))

    def ready_replicas(self, service_key: str) -> int | None:
        return self._first(lambda b: b.ready_replicas(service_key))

    def pool_report(self, pool: NodePool) -> dict | None:
        return self._first(lambda b: b.pool_report(pool))

    def refusal(self, service_key: str) -> str | None:
        return self._first(lambda b: b.refusal(service_key))

    def devices_of(self, replica: str) -> DeviceUse | None:
        return self._first(lambda b: b.devices_of(replica))

    def node_items(self, pools: list[NodePool]) -> list[dict]:
        return [n for b in self.by_kind.values() for n in b.node_items(pools)]

    async def restart_replica(self, service_key: str, replica: str) -> bool:
        for backend in self.by_kind.values():
            if await backend.restart_replica(service_key, replica):
                return True
        return False

    def log_path(self, replica: str) -> Path:
        return self.local.log_path(replica)  # only this machine's replicas write a log here

    def start(self) -> None:
        for backend in self.by_kind.values():
            backend.start()

    async def shutdown(self) -> None:
        for backend in self.by_kind.values():
            await backend.shutdown()

    def _first(self, read: Callable[[Backend], object]):
        for backend in self.by_kind.values():
            if (value := read(backend)) is not None:
                return value
        return None


def embedded_registry(
    *,
    state_dir: Path,
    inventory: NodeInventory,
    replica_hooks: ReplicaHooks,
    route_hooks: RouteHooks,
    store_engine: Any,
    clusters: Callable[[], list[Cluster]],
    pools: Callable[[], list[NodePool]],
    sim_interval_s: float,
    in_cluster: bool,
    cluster_domain: str,
    adopt_orphans: bool,
    on_event: Callable[[str, str], None],
    local_factory: Callable[[Path, NodeInventory, ReplicaHooks], Backend] | None = None,
    kubeconfigs: Callable[[str, str], str | None] | None = None,
) -> BackendRegistry:
    """The embedded platform's backends: this machine, registered Kubernetes clusters, sim clusters.

    `kubeconfigs`: the stored kubeconfigs Clusters name (kgpu.controlplane.kubeconfigs)."""
    local = (local_factory or LocalBackend)(state_dir, inventory, replica_hooks)

    def connect_cluster(cluster: Cluster) -> Any:
        if cluster.spec.kubeconfig_secret is not None and kubeconfigs is not None:
            return connect_stored(cluster, kubeconfigs)
        return connect(cluster)

    kube = KubernetesBackend(
        connect_cluster,
        route_hooks,
        route_in_cluster=in_cluster,
        cluster_domain=cluster_domain,
        adopt_orphans=adopt_orphans,  # a store that started empty may have lost state
    )
    # Virtual nodes of sim clusters' pools (rows in the control plane's database).
    sim = SimBackend(SimNodes(store_engine), clusters, pools, sim_interval_s, on_event=on_event)
    return BackendRegistry(
        {LOCAL: local, SIM: sim, KUBERNETES: kube},
        clusters,
        default=IN_CLUSTER if in_cluster else None,
        on_event=on_event,
    )


# Apply-time checks of the backends' own settings (a sim Cluster's flags).
BACKEND_ADMISSION = [sim_flag_errors]
