"""The CRDs generated from the models: valid CRDs, structural schemas, and the models' objects validate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from kgpu.api.crds import CrdSchemaError, all_crds, crds_yaml, structural
from kgpu.api.io import load_resource_file
from kgpu.cli.main import app
from tests.kubernetes._matrix import pools, services
from tests.kubernetes.test_manifests_validate import VERSIONS

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
_TYPES = {"object", "array", "string", "integer", "number", "boolean"}


def crd_for(kind: str) -> dict[str, Any]:
    return next(c for c in all_crds() if c["spec"]["names"]["kind"] == kind)


def schema_of(kind: str) -> dict[str, Any]:
    return crd_for(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def structural_problems(node: dict[str, Any], path: str = "") -> list[str]:
    """The API server's structural-schema rules that matter for generated schemas."""
    problems = []
    int_or_string = node.get("x-kubernetes-int-or-string") is True
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    if node.get("type") not in _TYPES and not int_or_string:
        problems.append(f"{path}: type missing or unknown ({node.get('type')!r})")
    for forbidden in ("$ref", "$defs", "const", "title", "oneOf", "allOf", "not"):
        if forbidden in node:
            problems.append(f"{path}: {forbidden} is not allowed")
    if "anyOf" in node:
        problems += [f"{path}: anyOf branch sets type" for b in node["anyOf"] if "type" in b]
    if "additionalProperties" in node:
        if not isinstance(node["additionalProperties"], dict):
            problems.append(f"{path}: additionalProperties must be a schema")
        elif "properties" in node:
            problems.append(f"{path}: properties and additionalProperties are mutually exclusive")
        else:
            problems += structural_problems(node["additionalProperties"], f"{path}[*]")
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        if key in node and not isinstance(node[key], bool):
            problems.append(f"{path}: {key} must be a boolean in OpenAPI v3.0")
    if preserve and node.get("type") != "object":
        problems.append(f"{path}: preserve-unknown-fields on a non-object")
    for name, sub in (node.get("properties") or {}).items():
        problems += structural_problems(sub, f"{path}.{name}")
    if "items" in node:
        problems += structural_problems(node["items"], f"{path}[]")
    return problems


def openapi_validator(kind: str) -> jsonschema.Draft4Validator:
    # OpenAPI v3.0 schemas are JSON Schema draft 4 with boolean exclusive bounds.
    return jsonschema.Draft4Validator(schema_of(kind))


def as_custom_resource(resource: Any) -> dict[str, Any]:
    return resource.model_dump(by_alias=True, mode="json", exclude_none=True)


@pytest.mark.parametrize("version", VERSIONS)
def test_crds_validate_as_crds_against_kubernetes_schemas(version):
    for crd in all_crds():
        kubernetes_validate.validate(crd, version, strict=True)


@pytest.mark.parametrize("kind", ["InferenceService", "NodePool", "Cluster"])
def test_crd_schemas_are_structural(kind):
    assert structural_problems(schema_of(kind)) == []
    assert "x-kubernetes-preserve-unknown-fields" in schema_of(kind)["properties"]["status"]


def test_structural_checker_finds_a_missing_type():
    assert structural_problems({"type": "object", "properties": {"x": {"description": "?"}}}) == [
        ".x: type missing or unknown (None)"
    ]


def test_crd_shape_group_scope_subresources_and_columns():
    isvc = crd_for("InferenceService")
    spec = isvc["spec"]
    assert isvc["metadata"]["name"] == "inferenceservices.kgpu.dev"
    assert (spec["group"], spec["scope"]) == ("kgpu.dev", "Namespaced")
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    assert version["subresources"]["status"] == {}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[:4] == ["Model", "Replicas", "Ready", "Phase"] and columns[-1] == "Age"
    for crd in all_crds():
        assert crd["spec"]["versions"][0]["subresources"]["status"] == {}


def test_quantities_are_int_or_string_and_nullable_fields_fold():
    spec = schema_of("NodePool")["properties"]["spec"]["properties"]
    assert spec["flavor"]["properties"]["cpu"] == {"x-kubernetes-int-or-string": True, "nullable": True}
    limits = schema_of("InferenceService")["properties"]["spec"]["properties"]["resources"]["properties"][
        "limits"
    ]
    assert limits["additionalProperties"] == {"x-kubernetes-int-or-string": True}
    target = schema_of("InferenceService")["properties"]["spec"]["properties"]["autoscaling"]["properties"][
        "target"
    ]
    assert target["minimum"] == 0 and target["exclusiveMinimum"] is True


def test_a_union_of_different_types_is_refused():
    with pytest.raises(CrdSchemaError, match="anyOf with different types"):
        structural({"anyOf": [{"type": "string"}, {"type": "boolean"}]}, {}, "spec.x")


def test_sample_custom_resources_validate_against_the_generated_schemas():
    samples = [as_custom_resource(r) for r in [*services().values(), *pools().values()]]
    # examples/*.yaml are resource files, every one (fleets for `kgpu sim replay` live in examples/fleets/).
    for path in sorted(EXAMPLES.glob("*.yaml")):
        samples += [as_custom_resource(r) for r in load_resource_file(path)]
    samples.append(
        {
            "apiVersion": "kgpu.dev/v1alpha1",
            "kind": "Cluster",
            "metadata": {"name": "gke"},
            "spec": {"backend": "kubernetes", "kubeContext": "gke_prod"},
        }
    )
    kinds = {s["kind"] for s in samples}
    assert kinds == {"InferenceService", "NodePool", "Cluster"}
    for sample in samples:
        errors = [e.message for e in openapi_validator(sample["kind"]).iter_errors(sample)]
        assert errors == [], (sample["metadata"]["name"], errors)


@pytest.mark.parametrize(
    ("kind", "spec", "message"),
    [
        ("InferenceService", {"model": {"uri": "pkg:x"}, "replicas": -1}, "-1 is less than the minimum of 0"),
        (
            "InferenceService",
            {"model": {"uri": "pkg:x"}, "runtime": {"dtype": "int4"}},
            "'int4' is not one of",
        ),
        ("InferenceService", {"replicas": 1}, "'model' is a required property"),
        ("NodePool", {"flavor": {}, "sharing": {"mode": "vgpu"}}, "'vgpu' is not one of"),
        ("Cluster", {"backend": "nomad"}, "'nomad' is not one of"),
    ],
)
def test_bad_custom_resources_fail_the_generated_schemas(kind, spec, message):
    sample = {"apiVersion": "kgpu.dev/v1alpha1", "kind": kind, "metadata": {"name": "x"}, "spec": spec}
    errors = [e.message for e in openapi_validator(kind).iter_errors(sample)]
    assert any(message in e for e in errors), errors


def test_kgpu_crds_prints_every_crd_as_yaml():
    result = CliRunner().invoke(app, ["crds"])
    assert result.exit_code == 0, result.output
    assert list(yaml.safe_load_all(result.output)) == all_crds()
    assert result.output == crds_yaml()
