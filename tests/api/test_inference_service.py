from __future__ import annotations

import copy

import pytest
from pydantic import ValidationError

from kgpu.api.io import parse_resource
from kgpu.api.models import InferenceService, InferenceServiceSpec, ModelSpec, ObjectMeta
from kgpu.gpu.catalog import model_names
from tests.api._support import SERVICE, error_lines, service


def test_defaults_follow_the_contract() -> None:
    svc = parse_resource(copy.deepcopy(SERVICE))
    assert isinstance(svc, InferenceService)
    assert (svc.api_version, svc.kind, svc.metadata.namespace) == (
        "kgpu.dev/v1alpha1",
        "InferenceService",
        "default",
    )
    runtime = svc.spec.runtime
    assert (runtime.dtype, runtime.device) == ("auto", "auto")
    assert (runtime.max_batch_tokens, runtime.max_batch_size, runtime.max_queue, runtime.max_inputs) == (
        16384,
        256,
        1024,
        2048,
    )
    assert (svc.spec.replicas, svc.spec.autoscaling, svc.spec.gpu_models) == (1, None, [])
    assert svc.status is None


def test_camel_case_yaml_fields_become_snake_case_attributes() -> None:
    svc = parse_resource(service(autoscaling={"maxReplicas": 3}, runtime={"maxBatchTokens": 4096}))
    assert svc.spec.autoscaling.max_replicas == 3
    assert svc.spec.runtime.max_batch_tokens == 4096
    with pytest.raises(AttributeError):
        _ = svc.spec.noSuchField


def test_engine_workers_are_optional_and_bounded() -> None:
    assert parse_resource(service()).spec.runtime.engine_workers is None
    assert parse_resource(service(runtime={"engineWorkers": 2})).spec.runtime.engine_workers == 2
    assert error_lines(service(runtime={"engineWorkers": 0})) == [
        "spec.runtime.engineWorkers: Invalid value: 0: must be greater than or equal to 1"
    ]


def test_models_can_be_built_in_python_by_field_name() -> None:
    svc = InferenceService(
        metadata=ObjectMeta(name="a"),
        spec=InferenceServiceSpec(model=ModelSpec(uri="./m"), gpu_models=[]),
    )
    assert svc.model_dump()["spec"]["gpuModels"] == []


def test_unknown_spec_field_is_rejected_with_a_suggestion() -> None:
    assert error_lines(service(replicaz=2)) == [
        'spec.replicaz: unknown field "replicaz" (did you mean "replicas"?)'
    ]


def test_unknown_nested_field_lists_the_known_ones() -> None:
    assert error_lines(service(runtime={"zzz": 1})) == [
        'spec.runtime.zzz: unknown field "zzz"; known fields: args, command, device, dtype, engineWorkers, '
        "env, image, kind, kvCacheMemory, maxBatchSize, maxBatchTokens, maxInputs, maxQueue, metricsPath, portFlag, "
        "prefillChunkTokens, preset, protocol, readinessPath"
    ]


def test_several_errors_are_reported_together() -> None:
    lines = error_lines(service(replicas=-1, runtime={"dtype": "fp8", "maxBatchTokens": "3"}))
    assert lines == [
        'spec.runtime.dtype: Unsupported value: "fp8": supported values: "auto", "float32", "float16", "bfloat16"',
        'spec.runtime.maxBatchTokens: Invalid value: "3": must be an integer',
        "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
    ]


def test_integers_are_not_taken_from_floats_or_booleans() -> None:
    assert error_lines(service(replicas=1.0)) == ["spec.replicas: Invalid value: 1.0: must be an integer"]
    assert error_lines(service(replicas=True)) == ["spec.replicas: Invalid value: true: must be an integer"]


def test_missing_model_is_required() -> None:
    doc = copy.deepcopy(SERVICE)
    del doc["spec"]["model"]
    assert error_lines(doc) == ["spec.model: Required value"]


def test_autoscaling_min_replicas_must_not_exceed_max_replicas() -> None:
    assert error_lines(service(autoscaling={"minReplicas": 3, "maxReplicas": 2})) == [
        "spec.autoscaling.maxReplicas: Invalid value: 2: must be >= minReplicas (3)"
    ]
    svc = parse_resource(service(autoscaling={"minReplicas": 0, "maxReplicas": 2}))
    assert (svc.spec.autoscaling.min_replicas, svc.spec.autoscaling.max_replicas) == (0, 2)


def test_autoscaling_fields_are_typed_and_known() -> None:
    assert error_lines(service(autoscaling={"target": "3"}))[0].startswith("spec.autoscaling.target")
    assert error_lines(service(autoscaling={"policy": "magic"}))[0].startswith("spec.autoscaling.policy")
    assert error_lines(service(autoscaling={"minReplica": 1}))[0].startswith("spec.autoscaling.minReplica")


def test_max_replicas_must_be_at_least_one() -> None:
    assert error_lines(service(autoscaling={"maxReplicas": 0})) == [
        "spec.autoscaling.maxReplicas: Invalid value: 0: must be greater than or equal to 1"
    ]


def test_gpu_models_must_be_catalog_names() -> None:
    (line,) = error_lines(service(gpuModels=["H200-141GB", "H100"]))
    supported = ", ".join(f'"{n}"' for n in model_names())
    assert line == f'spec.gpuModels[1]: Unsupported value: "H100": supported values: {supported}'
    assert parse_resource(service(gpuModels=["H100-80GB", "H200-141GB"])).spec.gpu_models == [
        "H100-80GB",
        "H200-141GB",
    ]


def test_gpu_models_must_match_the_requested_vendor_and_mig_profile() -> None:
    doc = service(gpuModels=["MI300X"], resources={"limits": {"nvidia.com/gpu": 1}})
    assert error_lines(doc) == [
        'spec.gpuModels[0]: Invalid value: "MI300X": is made by AMD but resources ask for nvidia.com/gpu'
    ]
    doc = service(gpuModels=["A100-80GB"], resources={"limits": {"nvidia.com/mig-1g.18gb": 1}})
    assert error_lines(doc) == [
        'spec.gpuModels[0]: Invalid value: "A100-80GB": has no MIG profile 1g.18gb '
        "(resources ask for nvidia.com/mig-1g.18gb)"
    ]


def test_status_is_free_form_and_kept() -> None:
    doc = copy.deepcopy(SERVICE)
    doc["status"] = {"readyReplicas": 1, "endpoint": "http://127.0.0.1:8000"}
    assert parse_resource(doc).status == {"readyReplicas": 1, "endpoint": "http://127.0.0.1:8000"}


def test_direct_construction_still_validates() -> None:
    with pytest.raises(ValidationError, match="network model sources are not used"):
        ModelSpec(uri="https://example.com/model")


@pytest.mark.parametrize("field", ["target", "scaleToZeroIdleSeconds", "maxScaleUpRate"])
def test_autoscaling_numbers_must_be_finite(field: str) -> None:
    # Infinity passed the bounds, was stored as null (JSON has no Infinity) and then broke every read.
    assert error_lines(service(autoscaling={field: float("inf")})) == [
        f"spec.autoscaling.{field}: Invalid value: inf: must be a finite number"
    ]
