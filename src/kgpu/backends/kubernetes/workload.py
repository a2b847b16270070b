"""InferenceService -> Deployment (its replicas' containers rendered from their ``ReplicaSpec``), Service, PodDisruptionBudget, ServiceMonitor.

Pure functions: the same service and settings always give the same manifests, so the operator can
apply them level-triggered and tests can compare them exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kgpu import __version__
from kgpu.api.model_uri import PVC_URI
from kgpu.api.models import InferenceService
from kgpu.api.resources import is_extended_resource
from kgpu.backends.kubernetes.labels import (
    GFD_PRODUCT_LABEL,
    GPU_MODEL_LABEL,
    SERVICE_LABEL,
    gfd_product_values,
    provider_label_keys,
    provider_values,
    service_labels,
)
from kgpu.gpu.catalog import VENDOR_DOMAINS, vendor_for_resource_domain
from kgpu.serving.model_source import MODEL_CACHE_ENV
from kgpu.serving.replica_spec import ReplicaSpec, build_replica_spec

REPLICA_PORT = 8000
SERVICE_PORT = 80
METRICS_PATH = "/metrics"
DEFAULT_RUNTIME_IMAGE = f"ghcr.io/kgpu/runtime:{__version__}"
SCHEDULER_NAME = "kgpu"
# On an InferenceService: the scheduler of its replicas ("default-scheduler" opts out of kgpu's).
SCHEDULER_ANNOTATION = "kgpu.dev/scheduler-name"


@dataclass(frozen=True)
class WorkloadSettings:
    """Cluster-wide choices the operator makes for every service (from its flags / Helm values)."""

    image: str = DEFAULT_RUNTIME_IMAGE
    image_pull_policy: str = "IfNotPresent"
    # Seconds between the pod leaving the Service's endpoints and SIGTERM: kube-proxy and the
    # gateway stop sending new requests before the replica starts draining.
    pre_stop_sleep_s: int = 5
    # Seconds the replica gives in-flight requests after SIGTERM (its --graceful-timeout).
    drain_timeout_s: int = 30
    # Model loading and warm-up; the startup probe allows this long before liveness applies.
    startup_timeout_s: int = 600
    # Who places the replicas: kgpu's scheduler (deployed by the chart) unless a service names
    # another with the kgpu.dev/scheduler-name annotation; "" leaves it to the cluster's default.
    scheduler_name: str = SCHEDULER_NAME
    # A PersistentVolumeClaim holding a Hugging Face model cache (filled ahead of time, e.g. with
    # `hf download`), mounted read-only into every replica: hf:// models load from it, none is baked
    # into the image and no replica downloads. None: no cache volume.
    model_cache_claim: str | None = None

    @property
    def termination_grace_period_s(self) -> int:
        # preStop runs inside the grace period; add a margin for the batcher's last batch and exit.
        return self.pre_stop_sleep_s + self.drain_timeout_s + 10


def owner_reference(resource: dict[str, Any]) -> dict[str, Any]:
    """ownerReference to a custom resource as read from the API server (needs metadata.uid)."""
    return {
        "apiVersion": resource["apiVersion"],
        "kind": resource["kind"],
        "name": resource["metadata"]["name"],
        "uid": resource["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(isvc: InferenceService, owner: dict[str, Any] | None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": isvc.metadata.name,
        "namespace": isvc.metadata.namespace,
        "labels": {**isvc.metadata.labels, **service_labels(isvc.metadata.name)},
    }
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return meta


def _quantity(value: str | int | float) -> str:
    return value if isinstance(value, str) else str(value)


def container_resources(isvc: InferenceService) -> dict[str, dict[str, str]]:
    """Requests and limits; GPUs only in limits (the API server defaults the request to the limit)."""
    spec = isvc.spec.resources
    requests = {k: _quantity(v) for k, v in spec.requests.items() if not is_extended_resource(k)}
    limits = {k: _quantity(v) for k, v in spec.limits.items() if not is_extended_resource(k)}
    gpu = isvc.gpu_request()
    if gpu is not None:
        resource, count = gpu
        limits[resource] = str(count)
    out: dict[str, dict[str, str]] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def node_affinity(isvc: InferenceService) -> dict[str, Any] | None:
    """Nodes whose GPU is one of spec.gpuModels, by any label that names it (terms are ORed)."""
    models = isvc.spec.gpu_models
    if not models:
        return None
    by_key: dict[str, list[str]] = {GPU_MODEL_LABEL: list(models), GFD_PRODUCT_LABEL: []}
    for key in provider_label_keys():
        by_key[key] = []
    for model in models:
        by_key[GFD_PRODUCT_LABEL] += gfd_product_values(model)
        for key in provider_label_keys():
            by_key[key] += [v for v in provider_values(key, model) if v not in by_key[key]]
    terms = [
        {"matchExpressions": [{"key": key, "operator": "In", "values": values}]}
        for key, values in by_key.items()
        if values
    ]
    return {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}


def tolerations(isvc: InferenceService) -> list[dict[str, Any]]:
    """Tolerate the GPU taint GPU nodes carry (key = the vendor's GPU resource, e.g. nvidia.com/gpu)."""
    gpu = isvc.gpu_request()
    if gpu is None:
        return []
    vendor = vendor_for_resource_domain(gpu[0])
    key = f"{VENDOR_DOMAINS[vendor]}/gpu" if vendor == "nvidia" else gpu[0]
    return [{"key": key, "operator": "Exists", "effect": "NoSchedule"}]


MODELS_MOUNT = "/models"
MODEL_CACHE_MOUNT = "/models/.cache"


def model_volumes(isvc: InferenceService, settings: WorkloadSettings) -> tuple[str | None, list, list, dict]:
    """(the model URI as the replica sees it, volumes, volume mounts, env) for pvc:// and the cache.

    Both read-only: a replica reads its model and never changes what other replicas share.
    """
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    env: dict[str, str] = {}
    model_uri = None
    pvc = PVC_URI.match(isvc.spec.model.uri)
    if pvc is not None:
        claim = pvc["claim"]
        volumes.append({"name": "model", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mounts.append({"name": "model", "mountPath": f"{MODELS_MOUNT}/{claim}", "readOnly": True})
        model_uri = f"{MODELS_MOUNT}/{claim}{pvc['path'] or ''}"
    if settings.model_cache_claim:
        volumes.append(
            {
                "name": "model-cache",
                "persistentVolumeClaim": {"claimName": settings.model_cache_claim, "readOnly": True},
            }
        )
        mounts.append({"name": "model-cache", "mountPath": MODEL_CACHE_MOUNT, "readOnly": True})
        env = {MODEL_CACHE_ENV: MODEL_CACHE_MOUNT, "HF_HUB_CACHE": MODEL_CACHE_MOUNT}
    return model_uri, volumes, mounts, env


def replica_environment(
    spec: ReplicaSpec, runtime_device: str, extra: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """The container's env: the pod's name as the replica's, the fixed port, the spec's own variables.

    Listed in dependency order; the device plugin sets CUDA_VISIBLE_DEVICES for the GPUs it gives.
    """
    values = {
        **spec.defaults(runtime_device),
        **spec.environment(port=REPLICA_PORT, replica="$(POD_NAME)", device=runtime_device, host="0.0.0.0"),
    }
    values.update(extra or {})
    return [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        *({"name": name, "value": value} for name, value in values.items()),
    ]


def _probe(path: str, period_s: int, failure_threshold: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period_s,
        "timeoutSeconds": 2,
        "failureThreshold": failure_threshold,
    }


def render_deployment(
    isvc: InferenceService,
    replicas: int,
    settings: WorkloadSettings | None = None,
    owner: dict[str, Any] | None = None,
) -> dict[str, Any]:
    settings = settings or WorkloadSettings()
    name = isvc.metadata.name
    model_uri, volumes, mounts, model_env = model_volumes(isvc, settings)
    spec = build_replica_spec(isvc, drain_timeout_s=settings.drain_timeout_s, model_uri=model_uri)
    container: dict[str, Any] = {
        "name": "replica",
        "image": spec.image or settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "env": replica_environment(spec, isvc.spec.runtime.device, model_env),
        "ports": [{"name": "http", "containerPort": REPLICA_PORT, "protocol": "TCP"}],
        "startupProbe": _probe(spec.liveness_path, 5, max(1, settings.startup_timeout_s // 5)),
        "readinessProbe": _probe(spec.readiness_path, 5, 2),
        "livenessProbe": _probe(spec.liveness_path, 10, 3),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(settings.pre_stop_sleep_s)]}}},
        "resources": container_resources(isvc),
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}, *mounts],
    }
    # An image runtime without a command runs the image's own entrypoint.
    if spec.command:
        container["command"] = list(spec.command)
    if spec.args:
        container["args"] = list(spec.args)
    pod_spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": settings.termination_grace_period_s,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 1000},
        "containers": [container],
        # PyTorch uses shared memory; the container default (64 MiB) is too small.
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}, *volumes],
    }
    scheduler = isvc.metadata.annotations.get(SCHEDULER_ANNOTATION, settings.scheduler_name)
    if scheduler:
        pod_spec["schedulerName"] = scheduler
    affinity = node_affinity(isvc)
    if affinity is not None:
        pod_spec["affinity"] = {"nodeAffinity": affinity}
    toleration_list = tolerations(isvc)
    if toleration_list:
        pod_spec["tolerations"] = toleration_list
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(isvc, owner),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {SERVICE_LABEL: name}},
            # Never below the current capacity while rolling: a new replica must be ready first.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": service_labels(name),
                    # The server's own metrics path (a command runtime may serve none).
                    "annotations": {
                        "prometheus.io/scrape": "true" if spec.metrics_path else "false",
                        "prometheus.io/port": str(REPLICA_PORT),
                        "prometheus.io/path": spec.metrics_path or METRICS_PATH,
                    },
                },
                "spec": pod_spec,
            },
        },
    }


def render_service(isvc: InferenceService, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(isvc, owner),
        "spec": {
            "type": "ClusterIP",
            "selector": {SERVICE_LABEL: isvc.metadata.name},
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def render_pod_disruption_budget(
    isvc: InferenceService, owner: dict[str, Any] | None = None
) -> dict[str, Any]:
    # maxUnavailable 1 (not minAvailable) so a single-replica service never blocks a node drain,
    # while a voluntary disruption still takes down at most one replica at a time.
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(isvc, owner),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {SERVICE_LABEL: isvc.metadata.name}}},
    }


def render_service_monitor(isvc: InferenceService, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _metadata(isvc, owner),
        "spec": {
            "selector": {"matchLabels": {SERVICE_LABEL: isvc.metadata.name}},
            "endpoints": [
                {
                    "port": "http",
                    "path": build_replica_spec(isvc).metrics_path or METRICS_PATH,
                    "interval": "15s",
                }
            ],
        },
    }


def desired_replicas(isvc: InferenceService) -> int:
    """spec.replicas (moved by `kubectl scale` and kgpu's autoscaler), within the autoscaling bounds."""
    replicas = isvc.spec.replicas
    if isvc.spec.autoscaling is not None:
        replicas = isvc.spec.autoscaling.clamp(replicas)
    return replicas


def render_service_objects(
    isvc: InferenceService,
    settings: WorkloadSettings | None = None,
    owner: dict[str, Any] | None = None,
    service_monitor: bool = False,
) -> list[dict[str, Any]]:
    """Everything one InferenceService needs, in apply order."""
    objects = [
        render_deployment(isvc, desired_replicas(isvc), settings, owner),
        render_service(isvc, owner),
        render_pod_disruption_budget(isvc, owner),
    ]
    if service_monitor:
        objects.append(render_service_monitor(isvc, owner))
    return objects
