"""The backend registry: which cluster runs a service or pool, and the backend of that cluster's kind.

A project (namespace) with one registered Cluster of backend `kubernetes` (`kgpu cluster add`)
runs its services and pools on that cluster; the annotation `kgpu.dev/cluster: NAME` picks one
Cluster of the project by name (required when the project has several). A service naming a `sim`
Cluster goes to the sim backend (`kgpu.backends.sim`: placed on virtual nodes, no process
started). Everything else runs on the local backend. The reconciler sees one Backend either way.

A service with `spec.placement` runs in several clusters at once: its desired replica count is
split over the clusters it allows (`kgpu.multicluster.placement`, offers from
`kgpu.controlplane.cluster_offers`), and each cluster's backend gets its share. A cluster whose
backend missed a heartbeat (`ClusterHealth`: suspect) gets no share of the split, so replacements
start elsewhere at once, but nothing is asked of it and its replicas stay (held at what it was
asked last) until it is declared unavailable after the grace period, when its share drops to 0; a
cluster's share shrinks only as far as the service's ready replicas elsewhere cover it (make
before break), so replicas moving between clusters drop no request.

This is the one module of the control plane that knows the concrete backends: it builds them
(`embedded_registry`) and calls each through `kgpu.backends.base.Backend` only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
from kgpu.controlplane.cluster_offers import allowed_clusters, cluster_offers
from kgpu.gpu.discovery import GPUDevice, NodeInventory
from kgpu.multicluster.health import ClusterHealth, Transition
from kgpu.multicluster.placement import SUSPECTED, UNAVAILABLE, ClusterSplit, split_replicas

log = logging.getLogger("kgpu.registry")

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
        if isinstance(resource, InferenceService) and resource.spec.placement is not None:
            return placement_admission(resource, clusters(), local_checks)
        try:
            cluster = target_cluster(resource, clusters(), default)
        except TargetError as exc:
            return [exc.error]
        if cluster is not None:
            return []
        return [e for local_check in local_checks for e in local_check(resource)]

    return check


def _pinned(service: InferenceService, cluster: Cluster) -> InferenceService:
    """What a cluster's backend sees of a service split over clusters: the service as if it named this
    one cluster (how a one-cluster service does), so every backend places its share as it places any."""
    pinned = service.model_copy(deep=True)
    pinned.spec.placement = None
    pinned.metadata.annotations[CLUSTER_ANNOTATION] = cluster.metadata.name
    return pinned


def placement_admission(
    service: InferenceService,
    clusters: list[Cluster],
    local_checks: list[Callable[[object], list[FieldError]]],
) -> list[FieldError]:
    """Every cluster `spec.placement.clusters` names exists; local-only checks when one runs here."""
    allowed = allowed_clusters(service, clusters)
    placement = service.spec.placement
    assert placement is not None
    errors = [
        FieldError(
            f"spec.placement.clusters[{placement.clusters.index(name)}]",
            f'Not found: "{name}": {why} (register it with kgpu apply or kgpu cluster add)',
        )
        for name, why in allowed.missing.items()
    ]
    if errors or not any(c.spec.backend == LOCAL for c in allowed.clusters):
        return errors
    return [e for local_check in local_checks for e in local_check(service)]


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
# A cluster not trusted now keeps its backend: a suspect one its share (held), a lost one 0.
UNTRUSTED_REASONS = (UNAVAILABLE, SUSPECTED)


@dataclass
class ServicePlacement:
    """How the last pass split a service with `spec.placement` over its clusters."""

    policy: str
    split: ClusterSplit  # what the policy asked for
    replicas: dict[str, int]  # cluster name -> replicas asked of it now (the split, kept while others start)
    backends: dict[str, str]  # cluster name -> its backend kind, for the clusters given a share
    keys: dict[str, str]  # cluster name -> cluster key ("<namespace>/<name>")
    skipped: dict[str, str] = field(default_factory=dict)  # cluster name -> why it gets no replica

    def cluster_of(self, kind: str) -> str | None:
        """The key of the cluster of backend `kind` this service runs in, or None."""
        return next((self.keys[name] for name, k in self.backends.items() if k == kind), None)


class BackendRegistry:
    """The reconciler's one Backend: each service and pool goes to the backend of its cluster's kind."""

    def __init__(
        self,
        backends: dict[str, Backend],
        clusters: Callable[[], list[Cluster]],
        default: Cluster | None = None,
        on_event: Callable[[str, str], None] = lambda key, message: None,
        gpus: Sequence[GPUDevice] = (),
        health: ClusterHealth | None = None,
    ) -> None:
        """`backends`: cluster kind -> its backend; `local` is required (what runs on no named cluster).
        `gpus`: this machine's (what a `local` cluster offers); `health`: which clusters answer."""
        self.by_kind = backends
        self.local = backends[LOCAL]
        self._read_clusters = clusters
        self.default = default
        self._on_event = on_event
        self._clusters: tuple[float, list[Cluster]] = (float("-inf"), [])
        self._target_errors: dict[str, str] = {}
        self.gpus = list(gpus)
        self.health = health or ClusterHealth()
        self._pools: list[NodePool] = []  # as of the last pass (what clusters' offers are read from)
        self.placements: dict[str, ServicePlacement] = {}  # service key -> its split over clusters
        # Service key -> how many of its desired replicas its autoscaler holds for load not seen yet
        # (`ScalingDecision.speculative`; the platform sets its autoscaler's): the split places them
        # only on capacity at the lowest price (`kgpu.multicluster.placement.place_speculative`).
        self.speculative_replicas: Callable[[str], int] = lambda key: 0

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
        if service.spec.placement is not None:
            await self._ensure_across(service, replicas)
            return
        self.placements.pop(service.key, None)
        target = await self.backend_for(service)
        if target is None:
            return
        backend, cluster = target
        for other in self._others(backend):  # moved: what ran elsewhere goes
            if other.placed(service.key):
                await other.remove(service.key)
        await backend.ensure(service, replicas, cluster)

    async def _ensure_across(self, service: InferenceService, desired: int) -> None:
        """Split `desired` over the service's clusters; each cluster's backend places its share."""
        key = service.key
        placement = service.spec.placement
        assert placement is not None
        allowed = allowed_clusters(service, await self.clusters())
        before = self.placements.get(key)
        offers = cluster_offers(
            service,
            allowed.clusters,
            self._pools,
            self.gpus,
            health=lambda c: self.health.state(c.key),
            current=lambda c: before.replicas.get(c.metadata.name, 0) if before else 0,
        )
        speculative = min(desired, self.speculative_replicas(key))
        split = split_replicas(desired, offers, placement.policy, speculative)
        desired -= split.dropped
        by_name = {c.metadata.name: c for c in allowed.clusters}
        kinds = {
            name: by_name[name].spec.backend
            for name in split.replicas
            # A cluster not trusted keeps its place: a suspect one its share (held), a lost one 0.
            if name not in split.skipped or split.skipped[name] in UNTRUSTED_REASONS
        }
        replicas = self._make_before_break(key, split, kinds, before, desired)
        # Suspect: nothing is asked of it (it may not answer) and its replicas are not deleted yet.
        suspect = {name for name, why in split.skipped.items() if why == SUSPECTED}
        for name in suspect:
            replicas[name] = before.replicas.get(name, 0) if before else 0
        placed = ServicePlacement(
            policy=placement.policy,
            split=split,
            replicas={name: replicas.get(name, 0) for name in split.replicas},
            backends=kinds,
            keys={name: c.key for name, c in by_name.items()},
            skipped={**allowed.missing, **split.skipped},
        )
        self.placements[key] = placed
        self._note_skipped(key, before, placed)
        for kind, backend in self.by_kind.items():
            names = [name for name, k in kinds.items() if k == kind]
            if not names:
                if backend.placed(key):
                    await self._call(key, backend.remove(key))
                continue
            # Nothing is asked of a cluster not trusted (a suspect one may be a blip, a lost one's API
            # may hang until its timeout); a lost one is told its share once it answers again.
            asked = [name for name in names if self.health.trusted(by_name[name].key)]
            if isinstance(backend, KubernetesBackend):  # one custom resource per cluster: several clusters
                chosen = {by_name[name].key for name in names}
                for cluster_key in backend.share_clusters(key):
                    if cluster_key not in chosen:
                        await self._call(key, backend.remove_share(key, cluster_key))
                for name in asked:
                    cluster = by_name[name]
                    share = placed.replicas[name]
                    await self._call(key, backend.ensure_share(cluster, _pinned(service, cluster), share))
                continue
            if not asked:
                continue
            cluster = by_name[asked[0]]
            target = None if kind == LOCAL else cluster
            share = placed.replicas[cluster.metadata.name]
            await self._call(key, backend.ensure(_pinned(service, cluster), share, target))

    async def _call(self, key: str, call: Any) -> None:
        """One cluster's backend call: a cluster that fails must not stop the others getting their share."""
        try:
            await call
        except Exception:
            log.exception("%s: a cluster's backend failed", key)

    def _ready_in(self, kind: str, key: str, cluster_key: str) -> int:
        """Ready replicas of the service in one of its clusters."""
        backend = self.by_kind[kind]
        if isinstance(backend, KubernetesBackend):
            return backend.share_ready(key, cluster_key)
        counted = backend.ready_replicas(key)
        if counted is not None:
            return counted
        return sum(1 for r in backend.replicas(key) if r.phase == "Ready")

    def _serving_in(self, placed: ServicePlacement, name: str, key: str) -> int:
        """Ready replicas in one cluster of the service; none in a suspect or lost cluster (what it said
        last is not known to hold, and the gateway sends nothing there)."""
        kind = placed.backends.get(name)
        if kind is None or not self.health.trusted(placed.keys[name]):
            return 0
        return self._ready_in(kind, key, placed.keys[name])

    def _make_before_break(
        self,
        key: str,
        split: ClusterSplit,
        kinds: dict[str, str],
        before: ServicePlacement | None,
        desired: int,
    ) -> dict[str, int]:
        """The split, except that an available cluster's share shrinks only by its replicas that are
        not ready yet plus the ready replicas the service has beyond `desired`: replicas moving to
        another cluster go once those there serve (a cluster lost serves nothing: it goes at once)."""
        if before is None:
            return dict(split.replicas)
        # Counted only where the last pass found the cluster available too: a cluster back from an
        # outage still reports what it served before it was lost.
        ready = {
            name: self._ready_in(kind, key, before.keys[name])
            for name, kind in kinds.items()
            if name not in split.skipped and name not in before.skipped and before.backends.get(name) == kind
        }
        spare = max(0, sum(ready.values()) - desired)
        out = {}
        for name, target in split.replicas.items():
            now = before.replicas.get(name, 0)
            if target >= now or name in split.skipped:
                out[name] = target
                continue
            starting = max(0, now - ready.get(name, 0))
            cut = min(now - target, starting + spare)
            spare -= max(0, cut - starting)
            out[name] = now - cut
        return out

    def _note_skipped(self, key: str, before: ServicePlacement | None, now: ServicePlacement) -> None:
        """An event when a cluster starts being skipped, and when the clusters holding replicas change (a
        move; not every scaling step, which the autoscaler's events tell)."""
        was = before.skipped if before else {}
        for name, why in now.skipped.items():
            if was.get(name) != why:
                self._on_event(key, f"cluster {name} skipped: {why}")

        def holding(placed: ServicePlacement) -> set[str]:
            return {name for name, n in placed.split.replicas.items() if n}

        if before is None or holding(before) != holding(now) or before.split.unplaced != now.split.unplaced:
            shares = ", ".join(f"{name}={n}" for name, n in now.split.replicas.items())
            unplaced = f"; {now.split.unplaced} fit in no cluster" if now.split.unplaced else ""
            self._on_event(key, f"placement {now.policy}: {shares}{unplaced}")

    async def remove(self, service_key: str) -> None:
        self.placements.pop(service_key, None)
        for backend in self.by_kind.values():
            if backend.placed(service_key):
                await backend.remove(service_key)

    def on_cluster_service(self, service_key: str) -> bool:
        """Whether a Kubernetes cluster runs the service (the gateway sees its Service, not its replicas)."""
        kube = self.by_kind.get(KUBERNETES)
        return kube is not None and kube.placed(service_key)

    def cluster_of(self, service_key: str, kind: str) -> str | None:
        """The key of the cluster of backend `kind` a service with `spec.placement` runs in (else None)."""
        placed = self.placements.get(service_key)
        return None if placed is None else placed.cluster_of(kind)

    async def probe_clusters(self, now: float) -> list[Transition]:
        """One heartbeat of every registered cluster through its backend; the availability changes."""
        transitions = []
        registered = [c for c in await self.clusters(fresh=True) if c.spec.backend in self.by_kind]
        # All at once: a cluster that hangs until its timeout must not delay the others' heartbeats.
        errors = await asyncio.gather(*(self.by_kind[c.spec.backend].probe(c) for c in registered))
        for cluster, error in zip(registered, errors, strict=True):
            if error is None:
                change = self.health.answered(cluster.key, now)
            else:
                change = self.health.missed(cluster.key, now, error)
            if change is not None:
                transitions.append(change)
        for gone in set(self.health.known()) - {c.key for c in registered}:
            self.health.forget(gone)
        return transitions

    async def sync_all_pools(self, pools: list[NodePool]) -> None:
        """Once per reconcile pass, with every stored pool: each backend gets the pools on its clusters,
        and keeps those whose cluster cannot be resolved now where they are."""
        registered = await self.clusters()
        self._pools = pools
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
        placed = self.placements.get(service_key)
        if placed is not None:  # several clusters: each one's own count, summed
            return sum(self._serving_in(placed, name, service_key) for name in placed.backends)
        return self._first(lambda b: b.ready_replicas(service_key))

    def cluster_reports(self, service_key: str) -> list[dict] | None:
        """Per cluster of a service with `spec.placement`: its share, ready replicas, availability, and
        why a cluster gets none (None for a service in one cluster)."""
        placed = self.placements.get(service_key)
        if placed is None:
            return None
        reports = []
        for name in placed.split.replicas:
            kind = placed.backends.get(name)
            report: dict[str, Any] = {
                "name": name,
                "replicas": placed.replicas.get(name, 0),
                "readyReplicas": self._serving_in(placed, name, service_key),
                "available": self.health.available(placed.keys[name]),
                "health": self.health.state(placed.keys[name]),
            }
            if kind is not None:
                report["backend"] = kind
            if name in placed.skipped:
                report["reason"] = placed.skipped[name]
            reports.append(report)
        reports.extend(
            {"name": name, "replicas": 0, "readyReplicas": 0, "available": False, "reason": why}
            for name, why in placed.skipped.items()
            if name not in placed.split.replicas
        )
        return reports

    def pool_report(self, pool: NodePool) -> dict | None:
        return self._first(lambda b: b.pool_report(pool))

    def refusal(self, service_key: str) -> str | None:
        """Why no request can be served: only when every backend holding the service refuses (a
        service on a sim cluster and on this machine is served here)."""
        placed = self.placements.get(service_key)
        if placed is not None and set(placed.backends.values()) - {SIM}:
            return None  # a cluster that serves may get replicas as the service scales
        holding = [b for b in self.by_kind.values() if b.placed(service_key)]
        refusals = [b.refusal(service_key) for b in holding]
        if not refusals or any(r is None for r in refusals):
            return None
        return refusals[0]

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
    health: ClusterHealth | None = None,
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
        gpus=inventory.gpus,
        health=health,
    )


# Apply-time checks of the backends' own settings (a sim Cluster's flags).
BACKEND_ADMISSION = [sim_flag_errors]
