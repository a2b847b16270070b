"""The control plane's Kubernetes backend: services and pools become kgpu.dev custom resources in a cluster.

`kgpu apply` of an InferenceService (or NodePool) that targets a registered Kubernetes cluster makes
the control plane create, replace or delete the custom resource in that cluster, in the namespace of
the service's project, through the official client's CustomObjectsApi. The kgpu operator running in
the cluster renders the Deployment, Service and PodDisruptionBudget and writes the status this
backend reads back. Replica counts the control plane's autoscaler decides go through the
InferenceService's scale subresource, as `kubectl scale` does.

Every call runs in a worker thread with a request timeout, so an unreachable cluster never blocks
the event loop; a failed call is reported in the service's status and retried on the next pass.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kgpu.api.errors import ResourceValidationError
from kgpu.api.models import Cluster, InferenceService, NodePool, object_key
from kgpu.backends.base import DeviceUse, ReplicaStatus, RouteHooks
from kgpu.backends.kubernetes.crds_info import GROUP, VERSION
from kgpu.backends.kubernetes.custom_objects import model_of
from kgpu.backends.kubernetes.workload import SERVICE_PORT

if TYPE_CHECKING:
    from kubernetes.client.exceptions import ApiException

log = logging.getLogger("kgpu.backends.kubernetes.cluster")

SERVICES = "inferenceservices"
POOLS = "nodepools"
# On every custom resource the control plane creates: how it finds its own after a restart.
CONTROL_PLANE_LABEL = "kgpu.dev/control-plane"
CONTROL_PLANE_VALUE = "kgpu"
# (connect, read) seconds of every call: an unreachable cluster costs a pass seconds, not minutes.
REQUEST_TIMEOUT_S = (3.0, 10.0)
# After a failed listing, the next try waits this long (listing runs on every reconcile pass).
ADOPT_RETRY_S = 30.0


def custom_resource(resource: InferenceService | NodePool, replicas: int | None = None) -> dict[str, Any]:
    """The custom resource sent to the cluster: the applied resource, labelled, with the replica count
    the control plane wants (the autoscaler's, not necessarily the applied spec.replicas)."""
    body = resource.model_dump(by_alias=True, mode="json", exclude_none=True, exclude={"status"})
    meta = body["metadata"]
    meta["labels"] = {**(meta.get("labels") or {}), CONTROL_PLANE_LABEL: CONTROL_PLANE_VALUE}
    if not meta.get("annotations"):
        meta.pop("annotations", None)
    if replicas is not None:
        body["spec"]["replicas"] = replicas
    return body


def service_dns_url(name: str, namespace: str, cluster_domain: str = "cluster.local") -> str:
    """The Service the operator creates for an InferenceService, by its cluster DNS name."""
    return f"http://{name}.{namespace}.svc.{cluster_domain}:{SERVICE_PORT}"


def _comparable(obj: dict[str, Any], kind: type[InferenceService] | type[NodePool]) -> Any:
    """What decides whether a stored custom resource must be replaced (replicas go through scale)."""
    try:
        model = model_of(obj)
    except ResourceValidationError:
        return None  # edited into something invalid in the cluster: replace it with ours
    if not isinstance(model, kind):
        return None
    spec = model.spec.model_dump(mode="json", exclude={"replicas"} if kind is InferenceService else None)
    meta = obj.get("metadata") or {}
    return spec, meta.get("labels") or {}, meta.get("annotations") or {}


@dataclass
class _Placed:
    cluster: str  # key of the Cluster resource
    api: Any  # CustomObjectsApi
    status: dict[str, Any] = field(default_factory=dict)  # the custom resource's status, as last read
    error: str | None = None  # why the last call failed
    routed: str | None = None  # the URL given to the gateway
    endpoint: str | None = None  # the name the gateway knows that URL by


def _unloadable(cluster: Cluster, exc: Exception) -> str:
    """Why a cluster cannot be reached, for its users: the reason goes to the server's log only,
    since it may name the server's files (which exist, which do not) and the status is theirs to read."""
    log.warning("cluster %s: cannot load its kubeconfig: %s", cluster.key, exc)
    return f"cluster {cluster.key}: cannot load its kubeconfig (the server's log says why)"


class KubernetesBackend:
    """Places services and pools on registered Kubernetes clusters (the reconciler's Backend surface)."""

    def __init__(
        self,
        connect: Callable[[Cluster], Any],
        routes: RouteHooks | None = None,
        route_in_cluster: bool = False,
        cluster_domain: str = "cluster.local",
        request_timeout_s: float | tuple[float, float] = REQUEST_TIMEOUT_S,
        adopt_orphans: bool = True,
    ) -> None:
        self._connect = connect
        self._routes = routes
        self.route_in_cluster = route_in_cluster
        self.cluster_domain = cluster_domain
        self.request_timeout_s = request_timeout_s
        self._apis: dict[str, tuple[str, Any]] = {}  # cluster key -> (spec it was built from, api)
        self._services: dict[str, _Placed] = {}
        # A service split over several clusters (spec.placement): its share in each, by cluster key.
        self._shares: dict[str, dict[str, _Placed]] = {}
        self._pools: dict[str, _Placed] = {}
        self._adopted: set[str] = set()
        # False for a store that started empty: it may have lost what it created (an emptyDir), and
        # then every labelled resource in the cluster would look deleted. Those are left alone.
        self.adopt_orphans = adopt_orphans
        self._adopt_failed: dict[str, float] = {}  # cluster key -> monotonic time of the failure

    # ------------------------------------------------------------ Backend

    async def ensure(self, service: InferenceService, replicas: int, cluster: Cluster | None = None) -> None:
        if cluster is None:
            raise ValueError(f"{service.key}: the Kubernetes backend places a service on a named cluster")
        await self.ensure_on(cluster, service, replicas)

    async def sync_pools(
        self, clusters: list[Cluster], pools: list[tuple[NodePool, Cluster]], keep: set[str]
    ) -> None:
        """Adopt (once per cluster) what this control plane created before a restart, so that deleted
        services and pools are deleted there too; pools onto their clusters; the others deleted."""
        for cluster in clusters:
            await self.adopt(cluster)
        wanted = set(keep)
        for pool, cluster in pools:
            wanted.add(pool.key)
            await self.ensure_pool_on(cluster, pool)
        for key in self.pools():
            if key not in wanted:
                await self.remove_pool(key)

    def refusal(self, service_key: str) -> str | None:
        return None

    def devices_of(self, replica: str) -> DeviceUse | None:
        return None  # the cluster's device plugin hands out the devices

    def node_items(self, pools: list[NodePool]) -> list[dict]:
        return []  # the cluster's nodes: kubectl get nodes

    async def restart_replica(self, service_key: str, replica: str) -> bool:
        return False  # a pod: kubectl delete pod

    def start(self) -> None:
        return None

    async def probe(self, cluster: Cluster) -> str | None:
        """A heartbeat: list one kgpu InferenceService there (the call every pass depends on)."""

        try:
            api = await asyncio.to_thread(self.api_for, cluster)
        except Exception as exc:  # its reason goes to the log only: the Cluster's status is its users'
            return _unloadable(cluster, exc)
        try:
            await asyncio.to_thread(
                api.list_cluster_custom_object, GROUP, VERSION, SERVICES, limit=1, **self._kw()
            )
        except Exception as exc:  # unreachable, refused, unauthorised: the cluster does not answer
            return f"cluster {cluster.key}: {_describe(exc)}"
        return None

    # ------------------------------------------------------------ clients

    def api_for(self, cluster: Cluster) -> Any:
        """One CustomObjectsApi per registered cluster, rebuilt when its kubeconfig or context changes."""
        key = cluster.key
        spec = cluster.spec.model_dump_json()
        cached = self._apis.get(key)
        if cached is None or cached[0] != spec:
            cached = self._apis[key] = (spec, self._connect(cluster))
        return cached[1]

    def _kw(self) -> dict[str, Any]:
        return {"_request_timeout": self.request_timeout_s}

    # ------------------------------------------------------------ services

    async def ensure_on(self, cluster: Cluster, service: InferenceService, replicas: int) -> None:
        """Make the service's custom resource in `cluster` match the service with `replicas` replicas."""
        key = service.key
        for ckey in [c for c in self._shares.get(key, {}) if c != cluster.key]:
            await self.remove_share(key, ckey)  # no longer split: only this cluster keeps it
        if cluster.key in self._shares.get(key, {}):
            self._services[key] = self._take_share(key, cluster.key)
        placed = self._services.get(key)
        if placed is not None and placed.cluster != cluster.key:
            await self.remove(key)  # moved to another cluster: gone from the old one first
            placed = self._services.get(key)
            if placed is not None:
                return  # the old cluster did not answer; try again next pass
        await self._converge(self._services, key, cluster, service, replicas, f"svc/{service.metadata.name}")

    async def _converge(
        self,
        holder: dict[str, _Placed],
        slot: str,
        cluster: Cluster,
        service: InferenceService,
        replicas: int,
        endpoint: str,
    ) -> None:
        """Sync the service's custom resource in `cluster`, recorded as `holder[slot]`; route to it."""
        try:
            api = await asyncio.to_thread(self.api_for, cluster)
        except Exception as exc:  # kubeconfig unreadable, context gone: reported, retried next pass
            holder.setdefault(slot, _Placed(cluster.key, None)).error = _unloadable(cluster, exc)
            return
        placed = holder.setdefault(slot, _Placed(cluster.key, api))
        placed.api = api
        try:
            obj = await asyncio.to_thread(self._sync_service, api, service, replicas)
        except Exception as exc:  # API errors and unreachable servers alike
            placed.error = f"cluster {placed.cluster}: {_describe(exc)}"
            log.warning("%s: %s", service.key, placed.error)
            return
        placed.error = None
        placed.status = obj.get("status") or {}
        self._route(service.key, service, placed, cluster, endpoint)

    # ------------------------------------------------------------ a service over several clusters

    async def ensure_share(self, cluster: Cluster, service: InferenceService, replicas: int) -> None:
        """The service's share in `cluster` (spec.placement): `replicas` replicas there, whatever the
        service has in its other clusters."""
        key = service.key
        shares = self._shares.setdefault(key, {})
        single = self._services.get(key)
        if single is not None and single.cluster == cluster.key:
            shares[cluster.key] = self._services.pop(key)  # a one-cluster service now split: same resource
        endpoint = f"svc/{service.metadata.name}@{cluster.metadata.name}"
        await self._converge(shares, cluster.key, cluster, service, replicas, endpoint)

    def share_clusters(self, key: str) -> list[str]:
        """Keys of the clusters holding a custom resource of the service (its shares, or its one cluster)."""
        single = self._services.get(key)
        return sorted({*self._shares.get(key, {}), *([single.cluster] if single else [])})

    def share_ready(self, key: str, cluster_key: str) -> int:
        placed = self._shares.get(key, {}).get(cluster_key)
        single = self._services.get(key)
        if placed is None and single is not None and single.cluster == cluster_key:
            placed = single
        return 0 if placed is None else int(placed.status.get("readyReplicas") or 0)

    async def remove_share(self, key: str, cluster_key: str) -> None:
        """Delete the service's custom resource from one cluster (its share there is gone)."""
        single = self._services.get(key)
        if single is not None and single.cluster == cluster_key:
            self._shares.setdefault(key, {})[cluster_key] = self._services.pop(key)
        placed = self._shares.get(key, {}).get(cluster_key)
        if placed is None:
            return
        if await self._delete_placed(key, placed):
            self._take_share(key, cluster_key)

    def _take_share(self, key: str, cluster_key: str) -> _Placed:
        shares = self._shares[key]
        placed = shares.pop(cluster_key)
        if not shares:
            del self._shares[key]
        return placed

    def _sync_service(self, api: Any, service: InferenceService, replicas: int) -> dict[str, Any]:
        """Create, replace or scale the custom resource; returns it as the cluster now holds it."""
        namespace, name = service.metadata.namespace, service.metadata.name
        held, unchanged = self._create_or_replace(
            api, SERVICES, InferenceService, namespace, name, custom_resource(service, replicas)
        )
        # The spec matches except perhaps for replicas, which go through the scale subresource.
        if unchanged and (held.get("spec") or {}).get("replicas") != replicas:
            api.patch_namespaced_custom_object_scale(
                GROUP, VERSION, namespace, SERVICES, name, {"spec": {"replicas": replicas}}, **self._kw()
            )
        return held

    def _create_or_replace(
        self, api: Any, plural: str, model: type, namespace: str, name: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        """The custom resource as the cluster holds it after this call, and whether it was left as it was
        (it existed and matched ``body`` apart from status, metadata the server owns and replicas)."""
        try:
            current = api.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name, **self._kw())
        except _api_exception() as exc:
            if exc.status != 404:
                raise
            created = api.create_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, body, **self._kw()
            )
            return created or body, False
        if _comparable(current, model) != _comparable(body, model):
            body["metadata"]["resourceVersion"] = (current.get("metadata") or {}).get("resourceVersion")
            replaced = api.replace_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name, body, **self._kw()
            )
            return {**body, "status": current.get("status") or {}, **(replaced or {})}, False
        return current, True

    def _route(
        self, key: str, service: InferenceService, placed: _Placed, cluster: Cluster, endpoint: str
    ) -> None:
        """The gateway sends the service's requests to its Service (which spreads them): by its cluster
        DNS name in the gateway's own cluster, or under the cluster's `serviceDomain` (a mesh)."""
        domain = cluster.spec.service_domain
        if (domain is None and not self.route_in_cluster) or self._routes is None:
            return
        ready = int(placed.status.get("readyReplicas") or 0)
        url = service_dns_url(
            service.metadata.name, service.metadata.namespace, domain or self.cluster_domain
        )
        if ready > 0 and placed.routed != url:
            self._routes.on_ready(key, endpoint, url, cluster.key, domain is None)
            placed.routed, placed.endpoint = url, endpoint
        elif ready == 0 and placed.routed is not None:
            self._routes.on_gone(key, placed.endpoint or endpoint)
            placed.routed = None

    async def remove(self, key: str) -> None:
        """Delete the service's custom resources (the cluster's garbage collector removes what they owned)."""
        for cluster_key in list(self._shares.get(key, {})):
            await self.remove_share(key, cluster_key)
        placed = self._services.get(key)
        if placed is None:
            return
        if await self._delete_placed(key, placed):
            del self._services[key]

    async def _delete_placed(self, key: str, placed: _Placed) -> bool:
        """Unroute and delete one custom resource of the service; False when its cluster did not answer."""
        if placed.routed is not None and self._routes is not None:
            self._routes.on_gone(key, placed.endpoint or f"svc/{key.split('/', 1)[1]}")
            placed.routed = None
        if placed.api is not None:
            try:
                await asyncio.to_thread(self._delete, placed.api, SERVICES, key)
            except Exception as exc:
                placed.error = f"cluster {placed.cluster}: delete failed: {_describe(exc)}"
                log.warning("%s: %s", key, placed.error)
                return False  # still listed in services(): the reconciler tries again
        return True

    def _delete(self, api: Any, plural: str, key: str) -> None:
        namespace, name = key.split("/", 1)
        try:
            api.delete_namespaced_custom_object(GROUP, VERSION, namespace, plural, name, **self._kw())
        except _api_exception() as exc:
            if exc.status != 404:
                raise

    async def adopt(self, cluster: Cluster) -> None:
        """Once per cluster: find the custom resources this control plane created before a restart, so
        services and pools deleted meanwhile are deleted from the cluster too."""
        ckey = cluster.key
        if not self.adopt_orphans:
            if ckey not in self._adopted:
                log.warning(
                    "cluster %s: this control plane's store started empty; kgpu resources labelled %s=%s "
                    "that it does not know are left alone",
                    ckey,
                    CONTROL_PLANE_LABEL,
                    CONTROL_PLANE_VALUE,
                )
                self._adopted.add(ckey)
            return
        failed_at = self._adopt_failed.get(ckey)
        if ckey in self._adopted or (failed_at is not None and time.monotonic() - failed_at < ADOPT_RETRY_S):
            return
        try:
            api = await asyncio.to_thread(self.api_for, cluster)
            listed = {
                plural: await asyncio.to_thread(
                    api.list_cluster_custom_object,
                    GROUP,
                    VERSION,
                    plural,
                    label_selector=f"{CONTROL_PLANE_LABEL}={CONTROL_PLANE_VALUE}",
                    **self._kw(),
                )
                for plural in (SERVICES, POOLS)
            }
        except Exception as exc:
            log.warning("cluster %s: cannot list its kgpu resources: %s", ckey, _describe(exc))
            self._adopt_failed[ckey] = time.monotonic()
            return
        for plural, placed in ((SERVICES, self._services), (POOLS, self._pools)):
            for item in (listed[plural] or {}).get("items") or []:
                meta = item.get("metadata") or {}
                key = object_key(str(meta.get("namespace")), str(meta.get("name")))
                placed.setdefault(key, _Placed(ckey, api, status=item.get("status") or {}))
        self._adopted.add(ckey)

    # ------------------------------------------------------------ node pools

    async def ensure_pool_on(self, cluster: Cluster, pool: NodePool) -> None:
        key = pool.key
        placed = self._pools.get(key)
        if placed is not None and placed.cluster != cluster.key:
            await self.remove_pool(key)
            if key in self._pools:
                return
        try:
            api = await asyncio.to_thread(self.api_for, cluster)
        except Exception as exc:
            self._pools.setdefault(key, _Placed(cluster.key, None)).error = _unloadable(cluster, exc)
            return
        placed = self._pools.setdefault(key, _Placed(cluster.key, api))
        placed.api = api
        try:
            obj = await asyncio.to_thread(self._sync_pool, api, pool)
        except Exception as exc:
            placed.error = f"cluster {placed.cluster}: {_describe(exc)}"
            return
        placed.error = None
        placed.status = obj.get("status") or {}

    def _sync_pool(self, api: Any, pool: NodePool) -> dict[str, Any]:
        namespace, name = pool.metadata.namespace, pool.metadata.name
        return self._create_or_replace(api, POOLS, NodePool, namespace, name, custom_resource(pool))[0]

    async def remove_pool(self, key: str) -> None:
        placed = self._pools.get(key)
        if placed is None:
            return
        if placed.api is not None:
            try:
                await asyncio.to_thread(self._delete, placed.api, POOLS, key)
            except Exception as exc:
                placed.error = f"cluster {placed.cluster}: delete failed: {_describe(exc)}"
                return
        del self._pools[key]

    def pools(self) -> list[str]:
        return sorted(self._pools)

    def pool_report(self, pool: NodePool) -> dict[str, Any] | None:
        """The pool's status as the cluster's operator wrote it (nodes, MIG state), or None if not placed."""
        placed = self._pools.get(pool.key)
        if placed is None:
            return None
        report = {"cluster": placed.cluster, **placed.status}
        if placed.error:
            report["message"] = placed.error
        return report

    # ------------------------------------------------------------ what the platform reads

    def placed(self, key: str) -> bool:
        return key in self._services or key in self._shares

    def service_report(self, key: str, desired: int) -> dict[str, Any] | None:
        """Status of a service placed on a cluster, from its custom resource's status; None if not placed."""
        placed = self._services.get(key)
        if placed is None:
            return None
        status = placed.status
        ready = int(status.get("readyReplicas") or 0)
        report: dict[str, Any] = {"cluster": placed.cluster, "replicas": desired, "readyReplicas": ready}
        if placed.error:
            reason, message = "ClusterError", placed.error
            report.update(phase="Pending" if desired else "ScaledToZero", message=message)
            report["conditions"] = [_condition("Ready", False, reason, message)]
        elif not status.get("conditions"):
            message = f"waiting for the kgpu operator in cluster {placed.cluster} to report"
            report.update(phase="Progressing" if desired else "ScaledToZero", message=message)
            report["conditions"] = [_condition("Ready", desired == 0, "WaitingForOperator", message)]
        else:
            report.update(
                phase=status.get("phase", "Progressing"),
                message=status.get("message", ""),
                conditions=status["conditions"],
            )
            if status.get("gpu"):
                report["gpu"] = status["gpu"]
        return report

    def ready_replicas(self, key: str) -> int | None:
        if not self.placed(key):
            return None
        return sum(self.share_ready(key, cluster_key) for cluster_key in self.share_clusters(key))

    def replicas(self, key: str | None = None) -> list[ReplicaStatus]:
        return []  # the cluster's pods: `kubectl get pods -l kgpu.dev/service=NAME`

    def services(self) -> list[str]:
        return sorted({*self._services, *self._shares})

    def log_path(self, replica: str) -> Path:
        raise FileNotFoundError(f"{replica}: logs of a cluster's pods: kubectl logs")

    async def shutdown(self) -> None:
        """Nothing to stop: the cluster keeps serving, and a restarted control plane adopts its resources."""


def _condition(kind: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
    return {"type": kind, "status": "True" if ok else "False", "reason": reason, "message": message}


def _describe(exc: Exception) -> str:
    if isinstance(exc, _api_exception()):
        return f"{exc.status} {exc.reason}".strip() + (f": {_api_message(exc)}" if _api_message(exc) else "")
    return f"{type(exc).__name__}: {exc}"


def _api_exception() -> type[Exception]:
    """The client's ApiException, imported on first use: the control plane always builds this backend,
    but an embedded platform with no Kubernetes cluster should not load the client (about half a second
    at start-up, and a package a machine serving models locally need not have)."""
    try:
        from kubernetes.client.exceptions import ApiException
    except ImportError:  # without the client no call raised one; match nothing
        return _NoClientError
    return ApiException


class _NoClientError(Exception):
    """Never raised: what `_api_exception` gives when the Kubernetes client is not installed."""


def _api_message(exc: ApiException) -> str:
    import json

    try:
        return str(json.loads(exc.body or "{}").get("message") or "")
    except (ValueError, AttributeError):
        return ""
