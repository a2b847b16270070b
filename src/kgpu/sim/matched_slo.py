"""Autoscalers compared at the same SLO: each policy's knobs swept, its cheapest setting that meets it kept.

Comparing GPU-hours of policies that reach different SLOs says little (a policy that drops a third
of its requests' SLOs is cheap). So for every policy the replay sweeps its main knobs on one trace,
keeps the setting with the fewest GPU-hours among those that reach the SLO target with no failed
request (`cheapest_meeting`), and judges that one setting, unchanged, on trace versions it was not
chosen on (`kgpu.sim.trace_versions`). The knobs:

- ``kpa``: target concurrency per replica x stable window (Knative's ``target`` with
  ``targetUtilization`` 1, ``stableWindow``; the panic window stays 10% of it);
- ``hpa``: target in-flight requests per replica x scale-down stabilization;
- ``kgpu``: minimum replicas (up to a whole node, 8) x scale-down stabilization (its burst memory, up
  to 30 minutes) x target per replica;
- ``static``: the replica count, searched again on every version (`kgpu.sim.replay.find_static`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping

from kgpu.api.autoscaling import AutoscalingSpec
from kgpu.sim.replay import ServiceModel, default_spec

SLO_TARGET_PCT = 99.0
KPA_TARGETS = (2.0, 4.0, 6.0, 8.0, 11.2, 16.0)
KPA_STABLE_WINDOWS_S = (30.0, 60.0, 120.0, 300.0, 600.0, 1200.0)
HPA_TARGETS = (2.0, 4.0, 6.0, 8.0, 11.2, 16.0)
HPA_STABILIZATION_S = (0.0, 60.0, 300.0, 600.0)
KGPU_MIN_REPLICAS = (3, 4, 5, 6, 8)
KGPU_STABILIZATION_S = (120.0, 300.0, 600.0, 1200.0, 1800.0)
KGPU_TARGETS = (12.0, 16.0)


def settings(policy: str, model: ServiceModel = ServiceModel()) -> dict[str, AutoscalingSpec]:
    """Every setting swept for ``policy``, by a name that spells its knobs."""
    if policy not in ("kpa", "hpa", "kgpu"):
        raise ValueError(f"no knobs to sweep for policy {policy!r}: use kpa, hpa or kgpu")
    base = default_spec(policy, model)
    out: dict[str, AutoscalingSpec] = {}
    if policy == "kpa":
        for target, window in itertools.product(KPA_TARGETS, KPA_STABLE_WINDOWS_S):
            changes = {"target": target, "target_utilization": 1.0, "stable_window_seconds": window}
            out[f"target{target:g}-window{window:g}"] = base.model_copy(update=changes)
    elif policy == "hpa":
        for target, window in itertools.product(HPA_TARGETS, HPA_STABILIZATION_S):
            changes = {
                "target": target,
                "target_utilization": 1.0,
                "scale_down_stabilization_seconds": window,
            }
            out[f"target{target:g}-stabilization{window:g}"] = base.model_copy(update=changes)
    else:
        for floor, window, target in itertools.product(KGPU_MIN_REPLICAS, KGPU_STABILIZATION_S, KGPU_TARGETS):
            changes = {"min_replicas": floor, "scale_down_stabilization_seconds": window, "target": target}
            out[f"min{floor}-hold{window:g}-target{target:g}"] = base.model_copy(update=changes)
    return out


def meets(result: Mapping, slo_target_pct: float = SLO_TARGET_PCT) -> bool:
    """The SLO target reached with no failed request."""
    return result["slo_attainment_pct"] >= slo_target_pct and result["failed_requests"] == 0


def cheapest_meeting(
    results: Mapping[str, Mapping], slo_target_pct: float = SLO_TARGET_PCT
) -> tuple[str, bool]:
    """The setting with the fewest GPU-hours among those that meet the target, and True; when none
    does, the one with the highest SLO (then fewest GPU-hours), and False."""
    meeting = [name for name, r in results.items() if meets(r, slo_target_pct)]
    if meeting:
        return min(meeting, key=lambda n: (results[n]["gpu_hours"], n)), True
    return min(results, key=lambda n: (-results[n]["slo_attainment_pct"], results[n]["gpu_hours"], n)), False


def mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0
