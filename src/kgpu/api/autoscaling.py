"""Autoscaling settings of one InferenceService (``spec.autoscaling``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from kgpu.api.errors import FieldError, invalid, raise_field_errors

Policy = Literal["kgpu", "kpa", "hpa"]
# What one replica's load is: requests in flight at the gateway (any runtime), or, for a generation runtime,
# the sequences its engine runs plus those waiting to join the running batch (a request's real cost there).
Metric = Literal["concurrency", "sequences"]
# Replicas of one service: far above one cluster's GPUs, low enough that no request can make work unbounded.
MAX_REPLICAS = 10_000


class AutoscalingSpec(BaseModel):
    """Replica autoscaling of one service; camelCase in YAML/JSON like every kgpu resource.

    Defaults are Knative's (KPA) and Kubernetes' (HPA) so that a policy behaves as users
    of those systems expect. ``target`` is requests in flight per replica (``metric: concurrency``)
    or running plus waiting sequences per replica (``metric: sequences``, generation runtimes);
    the autoscaler aims at ``target * targetUtilization``.
    """

    model_config = ConfigDict(
        extra="forbid",
        strict=True,  # like every kgpu resource: "3" is not a number
        allow_inf_nan=False,  # JSON cannot store them: the store would write null
        populate_by_name=True,
        serialize_by_alias=True,
        alias_generator=to_camel,
    )

    policy: Policy = "kgpu"
    metric: Metric = "concurrency"
    min_replicas: int = Field(0, ge=0, le=MAX_REPLICAS)
    max_replicas: int = Field(10, ge=1, le=MAX_REPLICAS)
    target: float = Field(100.0, gt=0)
    target_utilization: float = Field(0.7, gt=0, le=1)
    stable_window_seconds: float = Field(60.0, ge=6, le=3600)
    panic_window_percentage: float = Field(10.0, ge=1, le=100)
    panic_threshold_percentage: float = Field(200.0, gt=100, le=1000)
    max_scale_up_rate: float = Field(1000.0, gt=1)
    max_scale_down_rate: float = Field(2.0, gt=1)
    scale_to_zero_idle_seconds: float = Field(30.0, ge=0)
    scale_down_stabilization_seconds: float = Field(300.0, ge=0)  # remembered up to an hour
    tolerance: float = Field(0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _cross_field_rules(self) -> AutoscalingSpec:
        errors: list[FieldError] = []
        if self.max_replicas < self.min_replicas:
            errors.append(
                invalid("maxReplicas", self.max_replicas, f"must be >= minReplicas ({self.min_replicas})")
            )
        raise_field_errors(errors)
        return self

    @property
    def target_per_replica(self) -> float:
        """The concurrency per replica the autoscaler steers to (Knative: max(0.01, total * utilization))."""
        return max(0.01, self.target * self.target_utilization)

    @property
    def panic_window_seconds(self) -> float:
        return self.stable_window_seconds * self.panic_window_percentage / 100.0

    @property
    def panic_threshold(self) -> float:
        return self.panic_threshold_percentage / 100.0

    def clamp(self, replicas: int) -> int:
        """Never below minReplicas, never above maxReplicas."""
        return max(self.min_replicas, min(self.max_replicas, replicas))
