from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kgpu.api.io import parse_resource
from kgpu.api.models import InferenceService
from kgpu.gpu.catalog import resource_names_for_vendor
from tests.api._support import error_lines, service


def resources(**sections: dict) -> dict:
    return service(resources=sections)


def test_request_must_equal_the_gpu_limit() -> None:
    doc = resources(requests={"nvidia.com/gpu": 1}, limits={"nvidia.com/gpu": 2})
    assert error_lines(doc) == [
        'spec.resources.requests: Invalid value: "1": must be equal to nvidia.com/gpu limit of 2'
    ]


def test_gpu_request_without_limit_is_refused() -> None:
    assert error_lines(resources(requests={"nvidia.com/gpu": 1})) == [
        "spec.resources.limits: Required value: Limit must be set for non overcommitable resources"
    ]


@pytest.mark.parametrize(("value", "shown"), [(1.5, "1.5"), ("1.5", "1.5"), ("500m", "500m"), (0.5, "0.5")])
def test_gpu_quantities_must_be_integers(value: object, shown: str) -> None:
    assert error_lines(resources(limits={"nvidia.com/gpu": value})) == [
        f'spec.resources.limits[nvidia.com/gpu]: Invalid value: "{shown}": must be an integer'
    ]


def test_negative_gpu_count_is_refused() -> None:
    assert error_lines(resources(limits={"nvidia.com/gpu": -1})) == [
        'spec.resources.limits[nvidia.com/gpu]: Invalid value: "-1": must be greater than or equal to 0'
    ]


def test_typo_in_a_known_vendor_domain_lists_the_valid_names() -> None:
    (line,) = error_lines(resources(limits={"nvidia.com/gpus": 1}))
    assert line.startswith(
        'spec.resources.limits[nvidia.com/gpus]: Unsupported value: "nvidia.com/gpus": supported values: '
        '"nvidia.com/gpu", "nvidia.com/gpu.shared", "nvidia.com/mig-1g.10gb"'
    )
    for name in resource_names_for_vendor("nvidia"):
        assert f'"{name}"' in line


def test_unknown_mig_profile_name_is_a_typo_too() -> None:
    (line,) = error_lines(resources(limits={"nvidia.com/mig-1g.19gb": 1}))
    assert line.startswith(
        'spec.resources.limits[nvidia.com/mig-1g.19gb]: Unsupported value: "nvidia.com/mig-1g.19gb"'
    )


def test_amd_typo_lists_amd_names() -> None:
    assert error_lines(resources(limits={"amd.com/gpus": 1})) == [
        'spec.resources.limits[amd.com/gpus]: Unsupported value: "amd.com/gpus": supported values: "amd.com/gpu"'
    ]


def test_unqualified_unknown_resource_name_is_refused() -> None:
    assert error_lines(resources(limits={"gpu": 1})) == [
        'spec.resources.limits[gpu]: Invalid value: "gpu": must be a standard resource type or fully qualified'
    ]


def test_other_vendors_extended_resources_follow_the_same_integer_rules() -> None:
    ok = parse_resource(resources(limits={"example.com/fpga": 2}))
    assert ok.spec.resources.limits == {"example.com/fpga": 2}
    assert ok.gpu_request() is None  # not a GPU kgpu knows
    assert error_lines(resources(limits={"example.com/fpga": "1.5"})) == [
        'spec.resources.limits[example.com/fpga]: Invalid value: "1.5": must be an integer'
    ]


def test_cpu_and_memory_use_kubernetes_quantities() -> None:
    svc = parse_resource(
        resources(requests={"cpu": "500m", "memory": "2Gi"}, limits={"cpu": 2, "memory": "4Gi"})
    )
    assert svc.spec.resources.requests == {"cpu": "500m", "memory": "2Gi"}
    assert svc.spec.resources.limits == {"cpu": 2, "memory": "4Gi"}
    assert parse_resource(resources(limits={"cpu": 0.5})).spec.resources.limits == {"cpu": "0.5"}


@pytest.mark.parametrize(("field", "value"), [("cpu", "2 cores"), ("memory", "4GB"), ("memory", "")])
def test_bad_quantity_syntax_is_refused_with_the_api_server_message(field: str, value: str) -> None:
    assert error_lines(resources(limits={field: value})) == [
        f'spec.resources.limits[{field}]: Invalid value: "{value}": quantities must match the regular '
        "expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    ]


def test_cpu_request_above_its_limit_is_refused() -> None:
    assert error_lines(resources(requests={"cpu": "2"}, limits={"cpu": "500m"})) == [
        'spec.resources.requests: Invalid value: "2": must be less than or equal to cpu limit of 500m'
    ]


def test_quantity_of_the_wrong_type_is_refused() -> None:
    assert error_lines(resources(limits={"cpu": [1]})) == [
        'spec.resources.limits[cpu]: Invalid value: [1]: must be a quantity: a string like "500m" or "4Gi", '
        "or a number"
    ]


def test_only_one_gpu_resource_per_service() -> None:
    doc = resources(limits={"nvidia.com/gpu": 1, "nvidia.com/mig-1g.18gb": 1})
    assert error_lines(doc) == [
        'spec.resources.limits: Invalid value: "nvidia.com/gpu, nvidia.com/mig-1g.18gb": at most one GPU '
        "resource may be set per service (whole, shared or MIG)"
    ]


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        ({}, None),
        ({"limits": {"cpu": "2"}}, None),
        ({"limits": {"nvidia.com/gpu": 2}}, ("nvidia.com/gpu", 2)),
        ({"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}}, ("nvidia.com/gpu", 1)),
        ({"limits": {"nvidia.com/mig-1g.18gb": 1}}, ("nvidia.com/mig-1g.18gb", 1)),
        ({"limits": {"nvidia.com/gpu.shared": 1}}, ("nvidia.com/gpu.shared", 1)),
        ({"limits": {"amd.com/gpu": 1}}, ("amd.com/gpu", 1)),
        ({"limits": {"nvidia.com/gpu": 0}}, None),
    ],
)
def test_gpu_request_reports_the_gpu_resource(sections: dict, expected: tuple | None) -> None:
    svc = parse_resource(resources(**sections))
    assert isinstance(svc, InferenceService)
    assert svc.gpu_request() == expected
    assert svc.spec.gpu_request() == expected


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=10_000), st.booleans())
def test_integer_gpu_quantities_are_accepted(count: int, as_text: bool) -> None:
    value = str(count) if as_text else count
    svc = parse_resource(resources(requests={"nvidia.com/gpu": value}, limits={"nvidia.com/gpu": value}))
    assert svc.spec.resources.limits["nvidia.com/gpu"] == count  # normalized to an int


@settings(max_examples=60, deadline=None)
@given(
    st.floats(min_value=0, max_value=1000, allow_nan=False, allow_infinity=False).filter(
        lambda x: x != int(x)
    )
)
def test_non_integer_gpu_quantities_are_refused(amount: float) -> None:
    assert error_lines(resources(limits={"nvidia.com/gpu": amount})) == [
        f'spec.resources.limits[nvidia.com/gpu]: Invalid value: "{amount!r}": must be an integer'
    ]


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("nvidia.com/gpu", "1e20", '"1e20"'),  # an int the store cannot write as JSON
        ("nvidia.com/gpu", float("inf"), '"inf"'),
        ("memory", "1e999999999", '"1e999999999"'),  # past the decimal context's exponent range
        ("memory", "9Ei", '"9Ei"'),
        ("cpu", float("nan"), '"nan"'),
        ("cpu", "1e" + "9" * 5000, '"1e' + "9" * 5000 + '"'),  # more digits than int() takes
    ],
)
def test_quantities_out_of_range_are_refused_with_the_field(name: str, value: object, shown: str) -> None:
    assert error_lines(resources(limits={name: value})) == [
        f"spec.resources.limits[{name}]: Invalid value: {shown}: "
        "must be a finite number no larger than 2^63-1 (9223372036854775807)"
    ]
