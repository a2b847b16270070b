"""Project quotas: GPUs, and CPU, memory and replicas with Kubernetes ResourceQuota semantics.

A project's `hard` limits use ResourceQuota's names: `requests.cpu`, `requests.memory` (the sum
of what the project's replicas request) and `count/replicas` (how many replicas it may run).
A service counts the most replicas it may run (`autoscaling.maxReplicas` when it autoscales,
else `replicas`) times what one replica requests; a replica without a cpu or memory request
counts the default the local backend reserves for it (what a LimitRange default gives a pod),
so that a service cannot escape a quota by declaring nothing. A write that would take the
project past a limit is refused at admission (422 naming the field), as the API server refuses
a pod past its namespace's quota; nothing already running changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kgpu.api.errors import FieldError
from kgpu.api.models import InferenceService
from kgpu.api.quantity import QuantityError, parse_quantity

REQUESTS_CPU = "requests.cpu"
REQUESTS_MEMORY = "requests.memory"
COUNT_REPLICAS = "count/replicas"
HARD_KEYS = (REQUESTS_CPU, REQUESTS_MEMORY, COUNT_REPLICAS)
# The largest quota values the API takes (the database holds 64-bit integers).
MAX_CPU_MILLI = 10**12
MAX_MEMORY_BYTES = 2**62
MAX_REPLICAS = 2**31 - 1


@dataclass(frozen=True)
class HardLimits:
    """A project's CPU, memory and replica limits; None: not limited."""

    cpu_milli: int | None = None
    memory_bytes: int | None = None
    replicas: int | None = None

    @classmethod
    def parse(cls, hard: dict[str, object]) -> tuple[HardLimits, list[FieldError]]:
        """The limits in a `hard` map, or field errors naming each bad entry."""
        errors: list[FieldError] = []
        values: dict[str, int] = {}
        for key, value in hard.items():
            path = f"hard[{key}]"
            if key not in HARD_KEYS:
                supported = ", ".join(f'"{k}"' for k in HARD_KEYS)
                errors.append(FieldError(path, f"Unsupported value: supported values: {supported}"))
                continue
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                errors.append(FieldError(path, 'must be a quantity: a string like "8", "500m" or "16Gi"'))
                continue
            try:
                amount = parse_quantity(value)
            except QuantityError as exc:
                errors.append(FieldError(path, f'Invalid value: "{value}": {exc}'))
                continue
            scale, most = {
                REQUESTS_CPU: (1000, MAX_CPU_MILLI),
                REQUESTS_MEMORY: (1, MAX_MEMORY_BYTES),
                COUNT_REPLICAS: (1, MAX_REPLICAS),
            }[key]
            scaled = amount * scale
            if scaled < 0 or scaled > most or (key == COUNT_REPLICAS and scaled != int(scaled)):
                errors.append(
                    FieldError(path, f'Invalid value: "{value}": must be a whole amount in 0..{most}')
                )
                continue
            values[key] = int(scaled)
        limits = cls(values.get(REQUESTS_CPU), values.get(REQUESTS_MEMORY), values.get(COUNT_REPLICAS))
        return limits, errors

    def to_hard(self) -> dict[str, str]:
        hard = {}
        if self.cpu_milli is not None:
            hard[REQUESTS_CPU] = _cpu_text(self.cpu_milli)
        if self.memory_bytes is not None:
            hard[REQUESTS_MEMORY] = _memory_text(self.memory_bytes)
        if self.replicas is not None:
            hard[COUNT_REPLICAS] = str(self.replicas)
        return hard


def _cpu_text(milli: int) -> str:
    whole, rest = divmod(milli, 1000)
    return f"{milli}m" if rest else str(whole)


def _memory_text(amount: int) -> str:
    for suffix, size in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if amount and amount % size == 0:
            return f"{amount // size}{suffix}"
    return str(amount)


@dataclass(frozen=True)
class Usage:
    gpus: int = 0
    cpu_milli: int = 0
    memory_bytes: int = 0
    replicas: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.gpus + other.gpus,
            self.cpu_milli + other.cpu_milli,
            self.memory_bytes + other.memory_bytes,
            self.replicas + other.replicas,
        )


def usage_of(service: InferenceService) -> Usage:
    """What a service counts against its project's quota at its most replicas."""
    spec = service.spec
    replicas = spec.autoscaling.max_replicas if spec.autoscaling else spec.replicas
    request = service.gpu_request()
    gpus = request[1] if request is not None else 0
    cpu_milli, memory_bytes = spec.resources.cpu_memory_request()
    return Usage(replicas * gpus, replicas * cpu_milli, replicas * memory_bytes, replicas)


class ProjectQuota:
    """What `quota_check` reads of a project (kgpu.controlplane.auth.Project)."""

    gpu_quota: int | None
    hard: HardLimits


def quota_check(
    project_of: Callable[[str], ProjectQuota | None], services: Callable[[], list[InferenceService]]
):
    """An admission check: a service must fit in its project's quotas together with the others."""

    def check(resource: object) -> list[FieldError]:
        if not isinstance(resource, InferenceService):
            return []
        namespace, name = resource.metadata.namespace, resource.metadata.name
        project = project_of(namespace)
        if project is None:
            return []
        hard = project.hard
        limits = (
            ("GPU", "gpus", project.gpu_quota, str),
            (REQUESTS_CPU, "cpu_milli", hard.cpu_milli, _cpu_text),
            (REQUESTS_MEMORY, "memory_bytes", hard.memory_bytes, _memory_text),
            (COUNT_REPLICAS, "replicas", hard.replicas, str),
        )
        if all(limit is None for _, _, limit, _ in limits):
            return []
        requested = usage_of(resource)
        in_use = sum(
            (
                usage_of(s)
                for s in services()
                if s.metadata.namespace == namespace and s.metadata.name != name
            ),
            Usage(),
        )
        path = "spec.autoscaling.maxReplicas" if resource.spec.autoscaling else "spec.replicas"
        errors = []
        for what, attr, limit, text in limits:
            wanted, used = getattr(requested, attr), getattr(in_use, attr)
            if limit is None or wanted == 0 or wanted + used <= limit:
                continue
            noun = "GPU quota" if what == "GPU" else f"quota {what}"
            errors.append(
                FieldError(
                    path,
                    f'exceeds project "{namespace}" {noun}: {text(wanted)} requested + {text(used)} in use '
                    f"> {text(limit)}",
                )
            )
        return errors

    return check
