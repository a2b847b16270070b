"""kgpu resources as pydantic models: InferenceService, NodePool and Cluster.

Fields are snake_case in Python and camelCase in YAML/JSON. Unknown fields are
errors. Every rule is checked here, once; rules that span fields raise
FieldErrors with paths relative to the model so io.py can report full paths.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from kgpu import API_VERSION
from kgpu.api.autoscaling import MAX_REPLICAS, AutoscalingSpec
from kgpu.api.errors import FieldError, forbidden, invalid, raise_field_errors, required, unsupported
from kgpu.api.model_uri import model_uri_problem
from kgpu.api.names import (
    dns1123_label_problems,
    dns1123_subdomain_problems,
    label_key_problems,
    label_value_problems,
)
from kgpu.api.quantity import QuantityError, parse_quantity
from kgpu.api.resources import check_resource_requirements, cpu_memory_request, gpu_request
from kgpu.api.runtime_presets import PRESETS
from kgpu.api.sharing import sharing_errors
from kgpu.gpu.catalog import (
    get_model,
    mig_profile_of_resource,
    model_names,
    vendor_display_name,
    vendor_for_resource_domain,
)
from kgpu.gpu.flavors import all_flavors, catalog_price_per_gpu_hour, get_flavor


def _quantity_input(value: Any) -> str | int | float:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise PydanticCustomError(
            "quantity_type", 'must be a quantity: a string like "500m" or "4Gi", or a number'
        )
    return value


# Accepts YAML numbers as well as strings; floats are normalized away by the resource rules.
QuantityValue = Annotated[
    str | int | float, PlainValidator(_quantity_input, json_schema_input_type=str | int)
]


# Upper bounds, so that no value can ask the platform for unbounded work (Kubernetes caps counts at int32).
INT32_MAX = 2**31 - 1
MAX_NODES = 10_000
ANNOTATIONS_MAX_BYTES = 256 * 1024


class KgpuModel(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,  # "3" is not an integer and 1 is not a string, as in the API server
        allow_inf_nan=False,  # JSON cannot store them: the store would write null
        populate_by_name=True,
        serialize_by_alias=True,
        alias_generator=to_camel,
    )


def _label_errors(labels: dict[str, str]) -> list[FieldError]:
    errors = []
    for key, value in labels.items():
        errors.extend(invalid("", key, problem) for problem in label_key_problems(key))
        errors.extend(invalid("", value, problem) for problem in label_value_problems(value))
    return errors


def object_key(namespace: str, name: str) -> str:
    """The "<namespace>/<name>" key of a resource: how backends, the gateway and the status name it."""
    return f"{namespace}/{name}"


def replica_name(namespace: str, service_name: str, index: int) -> str:
    """The machine-wide name of a service's replica on one machine: `minilm-0.team-a`.

    Every project shares the machine, so the name carries the namespace: it keys the replica's
    log file, its devices and its metrics' labels, and two projects' services of the same name
    must share none of them. A dot occurs in no name or namespace (DNS labels), so no two
    services' replica names are equal. The `default` namespace keeps the plain `minilm-0`.
    """
    base = f"{service_name}-{index}"
    return base if namespace == "default" else f"{base}.{namespace}"


def replica_index(name: str) -> int:
    """The ordinal of a StatefulSet-style name (`minilm-3` or `minilm-3.team-a` -> 3; none sorts first)."""
    tail = name.partition(".")[0].rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


class ObjectMeta(KgpuModel):
    name: str
    namespace: str = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        return object_key(self.namespace, self.name)

    @field_validator("name", "namespace")
    @classmethod
    def _dns_label(cls, value: str, info: ValidationInfo) -> str:
        if not value:
            detail = "name or generateName is required" if info.field_name == "name" else ""
            raise_field_errors([required("", detail)])
        raise_field_errors([invalid("", value, p) for p in dns1123_label_problems(value)])
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        raise_field_errors(_label_errors(value))
        return value

    @field_validator("annotations")
    @classmethod
    def _annotations(cls, value: dict[str, str]) -> dict[str, str]:
        # Kubernetes' TotalAnnotationSizeLimitB: the same file must apply to a real cluster too.
        size = sum(len(k.encode()) + len(v.encode()) for k, v in value.items())
        if size > ANNOTATIONS_MAX_BYTES:
            raise_field_errors([FieldError("", f"Too long: must have at most {ANNOTATIONS_MAX_BYTES} bytes")])
        return value


# ---------------------------------------------------------------- InferenceService


class ModelSpec(KgpuModel):
    uri: str
    # What the replica serves; auto: text generation for a causal language model directory, embeddings otherwise.
    task: Literal["auto", "embedding", "generation"] = "auto"

    @field_validator("uri")
    @classmethod
    def _local_only(cls, value: str) -> str:
        if not value.strip():
            raise_field_errors([required("", "a local path, file:// URI or pkg:<python_package> URI")])
        problem = model_uri_problem(value)
        if problem:
            raise_field_errors([invalid("", value, problem)])
        return value


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A path kgpu requests on the replica's own port: printable ASCII, no spaces or control characters
# (a CR or LF would not make a request at all, and would fail every other replica's scrape with it).
_HTTP_PATH = re.compile(r"/[!-~]*")
# Variables kgpu sets for every replica; a service's env may not replace them.
RESERVED_ENV = frozenset(
    {"PORT", "MODEL_PATH", "SERVED_MODEL_NAME", "KGPU_HOST", "KGPU_DEVICE", "KGPU_REPLICA", "POD_NAME"}
)


class RuntimeSpec(KgpuModel):
    # kgpu: kgpu's own replica (embeddings or generation, from the model); command: any server
    # process (`command` and `args`, or a `preset`); image: a container running it (Kubernetes only).
    kind: Literal["kgpu", "command", "image"] = "kgpu"
    # A known server's command line and readiness path (kgpu.api.runtime_presets, docs/runtimes.md).
    preset: str | None = None
    command: list[str] = Field(default_factory=list, max_length=64)
    args: list[str] = Field(default_factory=list, max_length=256)
    env: dict[str, str] = Field(default_factory=dict)
    image: str | None = Field(None, max_length=512)
    # The server learns its port from $PORT, and also from this flag when set ("--port" -> "--port 8000").
    port_flag: str | None = Field(None, max_length=64)
    # Answers 200 once the model is loaded; the preset's, or /health for a command.
    readiness_path: str | None = Field(None, max_length=256)
    # Where the server serves Prometheus metrics (the preset's; none for a command without it): kgpu
    # scrapes it and serves the series on its own /metrics with the service's labels.
    metrics_path: str | None = Field(None, max_length=256)
    # What the gateway may send it: OpenAI's API or the Open Inference Protocol v2.
    protocol: Literal["openai", "v2"] | None = None
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    max_batch_tokens: int = Field(16384, ge=1, le=INT32_MAX)
    max_batch_size: int = Field(256, ge=1, le=65536)
    max_queue: int = Field(1024, ge=1, le=1_000_000)  # requests waiting for the engine
    max_inputs: int = Field(2048, ge=1, le=65536)  # inputs in one request
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Batches a replica computes at once; unset: min(4, cores) on CPU, 1 on GPU (kgpu.serving.engine).
    engine_workers: int | None = Field(None, ge=1, le=64)
    # Generation: the paged KV cache's size (a quantity of bytes, e.g. "2Gi"); unset: 512Mi at most on CPU,
    # 90% of the GPU memory free after loading. When it is full, new sequences wait for room.
    kv_cache_memory: QuantityValue | None = None
    # Generation: most prompt tokens one step takes (longer prompts are prefilled in chunks beside decodes).
    prefill_chunk_tokens: int | None = Field(None, ge=16, le=1_048_576)

    @field_validator("kv_cache_memory")
    @classmethod
    def _kv_cache_bytes(cls, value: str | int | float | None) -> str | int | float | None:
        if value is not None:
            try:
                amount = parse_quantity(value)
            except QuantityError as exc:
                raise_field_errors([invalid("", value, str(exc))])
            if amount < 1024**2:
                raise_field_errors([invalid("", value, "must be at least 1Mi (bytes of KV cache)")])
        return value

    @model_validator(mode="after")
    def _runtime_kind_rules(self) -> RuntimeSpec:
        errors: list[FieldError] = []
        if self.preset is not None:
            if self.preset not in PRESETS:
                errors.append(unsupported("preset", self.preset, sorted(PRESETS)))
            if self.kind == "kgpu":
                self.kind = "command"  # a preset names a server other than kgpu's own
        if self.kind == "kgpu":
            for name in (
                "command", "args", "env", "image", "port_flag", "readiness_path", "metrics_path", "protocol",
            ):  # fmt: skip
                if getattr(self, name):
                    errors.append(forbidden(to_camel(name), "may only be set when kind is command or image"))
        elif self.kind == "command" and not self.command and self.preset is None:
            errors.append(required("command", "a command runtime needs a command or a preset"))
        if self.kind == "image" and not self.image:
            errors.append(required("image", "an image runtime names its container image"))
        if self.kind == "command" and self.image:
            errors.append(forbidden("image", "may only be set when kind is image"))
        for key in self.env:
            if not _ENV_NAME.match(key):
                errors.append(invalid(f"env.{key}", key, "must be a C identifier ([A-Za-z_][A-Za-z0-9_]*)"))
            elif key in RESERVED_ENV:
                errors.append(forbidden(f"env.{key}", "is set by kgpu for every replica"))
        for field, path, example in (
            ("readinessPath", self.readiness_path, "/health"),
            ("metricsPath", self.metrics_path, "/metrics"),
        ):
            if path is not None and not _HTTP_PATH.fullmatch(path):
                errors.append(
                    invalid(field, path, f"must be an absolute path of printable ASCII, e.g. {example}")
                )
        raise_field_errors(errors)
        return self

    @property
    def kv_cache_bytes(self) -> int | None:
        return None if self.kv_cache_memory is None else int(parse_quantity(self.kv_cache_memory))


class ResourceRequirements(KgpuModel):
    requests: dict[str, QuantityValue] = Field(default_factory=dict)
    limits: dict[str, QuantityValue] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _kubernetes_rules(self) -> ResourceRequirements:
        errors, self.requests, self.limits = check_resource_requirements(self.requests, self.limits)
        raise_field_errors(errors)
        return self

    def gpu_request(self) -> tuple[str, int] | None:
        return gpu_request(self.requests, self.limits)

    def cpu_memory_request(self) -> tuple[int, int]:
        """(milli-CPU, bytes) one replica requests (defaults when none are declared)."""
        return cpu_memory_request(self.requests, self.limits)


MAX_PLACEMENT_CLUSTERS = 64


class ClusterSelector(KgpuModel):
    # Clusters whose metadata.labels hold every pair (region, provider, spot, ...).
    match_labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("match_labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        raise_field_errors(_label_errors(value))
        return value


class PlacementSpec(KgpuModel):
    """The clusters a service may run in, and how its replicas are split over them.

    The clusters are those `clusters` names, in that order, then those `clusterSelector` matches
    (by name); `failover` goes down that order. Without `spec.placement` a service runs in one
    cluster (the kgpu.dev/cluster annotation's, or the control plane's own).
    """

    clusters: list[str] = Field(default_factory=list, max_length=MAX_PLACEMENT_CLUSTERS)
    cluster_selector: ClusterSelector | None = None
    # fill: cheapest cluster (price per GPU-hour) with room first; spread: balanced over the
    # clusters; failover: all in the first available cluster, the next ones as backups. Each is a
    # rule of kgpu.multicluster.placement.PLACEMENT_POLICIES (a test keeps the two lists equal).
    policy: Literal["fill", "spread", "failover"] = "spread"

    @model_validator(mode="after")
    def _placement_rules(self) -> PlacementSpec:
        errors: list[FieldError] = []
        seen: set[str] = set()
        for i, name in enumerate(self.clusters):
            problems = dns1123_label_problems(name) if name else ["must not be empty"]
            errors.extend(invalid(f"clusters[{i}]", name, problem) for problem in problems)
            if name in seen:
                errors.append(FieldError(f"clusters[{i}]", f'Duplicate value: "{name}"'))
            seen.add(name)
        if not self.clusters and (self.cluster_selector is None or not self.cluster_selector.match_labels):
            errors.append(required("clusters", "name the clusters, or give clusterSelector.matchLabels"))
        raise_field_errors(errors)
        return self


class InferenceServiceSpec(KgpuModel):
    model: ModelSpec
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    # Fixed replica count; with `autoscaling` set it is only the starting point and the
    # autoscaler decides between autoscaling.minReplicas and autoscaling.maxReplicas.
    replicas: int = Field(1, ge=0, le=MAX_REPLICAS)
    autoscaling: AutoscalingSpec | None = None
    gpu_models: list[str] = Field(default_factory=list)
    # Knative's containerConcurrency: the most requests the gateway keeps in flight on one
    # replica; more wait in the gateway's queue (earliest deadline first). 0: no limit, the
    # replica's own queue (runtime.maxQueue) bounds it.
    container_concurrency: int = Field(0, ge=0, le=1_000_000)
    # Several clusters as one: which clusters, and the policy that splits the replicas over them.
    placement: PlacementSpec | None = None

    @model_validator(mode="after")
    def _cross_field_rules(self) -> InferenceServiceSpec:
        errors = []
        errors.extend(self._gpu_model_errors())
        raise_field_errors(errors)
        return self

    def _gpu_model_errors(self) -> list[FieldError]:
        errors = []
        gpu = self.gpu_request()
        for i, name in enumerate(self.gpu_models):
            path = f"gpuModels[{i}]"
            try:
                model = get_model(name)
            except KeyError:
                errors.append(unsupported(path, name, model_names()))
                continue
            self.gpu_models[i] = model.name  # the catalog's spelling
            if gpu is None:
                continue
            resource, _ = gpu
            profile = mig_profile_of_resource(resource)
            if vendor_for_resource_domain(resource) != model.vendor:
                errors.append(
                    invalid(
                        path,
                        name,
                        f"is made by {vendor_display_name(model.vendor)} but resources ask for {resource}",
                    )
                )
            elif profile is not None and profile not in {p.name for p in model.mig_profiles}:
                errors.append(
                    invalid(path, name, f"has no MIG profile {profile} (resources ask for {resource})")
                )
        return errors

    def gpu_request(self) -> tuple[str, int] | None:
        """(resource name, count) of the GPU resource this service asks for, or None for CPU-only."""
        return self.resources.gpu_request()


class InferenceService(KgpuModel):
    api_version: Literal["kgpu.dev/v1alpha1"] = API_VERSION
    kind: Literal["InferenceService"] = "InferenceService"
    metadata: ObjectMeta
    spec: InferenceServiceSpec
    status: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return self.metadata.key

    def gpu_request(self) -> tuple[str, int] | None:
        return self.spec.gpu_request()

    @model_validator(mode="after")
    def _one_way_to_name_clusters(self) -> InferenceService:
        if self.spec.placement is not None and CLUSTER_ANNOTATION in self.metadata.annotations:
            raise_field_errors(
                [
                    forbidden(
                        f"metadata.annotations[{CLUSTER_ANNOTATION}]",
                        "may not be set together with spec.placement (list the cluster in "
                        "spec.placement.clusters)",
                    )
                ]
            )
        return self

    def template_hash(self) -> str:
        """A short hash of what a replica is made from; a replica of another template gets replaced.

        Scaling (replicas, autoscaling) and placement hints outside the template do not change it.
        """
        spec = self.spec.model_dump_json(include=TEMPLATE_FIELDS)
        return hashlib.sha256(spec.encode()).hexdigest()[:10]


# The spec fields a replica is made from (their change rolls the replicas).
TEMPLATE_FIELDS = {"model", "runtime", "resources", "gpu_models"}


# ---------------------------------------------------------------- NodePool


class Flavor(KgpuModel):
    # A flavor name from the catalog (src/kgpu/gpu/flavors.yaml) fills the fields below that are not given.
    name: str | None = None
    kind: Literal["vm", "bare-metal"] | None = None
    gpu_model: str | None = None
    gpu_count: int = Field(0, ge=0, le=64)
    cpu: QuantityValue | None = None
    memory: QuantityValue | None = None
    # USD per GPU per hour: what placement across clusters (policy fill) and the fleet replay
    # compare. Unset: the named flavor's catalog price, else the catalog's lowest for gpuModel.
    price_per_gpu_hour: float | None = Field(None, ge=0, le=1_000_000)

    @model_validator(mode="after")
    def _flavor_rules(self) -> Flavor:
        errors = []
        if self.name is not None:
            try:
                named = get_flavor(self.name)
            except KeyError:
                raise_field_errors([unsupported("name", self.name, sorted(all_flavors()))])
            self.kind = self.kind or named.kind
            if self.gpu_model is None and self.gpu_count == 0:
                self.gpu_model, self.gpu_count = named.gpu_model, named.gpu_count
            self.cpu = self.cpu if self.cpu is not None else named.cpu
            self.memory = self.memory if self.memory is not None else named.memory
            if self.price_per_gpu_hour is None and self.gpu_model == named.gpu_model:
                self.price_per_gpu_hour = named.price_per_gpu_hour
        if self.gpu_model is not None:
            try:
                self.gpu_model = get_model(self.gpu_model).name  # the catalog's spelling
                if self.price_per_gpu_hour is None:
                    self.price_per_gpu_hour = catalog_price_per_gpu_hour(self.gpu_model)
            except KeyError:
                errors.append(unsupported("gpuModel", self.gpu_model, model_names()))
            if self.gpu_count == 0:
                errors.append(invalid("gpuCount", 0, "must be at least 1 when gpuModel is set"))
        elif self.gpu_count > 0:
            errors.append(
                required("gpuModel", "gpuCount > 0 needs the GPU model (one of the catalog's names)")
            )
        for field in ("cpu", "memory"):
            value = getattr(self, field)
            if value is None:
                continue
            try:
                parse_quantity(value)
            except QuantityError as exc:
                errors.append(invalid(field, value if isinstance(value, str) else repr(value), str(exc)))
        raise_field_errors(errors)
        return self


class Taint(KgpuModel):
    key: str
    value: str = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"


class Sharing(KgpuModel):
    mode: Literal["exclusive", "time-slicing", "mps", "mig"] = "exclusive"
    replicas: int | None = Field(None, le=INT32_MAX)  # clients per GPU, time-slicing and mps only
    mig_layout: dict[str, int] | None = None  # profile -> count per GPU, mig only


class NodePoolSpec(KgpuModel):
    flavor: Flavor
    min_nodes: int = Field(0, ge=0, le=MAX_NODES)
    max_nodes: int = Field(1, ge=0, le=MAX_NODES)
    labels: dict[str, str] = Field(default_factory=dict)
    taints: list[Taint] = Field(default_factory=list)
    sharing: Sharing = Field(default_factory=Sharing)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        raise_field_errors(_label_errors(value))
        return value

    @model_validator(mode="after")
    def _pool_rules(self) -> NodePoolSpec:
        errors = []
        if self.min_nodes > self.max_nodes:
            errors.append(invalid("minNodes", self.min_nodes, "must be less than or equal to maxNodes"))
        sharing = self.sharing
        errors.extend(
            sharing_errors(sharing.mode, sharing.replicas, sharing.mig_layout, self.flavor.gpu_model)
        )
        raise_field_errors(errors)
        return self


class NodePool(KgpuModel):
    api_version: Literal["kgpu.dev/v1alpha1"] = API_VERSION
    kind: Literal["NodePool"] = "NodePool"
    metadata: ObjectMeta
    spec: NodePoolSpec
    status: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return self.metadata.key


# ---------------------------------------------------------------- Cluster


class ClusterSpec(KgpuModel):
    backend: Literal["local", "kubernetes", "sim"] = "local"
    version: str | None = None
    kube_context: str | None = None  # kubeconfig context, kubernetes backend only
    # Kubeconfig file on the control plane's machine (kubernetes backend only). Neither this nor
    # kubeContext: the cluster the control plane runs in (or the default kubeconfig outside one).
    kubeconfig: str | None = Field(None, max_length=4096)
    # A kubeconfig the control plane stores (kgpu.controlplane.kubeconfigs), by name in the Cluster's
    # namespace: the credentials themselves, where `kubeconfig` names a file on the server.
    kubeconfig_secret: str | None = Field(None, max_length=63)
    autoscaler: dict[str, str] = Field(default_factory=dict)  # cluster-autoscaler style flags
    # The DNS domain under which the control plane's gateway reaches this cluster's Services
    # (kubernetes backend only): a multi-cluster service mesh's, e.g. `clusterset.local` (Kubernetes
    # Multi-Cluster Services). The gateway then routes a service's requests to
    # <name>.<namespace>.svc.<serviceDomain> while the cluster has ready replicas of it.
    service_domain: str | None = Field(None, max_length=253)

    @field_validator("service_domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        if value is not None:
            raise_field_errors([invalid("", value, p) for p in dns1123_subdomain_problems(value)])
        return value

    @model_validator(mode="after")
    def _context_only_for_kubernetes(self) -> ClusterSpec:
        settings = (
            ("kubeContext", self.kube_context),
            ("kubeconfig", self.kubeconfig),
            ("kubeconfigSecret", self.kubeconfig_secret),
            ("serviceDomain", self.service_domain),
        )
        if self.backend != "kubernetes":
            raise_field_errors(
                [
                    forbidden(field, "may only be set when backend is kubernetes")
                    for field, value in settings
                    if value is not None
                ]
            )
        if self.kubeconfig is not None and self.kubeconfig_secret is not None:
            raise_field_errors([forbidden("kubeconfigSecret", "may not be set together with kubeconfig")])
        return self


class Cluster(KgpuModel):
    api_version: Literal["kgpu.dev/v1alpha1"] = API_VERSION
    kind: Literal["Cluster"] = "Cluster"
    metadata: ObjectMeta
    spec: ClusterSpec = Field(default_factory=ClusterSpec)
    status: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return self.metadata.key


Resource = InferenceService | NodePool | Cluster
# Names the Cluster (same namespace) that runs a service or pool; without it, the control plane's own.
CLUSTER_ANNOTATION = "kgpu.dev/cluster"
RESOURCE_KINDS: dict[str, type[InferenceService] | type[NodePool] | type[Cluster]] = {
    "Cluster": Cluster,
    "InferenceService": InferenceService,
    "NodePool": NodePool,
}
