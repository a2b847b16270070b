"""The embedded platform: store, backend, reconciler and gateway wired together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kgpu.api.errors import FieldError
from kgpu.api.models import Cluster, InferenceService, object_key
from kgpu.api.runtime_presets import PRESETS
from kgpu.backends.base import Backend, ReplicaHooks, RouteHooks
from kgpu.controlplane.autoscaler import Observation, ReplicaAutoscaler, measured_startup_s, starting_replicas
from kgpu.controlplane.events import EventLog
from kgpu.controlplane.history import MetricsSampler, RingHistory, pool_values, registry_text
from kgpu.controlplane.kubeconfigs import KubeconfigSecrets
from kgpu.controlplane.reconciler import Reconciler
from kgpu.controlplane.registry import (
    BACKEND_ADMISSION,
    IN_CLUSTER,
    LOCAL,
    cluster_admission,
    embedded_registry,
    stored_clusters,
)
from kgpu.controlplane.resources import ResourceService
from kgpu.controlplane.status import StatusView
from kgpu.controlplane.store import Change, ResourceStore, sqlite_url
from kgpu.gateway.metrics import GatewayMetrics
from kgpu.gateway.registry import Endpoint, ReplicaRegistry
from kgpu.gateway.router import Router, RouterSettings
from kgpu.gpu.discovery import NodeInventory, discover
from kgpu.multicluster.health import DEFAULT_GRACE_S, SUSPECT, UNAVAILABLE, ClusterHealth, Transition
from kgpu.serving.model_source import ModelSourceError, locate_model, resolve_model_uri
from kgpu.serving.replica_spec import build_replica_spec, missing_executable, model_location
from kgpu.telemetry.gpu_exporter import DeviceUser, GPUExporter
from kgpu.telemetry.runtime_metrics import RuntimeTarget
from kgpu.telemetry.snapshot import sequences_by_service

log = logging.getLogger("kgpu")


# URI -> monotonic time it was last found loadable. Reading a model's layout from disk was
# the largest cost of an API write; a model found recently is not read again for a while.
_MODEL_FOUND_AT: dict[str, float] = {}
MODEL_CHECK_REUSE_S = 10.0
# How often the server moves SQLite's write-ahead log into the database file, off the event loop.
CHECKPOINT_INTERVAL_S = 2.0


def check_model_available(resource: object) -> list[FieldError]:
    """Refuse at apply time a model that cannot be loaded from this machine."""
    if not isinstance(resource, InferenceService):
        return []
    uri = resource.spec.model.uri
    kgpu_runtime = resource.spec.runtime.kind == "kgpu"
    found_at = _MODEL_FOUND_AT.get(uri)
    if kgpu_runtime and found_at is not None and time.monotonic() - found_at < MODEL_CHECK_REUSE_S:
        return []
    try:
        if kgpu_runtime:
            resolve_model_uri(uri)
        else:  # another server reads it: only where it is, in whatever layout that server reads
            locate_model(uri)
            return []
    except ModelSourceError as exc:
        _MODEL_FOUND_AT.pop(uri, None)
        return [FieldError("spec.model.uri", f'Invalid value: "{uri}": {exc}')]
    _MODEL_FOUND_AT[uri] = time.monotonic()
    return []


def check_runtime_available(resource: object) -> list[FieldError]:
    """Refuse at apply time a runtime this machine cannot run: an image, or a missing executable."""
    if not isinstance(resource, InferenceService) or resource.spec.runtime.kind == "kgpu":
        return []
    runtime = resource.spec.runtime
    if runtime.kind == "image":
        return [
            FieldError("spec.runtime.kind", 'Unsupported value: "image": runs on a Kubernetes cluster only')
        ]
    missing = missing_executable(build_replica_spec(resource, model_path=""))
    if missing is None:
        return []
    field, install = "spec.runtime.command", f"install {missing!r} on this machine"
    if runtime.preset is not None and not runtime.command:
        field, install = "spec.runtime.preset", PRESETS[runtime.preset].install
    return [FieldError(field, f"Invalid value: {missing!r} is not installed on this machine: {install}")]


@dataclass
class PlatformConfig:
    state_dir: Path
    public_url: str = "http://127.0.0.1:8000"
    database_url: str | None = None
    router: RouterSettings = field(default_factory=RouterSettings)
    reconcile_interval_s: float = 0.5
    autoscale_interval_s: float = 1.0
    # Running inside a Kubernetes cluster (the chart's gateway): services run on this cluster by
    # default, and the gateway routes to their Services by cluster DNS name.
    in_cluster: bool = False
    cluster_domain: str = "cluster.local"
    # How often the console's charts get a point (15 minutes of them are kept).
    history_interval_s: float = 2.0
    # Several clusters: how often each registered cluster's backend is asked whether it answers, and
    # how long it may stay silent before it is marked unavailable and its replicas there are deleted
    # (from its first silent heartbeat it is suspect: not routed to, replacements start elsewhere).
    cluster_probe_interval_s: float = 2.0
    cluster_grace_s: float = DEFAULT_GRACE_S


class Platform:
    def __init__(
        self,
        config: PlatformConfig,
        inventory: NodeInventory | None = None,
        backend_factory: Callable[[Path, NodeInventory, ReplicaHooks], Backend] | None = None,
    ) -> None:
        """`backend_factory`: builds the backend of this machine's replicas (default: the local backend)."""
        self.config = config
        self.state_dir = Path(config.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.started_at = time.time()
        self.inventory = inventory or discover()
        self.store = ResourceStore(config.database_url or sqlite_url(self.state_dir))
        default_cluster = IN_CLUSTER if config.in_cluster else None
        self.resources = ResourceService(
            self.store,
            admission=[
                cluster_admission(self._clusters, [self._check_model, self._check_runtime], default_cluster),
                *BACKEND_ADMISSION,
            ],
        )
        self.events = EventLog()
        self.registry = ReplicaRegistry()
        self.metrics = GatewayMetrics()
        self.router = Router(self.registry, self.metrics, config.router)
        self.kubeconfigs = KubeconfigSecrets(self.store.engine)  # what Clusters name by kubeconfigSecret
        self.backend = embedded_registry(
            state_dir=self.state_dir,
            inventory=self.inventory,
            replica_hooks=self._hooks(),
            route_hooks=RouteHooks(
                # A service with spec.placement: its endpoints carry their cluster (health, routing);
                # each stands for its cluster's share (a Service), so a refused connection is the cluster's.
                on_ready=lambda s, e, url, cluster, local: self.registry.add(
                    s,
                    e,
                    url,
                    cluster if s in self.backend.placements else None,
                    local,
                    whole_cluster=s in self.backend.placements,
                ),
                on_gone=self.registry.remove,
            ),
            store_engine=self.store.engine,
            clusters=self._clusters,
            pools=self.resources.pools,
            sim_interval_s=config.autoscale_interval_s,
            in_cluster=config.in_cluster,
            cluster_domain=config.cluster_domain,
            adopt_orphans=self.store.revision() > 0,  # a store that started empty may have lost state
            on_event=self.events.record,
            local_factory=backend_factory,
            kubeconfigs=self.kubeconfigs.get,
            health=ClusterHealth(config.cluster_grace_s),
        )
        self.router.refuse = self.backend.refusal  # e.g. a sim cluster's replicas serve nothing
        self.router.on_replica_gone = self._gateway_lost_a_cluster_endpoint
        self.autoscaler = ReplicaAutoscaler(on_event=self.events.record, on_change=self._kick)
        self.backend.speculative_replicas = self.autoscaler.speculative
        self.reconciler = Reconciler(
            self.resources,
            self.backend,
            config.reconcile_interval_s,
            desired_replicas=self.autoscaler.desired,
            on_service=self._route_settings,
        )
        self.store.add_listener(self._record_change)
        self.reconciler.watch(self.store)
        self.status = StatusView(
            self.backend, self.autoscaler, self.events, self.metrics, config.public_url, self.resources.parsed
        )
        self.router.on_hold = self.autoscaler.wake
        self._autoscale_task: asyncio.Task | None = None
        self._checkpoint_task: asyncio.Task | None = None
        self._probe_task: asyncio.Task | None = None
        self._heartbeat_lock = asyncio.Lock()
        self._extra_heartbeat: asyncio.Task | None = None  # asked for by the gateway (kept referenced)
        self.gpu_exporter = GPUExporter(self.device_users, hostname=self.inventory.hostname)
        self.metrics.registry.register(self.gpu_exporter)
        self.history = RingHistory(interval_s=config.history_interval_s)
        self._history_task: asyncio.Task | None = None
        self._sampler: MetricsSampler | None = None

    def _hooks(self) -> ReplicaHooks:
        def outstanding(service: str, replica: str) -> int:
            endpoint = self.registry.get(service, replica)
            return endpoint.outstanding if endpoint else 0

        return ReplicaHooks(
            on_ready=lambda s, r, url: self.registry.add(s, r, url, self.backend.cluster_of(s, LOCAL)),
            on_gone=self.registry.remove,
            on_draining=lambda s, r: self.registry.start_draining(s, r),
            outstanding=outstanding,
            on_restart=lambda s, r: self.metrics.replica_restarts.labels(service=s, replica=r).inc(),
            on_event=self.events.record,
        )

    async def start(self) -> None:
        log.info(
            "node %s: %d CPU cores, %d GPU(s)%s",
            self.inventory.hostname,
            self.inventory.cpu_count,
            len(self.inventory.gpus),
            f" ({self.inventory.note})" if self.inventory.note else "",
        )
        self.reconciler.start()
        self.backend.start()
        self._autoscale_task = asyncio.create_task(self._autoscale_loop(), name="autoscaler")
        self._checkpoint_task = asyncio.create_task(self._checkpoint_loop(), name="store-checkpoint")
        self._probe_task = asyncio.create_task(self._probe_loop(), name="cluster-health")
        self._sampler = self._history_sampler()
        self._history_task = asyncio.create_task(self._sampler.run(), name="metrics-history")

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL_S)
            try:
                await asyncio.to_thread(self.store.checkpoint)
            except Exception:  # a busy or read-only database: try again next time
                log.exception("store checkpoint failed")

    async def _probe_loop(self) -> None:
        while True:
            try:
                await self.heartbeat(time.monotonic())
            except Exception:  # a bad heartbeat pass must not stop the next ones
                log.exception("cluster heartbeat pass failed")
            await asyncio.sleep(self.config.cluster_probe_interval_s)

    async def heartbeat(self, now: float) -> list[Transition]:
        """One heartbeat of every registered cluster: transitions acted on, `kgpu_cluster_available` and
        `kgpu_cluster_suspect` set (and dropped for a deleted Cluster)."""
        async with self._heartbeat_lock:  # one pass at a time: each sees the answers in clock order
            return await self._heartbeat(now)

    async def _heartbeat(self, now: float) -> list[Transition]:
        before = set(self.backend.health.known())
        changes = await self.backend.probe_clusters(now)
        for change in changes:
            self.on_cluster_transition(change)
        known = self.backend.health.known()
        for cluster in known:
            self._cluster_gauges(cluster, self.backend.health.state(cluster))
        for gone in before - set(known):
            self.registry.set_cluster_available(gone, True)
            for gauge in (self.metrics.cluster_available, self.metrics.cluster_suspect):
                with contextlib.suppress(KeyError):
                    gauge.remove(gone)
        return changes

    def _cluster_gauges(self, cluster: str, state: str) -> None:
        self.metrics.cluster_available.labels(cluster=cluster).set(0 if state == UNAVAILABLE else 1)
        self.metrics.cluster_suspect.labels(cluster=cluster).set(1 if state == SUSPECT else 0)

    def _gateway_lost_a_cluster_endpoint(self, endpoint: Endpoint) -> None:
        """The gateway lost a request to a cluster's Service (refused, dropped before its first byte): a
        heartbeat now, not at the next period, so a cluster that stopped answering is suspect at once.
        The heartbeat decides, not the failure itself: a Service drops a request when one pod dies,
        which must not move the cluster's replicas. One extra pass at a time; a replica of this
        machine that fails says nothing about a cluster."""
        if endpoint.cluster is None or not endpoint.whole_cluster or self._heartbeat_lock.locked():
            return
        if self._extra_heartbeat is not None and not self._extra_heartbeat.done():
            return
        self._extra_heartbeat = asyncio.get_running_loop().create_task(
            self._heartbeat_now(), name="cluster-heartbeat-now"
        )

    async def _heartbeat_now(self) -> None:
        try:
            await self.heartbeat(time.monotonic())
        except Exception:  # as in the loop: a bad pass must not go unnoticed nor stop anything
            log.exception("cluster heartbeat pass failed")

    def on_cluster_transition(self, change: Transition) -> None:
        """A cluster suspect, lost or back: the gateway stops (or starts) sending there at once, every
        service that may run there gets the event, and a reconcile pass moves the replicas by each
        service's policy (replacements start elsewhere while it is suspect; its own replicas are
        deleted once it is lost)."""
        log.warning("%s", change.message)
        self.registry.set_cluster_available(change.cluster, change.trusted)
        self._cluster_gauges(change.cluster, change.state)
        self.metrics.cluster_transitions.labels(cluster=change.cluster, to=change.state).inc()
        for key, placed in list(self.backend.placements.items()):
            if change.cluster in placed.keys.values():
                self.events.record(key, change.message)
        self.reconciler.kick()

    async def stop(self) -> None:
        for task in (
            self._autoscale_task,
            self._checkpoint_task,
            self._history_task,
            self._probe_task,
            self._extra_heartbeat,
        ):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.reconciler.stop()
        await self.backend.shutdown()
        await self.router.close()
        self.gpu_exporter.close()

    def runtime_metrics_targets(self) -> list[RuntimeTarget]:
        """The ready command runtimes of this machine whose servers serve Prometheus metrics."""
        return [
            RuntimeTarget(r.service, r.name, f"{r.url}{r.metrics_path}")
            for r in self.backend.local.replicas()
            if r.phase == "Ready" and r.url and r.runtime != "kgpu" and r.metrics_path
        ]

    def _history_sampler(self) -> MetricsSampler:
        def statuses() -> set[str]:  # sets the ready/desired gauges the sample reads
            services = self.resources.services()
            for service in services:
                self.status.service(service)
            return {s.key for s in services}

        def replica_urls() -> list[tuple[str, str]]:  # replicas on this machine (others are not reachable)
            return [(r.name, r.url) for r in self.backend.local.replicas() if r.phase == "Ready" and r.url]

        def pools() -> dict:
            return {p.key: pool_values(self.status.pool(p)) for p in self.resources.pools()}

        return MetricsSampler(
            self.history, registry_text(self.metrics.registry), statuses, replica_urls, pools
        )

    # Whether a namespace's services may name a model by a path on this machine (the server sets it
    # under --auth: a project setting, off by default). Without it, the path is not even looked at:
    # the error would tell the caller which of the server's files exist.
    local_paths_allowed: Callable[[str], bool] = staticmethod(lambda namespace: True)

    def _local_refusal(self, namespace: str, field: str, what: str, hint: str = "") -> list[FieldError]:
        """Refuse `what` (the server's files or processes) to a project not allowed local paths."""
        if self.local_paths_allowed(namespace):
            return []
        return [
            FieldError(
                field,
                f'Forbidden: project "{namespace}" may not {what} (the cluster admin allows them with '
                f"the project's localModelPaths){hint}",
            )
        ]

    def _check_model(self, resource: object) -> list[FieldError]:
        if isinstance(resource, InferenceService) and not resource.spec.model.uri.startswith("pkg:"):
            namespace = resource.metadata.namespace
            what = "use model paths on the server"
            if refusal := self._local_refusal(namespace, "spec.model.uri", what, "; use pkg:<package>"):
                return refusal
        return check_model_available(resource)

    def _check_runtime(self, resource: object) -> list[FieldError]:
        """A command runs as the server's own user, with its files: only where local paths are allowed."""
        if isinstance(resource, InferenceService) and resource.spec.runtime.kind == "command":
            namespace = resource.metadata.namespace
            if refusal := self._local_refusal(namespace, "spec.runtime.kind", "run commands on the server"):
                return refusal
        return check_runtime_available(resource)

    def _clusters(self) -> list[Cluster]:
        return stored_clusters(self.store, self.resources.parsed)

    def _kick(self) -> None:
        self.reconciler.kick()

    def _record_change(self, change: Change) -> None:
        """A service's event log notes each write of it (through the API or any other writer)."""
        stored = change.resource
        if stored.kind == "InferenceService":
            what = {"ADDED": "created", "MODIFIED": "updated"}.get(change.type, "deleted; draining replicas")
            self.events.record(object_key(stored.namespace, stored.name), what)
            if change.type == "DELETED":
                self.metrics.forget_service(object_key(stored.namespace, stored.name))

    def _route_settings(self, service: InferenceService) -> None:
        key = service.key
        # On a Kubernetes cluster the gateway sees one endpoint per service (its Service), not
        # the replicas: a per-replica limit there would cap the whole service.
        per_replica = not self.backend.on_cluster_service(key)
        self.router.set_concurrency_limit(key, service.spec.container_concurrency if per_replica else 0)
        self.router.set_parked(key, service.spec.replicas == 0 and service.spec.autoscaling is None)
        if service.spec.runtime.kind == "kgpu":
            self.router.set_upstream_model(key, None)
            self.router.set_protocol(key, None)
        else:
            spec = build_replica_spec(service, model_path=model_location(service.spec.model.uri))
            self.router.set_upstream_model(key, spec.served_model_name)
            self.router.set_protocol(key, spec.protocol)

    def observe(self, key: str) -> Observation:
        replicas = self.backend.replicas(key)
        on_cluster = self.backend.ready_replicas(key)  # on a Kubernetes cluster: its operator's count
        startup_s = measured_startup_s((r.started_at, r.ready_at) for r in replicas)
        return Observation(
            in_flight=self.registry.outstanding(key),
            held=self.router.held(key),
            ready=on_cluster if on_cluster is not None else self.registry.routable_count(key),
            startup_s=startup_s,
            sequences=self._sequences(key),
            starting=starting_replicas(((r.phase, r.started_at) for r in replicas), time.time(), startup_s),
        )

    def _sequences(self, key: str) -> float | None:
        """Running plus waiting sequences of the service's generation replicas, as last scraped."""
        latest = self._sampler.latest if self._sampler is not None else None
        return None if latest is None else sequences_by_service(latest).get(key)

    async def _autoscale_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.autoscale_interval_s)
            try:
                services = await asyncio.to_thread(self.resources.services)
                self.autoscaler.tick(services, self.observe, time.monotonic())
            except Exception:  # a bad tick must not stop autoscaling for good
                log.exception("autoscaler tick failed")

    def device_users(self) -> list[DeviceUser]:
        """Which replica holds which GPU or MIG device (labels of the GPU metrics)."""
        users = []
        for replica in self.backend.replicas():
            assignment = self.backend.devices_of(replica.name)
            if assignment is None or replica.phase == "Pending":
                continue
            project = replica.service.split("/", 1)[0]
            for index in assignment.gpu_indices:
                users.append(DeviceUser(project, replica.service, replica.name, gpu_index=index))
            if assignment.mig_uuid:
                users.append(DeviceUser(project, replica.service, replica.name, mig_uuid=assignment.mig_uuid))
        return users

    def replica_gpus(self, replica: str) -> str:
        """GPU indices a replica uses, comma-separated ("" on the CPU); a MIG device counts as its GPU."""
        indices = set()
        for user in self.device_users():
            if user.replica != replica:
                continue
            if user.gpu_index is not None:
                indices.add(user.gpu_index)
            for gpu in self.inventory.gpus:
                if any(mig.uuid == user.mig_uuid for mig in gpu.mig_devices):
                    indices.add(gpu.index)
        return ",".join(str(i) for i in sorted(indices))

    def resolve_model(self, model: str) -> str | None:
        """Map the OpenAI `model` field (or v2 model name) to a service key."""
        namespace, _, name = model.rpartition("/")
        key = object_key(namespace or "default", name)
        return key if self.reconciler.known(key) else None

    def known_models(self) -> list[str]:
        return sorted(k.removeprefix("default/") for k in self.reconciler.service_keys())
