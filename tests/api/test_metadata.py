from __future__ import annotations

import copy

import pytest

from kgpu.api.io import parse_resource
from tests.api._support import SERVICE, error_lines

LABEL_REGEX_HINT = (
    "(e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)


def with_metadata(**metadata: object) -> dict:
    doc = copy.deepcopy(SERVICE)
    doc["metadata"] = metadata
    return doc


def test_name_must_be_a_dns_label_with_kubernetes_wording() -> None:
    assert error_lines(with_metadata(name="Bad_Name")) == [
        'metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 label must consist of lower case '
        "alphanumeric characters or '-', and must start and end with an alphanumeric character "
        + LABEL_REGEX_HINT
    ]


@pytest.mark.parametrize("name", ["-leading", "trailing-", "has.dot", "UPPER", "sp ace"])
def test_names_kubernetes_refuses_are_refused(name: str) -> None:
    (line,) = error_lines(with_metadata(name=name))
    assert line.startswith(f'metadata.name: Invalid value: "{name}": a lowercase RFC 1123 label')


@pytest.mark.parametrize("name", ["a", "minilm", "bge-small-2", "0abc", "x" * 63])
def test_valid_names_are_accepted(name: str) -> None:
    assert parse_resource(with_metadata(name=name)).metadata.name == name


def test_name_longer_than_63_characters_is_refused() -> None:
    name = "a" * 64
    assert error_lines(with_metadata(name=name)) == [
        f'metadata.name: Invalid value: "{name}": must be no more than 63 characters'
    ]


def test_missing_or_empty_name_is_required() -> None:
    expected = ["metadata.name: Required value: name or generateName is required"]
    assert error_lines(with_metadata(namespace="default")) == expected
    assert error_lines(with_metadata(name="")) == expected


def test_namespace_is_a_dns_label_and_defaults_to_default() -> None:
    assert parse_resource(with_metadata(name="a")).metadata.namespace == "default"
    (line,) = error_lines(with_metadata(name="a", namespace="Team_A"))
    assert line.startswith('metadata.namespace: Invalid value: "Team_A": a lowercase RFC 1123 label')


def test_name_of_the_wrong_type_is_refused() -> None:
    assert error_lines(with_metadata(name=123)) == ["metadata.name: Invalid value: 123: must be a string"]


def test_label_keys_and_values_follow_kubernetes_syntax() -> None:
    ok = parse_resource(with_metadata(name="a", labels={"kgpu.dev/pool": "h200", "team": "ml_infra.1"}))
    assert ok.metadata.labels == {"kgpu.dev/pool": "h200", "team": "ml_infra.1"}
    assert error_lines(with_metadata(name="a", labels={"team": "bad value!"})) == [
        'metadata.labels: Invalid value: "bad value!": a valid label must be an empty string or consist of '
        "alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character "
        "(e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is "
        "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
    ]
    (line,) = error_lines(with_metadata(name="a", labels={"-team": "x"}))
    assert line.startswith('metadata.labels: Invalid value: "-team": name part must consist of alphanumeric')


def test_unknown_metadata_field_is_rejected_with_its_path() -> None:
    assert error_lines(with_metadata(name="a", nmae="b")) == [
        'metadata.nmae: unknown field "nmae" (did you mean "name"?)'
    ]


def test_annotations_are_bounded_like_kubernetes() -> None:
    # Kubernetes refuses more than 256 KiB of annotations (keys and values, in bytes); kgpu took any size.
    at_limit = {"a": "é" * ((256 * 1024 - 1) // 2)}
    assert parse_resource(with_metadata(name="ok", annotations=at_limit)).metadata.annotations == at_limit
    assert error_lines(with_metadata(name="ok", annotations={"a": "x" * (256 * 1024)})) == [
        "metadata.annotations: Too long: must have at most 262144 bytes"
    ]
