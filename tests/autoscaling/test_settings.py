from __future__ import annotations

import pytest
from pydantic import ValidationError

from kgpu.api.autoscaling import AutoscalingSpec
from kgpu.autoscaling.context import MAX_SAMPLES_KEPT_S, SAMPLES_KEPT_S, samples_kept_s


def test_camel_case_fields_and_derived_values():
    spec = AutoscalingSpec.model_validate(
        {
            "minReplicas": 1,
            "maxReplicas": 4,
            "target": 10,
            "stableWindowSeconds": 30,
            "panicWindowPercentage": 20,
        }
    )
    assert (spec.min_replicas, spec.max_replicas) == (1, 4)
    assert spec.target_per_replica == pytest.approx(7.0)
    assert spec.panic_window_seconds == pytest.approx(6.0)
    assert spec.model_dump()["scaleToZeroIdleSeconds"] == 30.0


def test_max_below_min_names_the_field():
    with pytest.raises(ValidationError, match=r"maxReplicas: Invalid value: 2: must be >= minReplicas \(3\)"):
        AutoscalingSpec(min_replicas=3, max_replicas=2)


@pytest.mark.parametrize(
    ("field", "value"),
    [("targetUtilization", 1.5), ("minReplicas", -1), ("policy", "rps"), ("stableWindowSeconds", 1)],
)
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ValidationError) as info:
        AutoscalingSpec.model_validate({field: value})
    assert field in str(info.value)


def test_unknown_field_is_an_error():
    with pytest.raises(ValidationError, match="scaleToZero"):
        AutoscalingSpec.model_validate({"scaleToZero": True})


def test_clamp_keeps_within_min_and_max():
    spec = AutoscalingSpec(min_replicas=2, max_replicas=5)
    assert [spec.clamp(n) for n in (0, 3, 9)] == [2, 3, 5]


def test_samples_are_kept_for_the_longest_window_up_to_an_hour():
    assert samples_kept_s(AutoscalingSpec()) == SAMPLES_KEPT_S  # short windows: the default
    assert samples_kept_s(AutoscalingSpec(scale_down_stabilization_seconds=1200)) == 1200
    assert samples_kept_s(AutoscalingSpec(stable_window_seconds=3600)) == 3600
    # Longer memories still load (a service stored with one keeps working) and remember an hour.
    assert samples_kept_s(AutoscalingSpec(scale_down_stabilization_seconds=86400)) == MAX_SAMPLES_KEPT_S
