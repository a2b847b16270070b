"""The kgpu operator: reconciles InferenceServices and NodePools with the official ``kubernetes`` client.

Level-triggered: every event only names an object to look at; reconciling reads the current
custom resource, renders what should exist, and creates or patches it. Objects a service owns
carry an ownerReference, so Kubernetes' garbage collector deletes them with the service.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from kgpu.api.errors import ResourceValidationError
from kgpu.api.models import InferenceService, NodePool, object_key
from kgpu.backends.kubernetes.crds_info import GROUP, VERSION
from kgpu.backends.kubernetes.custom_objects import model_of
from kgpu.backends.kubernetes.informer import WATCH_TIMEOUT_S, Informer
from kgpu.backends.kubernetes.informer import start as start_informer
from kgpu.backends.kubernetes.labels import MANAGED_BY, POOL_LABEL, SERVICE_LABEL
from kgpu.backends.kubernetes.nodepool import (
    GPU_OPERATOR_NAMESPACE,
    NodeConfig,
    node_config,
    node_label_apply,
    node_taints_patch,
    pool_status,
    render_device_plugin_configmap,
    render_mig_parted_configmap,
)
from kgpu.backends.kubernetes.provisioning import (
    CAPI_API_VERSION,
    CAPI_POOL_NODE_LABEL,
    KARPENTER_API_VERSION,
    ProvisioningSettings,
    provisioning_status,
    render_provisioning,
)
from kgpu.backends.kubernetes.status import is_loading, is_pending, service_status
from kgpu.backends.kubernetes.workload import (
    WorkloadSettings,
    desired_replicas,
    owner_reference,
    render_service_objects,
)

log = logging.getLogger("kgpu.operator")

FIELD_MANAGER = "kgpu"
APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
APPLY_OPTIONS: dict[str, Any] = {"field_manager": FIELD_MANAGER, "force": True, "_content_type": APPLY_PATCH}

SERVICES = "inferenceservices"
POOLS = "nodepools"
SERVICE_MONITOR_CRD = "servicemonitors.monitoring.coreos.com"


@dataclass
class KubeApis:
    """The official client's API groups the operator uses (fakes with the same surface in tests)."""

    core: Any
    apps: Any
    policy: Any
    custom: Any
    apiextensions: Any

    @classmethod
    def from_client(cls, api_client: k8s.ApiClient | None = None) -> KubeApis:
        return cls(
            core=k8s.CoreV1Api(api_client),
            apps=k8s.AppsV1Api(api_client),
            policy=k8s.PolicyV1Api(api_client),
            custom=k8s.CustomObjectsApi(api_client),
            apiextensions=k8s.ApiextensionsV1Api(api_client),
        )


_SERIALIZER = k8s.ApiClient()


def as_dict(obj: Any) -> dict[str, Any]:
    """Client model objects (V1Deployment, ...) as the JSON dicts the API server sent."""
    return _SERIALIZER.sanitize_for_serialization(obj) if obj is not None else {}


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class NotLeading(RuntimeError):
    """A write was about to happen after the operator was told to stop (its leadership was lost)."""


class Operator:
    def __init__(
        self,
        apis: KubeApis,
        settings: WorkloadSettings | None = None,
        gpu_operator_namespace: str = GPU_OPERATOR_NAMESPACE,
        clock: Callable[[], str] = _utc_now,
        stop: threading.Event | None = None,
        provisioning: ProvisioningSettings | None = None,
    ) -> None:
        self.apis = apis
        self.provisioning = provisioning or ProvisioningSettings()
        self.settings = settings or WorkloadSettings()
        self.gpu_operator_namespace = gpu_operator_namespace
        self.clock = clock
        # Set when leadership is lost: from then on no write leaves this process.
        self.stop = stop or threading.Event()

    def guard(self) -> None:
        """Called before every write: a follower that still runs a reconcile must not write."""
        if self.stop.is_set():
            raise NotLeading("the operator is stopping (leadership lost); write refused")

    # ------------------------------------------------------------ generic apply

    def _patcher(self, manifest: dict[str, Any]) -> Callable[..., Any]:
        """The client call that PATCHes this kind of object (name, namespace and body bound)."""
        kind = manifest["kind"]
        meta = manifest["metadata"]
        name, namespace = meta["name"], meta.get("namespace")
        a = self.apis
        if kind == "Deployment":
            return partial(a.apps.patch_namespaced_deployment, name, namespace, manifest)
        if kind == "Service":
            return partial(a.core.patch_namespaced_service, name, namespace, manifest)
        if kind == "ConfigMap":
            return partial(a.core.patch_namespaced_config_map, name, namespace, manifest)
        if kind == "PodDisruptionBudget":
            return partial(a.policy.patch_namespaced_pod_disruption_budget, name, namespace, manifest)
        if kind == "ServiceMonitor":
            group, version = manifest["apiVersion"].split("/")
            return partial(
                a.custom.patch_namespaced_custom_object,
                group,
                version,
                namespace,
                "servicemonitors",
                name,
                manifest,
            )
        raise ValueError(f"the operator does not apply {kind}")

    def apply(self, manifest: dict[str, Any]) -> Any:
        """Server-side apply of the whole render (field manager ``kgpu``): the object is created when
        absent, and every field kgpu applied before but this render leaves out is removed, which a
        merge patch would keep. Conflicts are forced: these objects are kgpu's, so a field another
        manager changed is taken back (fields only others set stay theirs)."""
        self.guard()
        return self._patcher(manifest)(**APPLY_OPTIONS)

    def service_monitor_available(self) -> bool:
        """ServiceMonitors only where the Prometheus operator's CRD is installed."""
        try:
            self.apis.apiextensions.read_custom_resource_definition(SERVICE_MONITOR_CRD)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # ------------------------------------------------------------ InferenceService

    def write_status(self, plural: str, obj: dict[str, Any], status: dict[str, Any]) -> None:
        """Write a custom resource's status, computed from ``obj`` as read.

        The patch carries the resourceVersion that was read, so a status computed from a stale read
        (another writer got there first) is refused with a 409 instead of overwriting newer
        conditions; the caller reconciles again from a fresh read.
        """
        self.guard()
        meta = obj["metadata"]
        body: dict[str, Any] = {"status": status}
        if meta.get("resourceVersion"):
            body["metadata"] = {"resourceVersion": meta["resourceVersion"]}
        self.apis.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, meta["namespace"], plural, meta["name"], body
        )

    def reconcile_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        """Bring one InferenceService's Deployment, Service, PDB (and ServiceMonitor) to its spec."""
        return _retry_conflicts(lambda: self._reconcile_service_once(namespace, name))

    def _reconcile_service_once(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj = self.apis.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, SERVICES, name)
        except ApiException as exc:
            if exc.status == 404:
                return None  # deleted: the garbage collector removes what it owned
            raise
        previous = obj.get("status") or {}
        try:
            isvc = model_of(obj)
        except ResourceValidationError as exc:
            # Nothing already running is touched; the user sees why in the status.
            status = {
                **previous,
                "phase": "Invalid",
                "message": str(exc),
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "InvalidSpec",
                        "message": str(exc),
                        "lastTransitionTime": self.clock(),
                    }
                ],
            }
            self.write_status(SERVICES, obj, status)
            return status
        assert isinstance(isvc, InferenceService)
        owner = owner_reference(obj)
        for manifest in render_service_objects(isvc, self.settings, owner, self.service_monitor_available()):
            self.apply(manifest)
        deployment = as_dict(self.apis.apps.read_namespaced_deployment(name, namespace))
        pods = as_dict(
            self.apis.core.list_namespaced_pod(namespace, label_selector=f"{SERVICE_LABEL}={name}")
        )
        pod_items = pods.get("items") or []
        events: list[dict[str, Any]] = []
        # The events that explain a replica not ready yet: why a pod is Pending, or what a loading one's
        # probe last answered; read only when some pod is in that state.
        for reason, wanted in (("FailedScheduling", is_pending), ("Unhealthy", is_loading)):
            if any(wanted(p) for p in pod_items):
                selector = f"reason={reason}"
                listed = as_dict(self.apis.core.list_namespaced_event(namespace, field_selector=selector))
                events += listed.get("items") or []
        status = service_status(
            isvc, desired_replicas(isvc), deployment, pod_items, events, self.clock(), previous
        )
        self.write_status(SERVICES, obj, status)
        return status

    def scale_service(self, namespace: str, name: str, replicas: int) -> None:
        """What kgpu's replica autoscaler calls: spec.replicas through the scale subresource."""
        if replicas < 0:
            raise ValueError(f"replicas: must be >= 0, got {replicas}")
        self.guard()
        self.apis.custom.patch_namespaced_custom_object_scale(
            GROUP, VERSION, namespace, SERVICES, name, {"spec": {"replicas": replicas}}
        )

    # ------------------------------------------------------------ NodePool

    def reconcile_node_pools(self) -> dict[str, dict[str, Any]]:
        """All pools at once: the device plugin and mig-parted ConfigMaps hold one key per pool."""
        return _retry_conflicts(self._reconcile_node_pools_once)

    def _reconcile_node_pools_once(self) -> dict[str, dict[str, Any]]:
        listed = self.apis.custom.list_cluster_custom_object(GROUP, VERSION, POOLS)
        pools: list[tuple[dict[str, Any], NodePool]] = []
        statuses: dict[str, dict[str, Any]] = {}
        for obj in listed.get("items") or []:
            meta = obj["metadata"]
            try:
                pool = model_of(obj)
            except ResourceValidationError as exc:
                status = {"phase": "Invalid", "message": str(exc)}
                self.write_status(POOLS, obj, status)
                statuses[object_key(meta["namespace"], meta["name"])] = status
                continue
            assert isinstance(pool, NodePool)
            pools.append((obj, pool))
        models = [p for _, p in pools]
        self.apply(render_device_plugin_configmap(models, self.gpu_operator_namespace))
        self.apply(render_mig_parted_configmap(models, self.gpu_operator_namespace))
        for obj, pool in pools:
            config = node_config(pool)
            node_items = self.pool_nodes(pool)
            for node in node_items:
                self.configure_node(node, config)
            status = {
                "phase": "Ready",
                **pool_status(pool, node_items),
                **provisioning_status(pool, self.provisioning),
            }
            self.write_status(POOLS, obj, status)
            statuses[pool.key] = status
        self.provision([pool for _, pool in pools])
        return statuses

    def _provisioning_api(self) -> tuple[str, str, str, str | None]:
        """(group, version, plural, namespace) of this cluster's autoscaler objects."""
        if self.provisioning.provider == "cluster-api":
            group, version = CAPI_API_VERSION.split("/")
            return group, version, "machinedeployments", self.provisioning.namespace
        group, version = KARPENTER_API_VERSION.split("/")
        return group, version, "nodepools", None

    def provision(self, pools: list[NodePool]) -> None:
        """Apply each pool's autoscaler object (MachineDeployment or Karpenter NodePool) and delete
        those of pools that are gone (found by kgpu's labels: they cannot be owned across scopes)."""
        if self.provisioning.provider == "none":
            return
        group, version, plural, namespace = self._provisioning_api()
        custom = self.apis.custom
        wanted = set()
        for pool in pools:
            manifest = render_provisioning(pool, self.provisioning)
            if manifest is None:
                continue
            wanted.add(manifest["metadata"]["name"])
            self.guard()
            name = manifest["metadata"]["name"]
            if namespace is None:
                custom.patch_cluster_custom_object(group, version, plural, name, manifest, **APPLY_OPTIONS)
            else:
                custom.patch_namespaced_custom_object(
                    group, version, namespace, plural, name, manifest, **APPLY_OPTIONS
                )
        selector = f"{_selector(MANAGED_BY)},{POOL_LABEL}"
        if namespace is None:
            listed = custom.list_cluster_custom_object(group, version, plural, label_selector=selector)
        else:
            listed = custom.list_namespaced_custom_object(
                group, version, namespace, plural, label_selector=selector
            )
        for item in listed.get("items") or []:
            name = item["metadata"]["name"]
            if name in wanted:
                continue
            self.guard()
            if namespace is None:
                custom.delete_cluster_custom_object(group, version, plural, name)
            else:
                custom.delete_namespaced_custom_object(group, version, namespace, plural, name)

    def _node_pool_labels(self) -> list[str]:
        """Labels that name a node's pool: kgpu's, and the one Cluster API propagates from the
        MachineDeployment kgpu rendered (a new node has only that until kgpu labels it)."""
        keys = [POOL_LABEL]
        if self.provisioning.provider == "cluster-api":
            keys.append(CAPI_POOL_NODE_LABEL)
        return keys

    def pool_nodes(self, pool: NodePool) -> list[dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for key in self._node_pool_labels():
            listed = as_dict(self.apis.core.list_node(label_selector=f"{key}={pool.metadata.name}"))
            for node in listed.get("items") or []:
                found.setdefault(node["metadata"]["name"], node)
        return [found[name] for name in sorted(found)]

    def configure_node(self, node: dict[str, Any], config: NodeConfig, attempts: int = 5) -> None:
        """Give one node its pool's taints (a guarded merge patch, retried on a conflict), then its
        labels and the record of those taints by server-side apply."""
        name = node["metadata"]["name"]
        for _ in range(attempts):
            patch = node_taints_patch(node, config)
            if patch is None:
                break
            self.guard()
            try:
                self.apis.core.patch_node(name, patch, field_manager=FIELD_MANAGER, _content_type=MERGE_PATCH)
                break
            except ApiException as exc:
                if exc.status != 409:
                    raise
                node = as_dict(self.apis.core.read_node(name))  # changed meanwhile: look again
        else:
            raise ApiException(status=409, reason=f"node {name}: taints kept changing")
        self.guard()
        self.apis.core.patch_node(name, node_label_apply(name, config), **APPLY_OPTIONS)

    # ------------------------------------------------------------ watch loop

    def resync(self) -> None:
        self.guard()
        for obj in self.apis.custom.list_cluster_custom_object(GROUP, VERSION, SERVICES).get("items") or []:
            self._safely(self.reconcile_service, obj["metadata"]["namespace"], obj["metadata"]["name"])
        self._safely(self.reconcile_node_pools)

    def _safely(self, fn: Callable, *args: Any) -> None:
        try:
            fn(*args)
        except ApiException as exc:
            log.warning("%s%s failed: %s %s", fn.__name__, args, exc.status, exc.reason)

    def watches(self) -> list[tuple[Callable, Callable[[dict], tuple[str, str, str] | None], dict[str, Any]]]:
        """(list function, event object -> work key, arguments) for every watch the operator keeps open."""
        return [
            (
                self.apis.custom.list_cluster_custom_object,
                _service_key,
                {"group": GROUP, "version": VERSION, "plural": SERVICES},
            ),
            (
                self.apis.custom.list_cluster_custom_object,
                _pools_key,
                {"group": GROUP, "version": VERSION, "plural": POOLS},
            ),
            (
                self.apis.apps.list_deployment_for_all_namespaces,
                _service_key,
                {"label_selector": _selector(MANAGED_BY)},
            ),
            (self.apis.core.list_pod_for_all_namespaces, _service_key, {"label_selector": SERVICE_LABEL}),
            *(
                (self.apis.core.list_node, _pools_key, {"label_selector": key})
                for key in self._node_pool_labels()
            ),
        ]

    def run(
        self,
        resync_s: float = 60.0,
        stop: threading.Event | None = None,
        watch_timeout_s: int = WATCH_TIMEOUT_S,
    ) -> None:
        """Watch services, pools and what they own; reconcile whatever an event names; resync periodically.

        Returns once ``stop`` is set (leadership lost): the batch in hand is not finished, and any
        write still attempted is refused (:meth:`guard`).
        """
        if stop is not None:
            self.stop = stop
        stop = self.stop
        keys: queue.Queue[tuple[str, str, str]] = queue.Queue()

        def feeder(key_of: Callable[[dict], tuple[str, str, str] | None]) -> tuple[Callable, Callable]:
            def on_event(_kind: str, obj: dict[str, Any]) -> None:
                key = key_of(obj)
                if key is not None:
                    keys.put(key)

            def on_list(items: list[dict[str, Any]]) -> None:
                for obj in items:
                    on_event("ADDED", obj)

            return on_list, on_event

        self.informers = []
        for list_fn, key_of, kwargs in self.watches():
            on_list, on_event = feeder(key_of)
            informer = Informer(list_fn, on_list, on_event, stop, watch_timeout_s, **kwargs)
            self.informers.append(informer)
            start_informer(informer)
        try:
            self._work(keys, resync_s)
        except NotLeading:
            log.warning("leadership lost: stopped writing")
        finally:
            for informer in self.informers:
                informer.close()

    def _work(self, keys: queue.Queue[tuple[str, str, str]], resync_s: float) -> None:
        next_resync = 0.0
        while not self.stop.is_set():
            if time.monotonic() >= next_resync:
                self.resync()
                next_resync = time.monotonic() + resync_s
            try:
                batch = {keys.get(timeout=0.2)}
            except queue.Empty:
                continue
            while not keys.empty():
                batch.add(keys.get_nowait())
            for kind, namespace, name in sorted(batch):
                if self.stop.is_set():
                    return
                if kind == "service":
                    self._safely(self.reconcile_service, namespace, name)
                else:
                    self._safely(self.reconcile_node_pools)


STATUS_ATTEMPTS = 4


def _retry_conflicts(reconcile: Callable[[], Any], attempts: int = STATUS_ATTEMPTS) -> Any:
    """Run a reconcile again (from fresh reads) when one of its writes met a 409 Conflict."""
    for attempt in range(attempts):
        try:
            return reconcile()
        except ApiException as exc:
            if exc.status != 409 or attempt == attempts - 1:
                raise
            log.info("conflict (%s), reconciling again from a fresh read", exc.reason)
    return None


def _service_key(obj: dict) -> tuple[str, str, str] | None:
    """A service itself, or an object labelled with the service it belongs to."""
    meta = obj.get("metadata") or {}
    if obj.get("kind") == "InferenceService":
        name = meta.get("name")
    else:
        name = (meta.get("labels") or {}).get(SERVICE_LABEL)
    return ("service", meta.get("namespace", ""), name) if name else None


def _pools_key(obj: dict) -> tuple[str, str, str]:
    return ("pools", "", "")  # pools are reconciled together (they share the ConfigMaps)


def _selector(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items())


def iter_manifests(services: Iterable[InferenceService], pools: Iterable[NodePool]) -> list[dict[str, Any]]:
    """Everything the operator would create for these resources (no owners): for `kubectl diff` and tests."""
    out: list[dict[str, Any]] = []
    for isvc in services:
        out += render_service_objects(isvc, service_monitor=True)
    pool_list = list(pools)
    out.append(render_device_plugin_configmap(pool_list))
    out.append(render_mig_parted_configmap(pool_list))
    return out
