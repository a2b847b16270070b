"""Node pools from the flavor catalog, and the allocatable resources the control plane reports for them."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from kgpu.api.errors import ResourceValidationError
from kgpu.api.io import parse_resource
from kgpu.backends.pools import pool_status
from kgpu.controlplane.platform import Platform, PlatformConfig
from kgpu.controlplane.server import create_server_app
from kgpu.gpu.flavors import all_flavors
from tests.controlplane.test_api import RecordingBackend, cpu_node


def pool(flavor: dict, sharing: dict | None = None, min_nodes: int = 2, name: str = "p") -> dict:
    spec: dict = {"flavor": flavor, "minNodes": min_nodes, "maxNodes": 4}
    if sharing:
        spec["sharing"] = sharing
    return {"apiVersion": "kgpu.dev/v1alpha1", "kind": "NodePool", "metadata": {"name": name}, "spec": spec}


def test_catalog_has_bare_metal_8_gpu_h100_and_h200_flavors():
    flavors = all_flavors()
    for name, model in (
        ("bm3-ai-1xlarge-h100-80-8", "H100-80GB"),
        ("bm3-ai-1xlarge-h200-141-8", "H200-141GB"),
    ):
        assert (flavors[name].kind, flavors[name].gpu_model, flavors[name].gpu_count) == (
            "bare-metal",
            model,
            8,
        )


def test_flavor_name_fills_the_machine_shape_and_explicit_fields_win():
    p = parse_resource(pool({"name": "bm3-ai-1xlarge-h200-141-8", "memory": "1Ti"}))
    flavor = p.spec.flavor
    assert (flavor.gpu_model, flavor.gpu_count, flavor.cpu, flavor.memory, flavor.kind) == (
        "H200-141GB", 8, "192", "1Ti", "bare-metal",
    )  # fmt: skip


def test_unknown_flavor_name_is_refused_listing_the_known_ones():
    with pytest.raises(ResourceValidationError) as info:
        parse_resource(pool({"name": "bm3-ai-1xlarge-h100-80-9"}))
    assert "spec.flavor.name: Unsupported value" in str(info.value)
    assert "bm3-ai-1xlarge-h100-80-8" in str(info.value)


def test_allocatable_for_exclusive_time_sliced_and_mig_pools():
    exclusive = pool_status(parse_resource(pool({"name": "bm3-ai-1xlarge-h100-80-8"})))
    assert exclusive["allocatablePerNode"] == {"cpu": "192", "memory": "2Ti", "nvidia.com/gpu": 8}
    assert exclusive["allocatable"] == {"cpu": "384", "memory": "4Ti", "nvidia.com/gpu": 16}

    sliced = pool_status(
        parse_resource(pool({"name": "bm3-ai-1xlarge-h100-80-8"}, {"mode": "time-slicing", "replicas": 4}))
    )
    assert sliced["allocatable"]["nvidia.com/gpu.shared"] == 2 * 8 * 4
    assert "nvidia.com/gpu" not in sliced["allocatable"]

    mig = pool_status(
        parse_resource(
            pool(
                {"name": "bm3-ai-1xlarge-h200-141-8"},
                {"mode": "mig", "migLayout": {"4g.71gb": 1, "3g.71gb": 1}},
            )
        )
    )
    assert mig["allocatable"]["nvidia.com/mig-4g.71gb"] == 16
    assert mig["allocatable"]["nvidia.com/mig-3g.71gb"] == 16
    assert mig["migLayout"] == {"4g.71gb": 1, "3g.71gb": 1}


def test_cpu_only_flavor_offers_no_gpu():
    status = pool_status(parse_resource(pool({"name": "g1-standard-16-64"}, min_nodes=3)))
    assert status["allocatable"] == {"cpu": "48", "memory": "192Gi"}


def test_api_reports_pool_status(tmp_path):
    platform = Platform(
        PlatformConfig(state_dir=tmp_path), inventory=cpu_node(), backend_factory=RecordingBackend
    )
    with TestClient(create_server_app(platform)) as api:
        path = "/apis/kgpu.dev/v1alpha1/namespaces/default/nodepools/h200"
        body = pool(
            {"name": "bm3-ai-1xlarge-h200-141-8"}, {"mode": "mig", "migLayout": {"3g.71gb": 2}}, name="h200"
        )
        assert api.put(path, json=body).status_code == 201
        status = api.get(path).json()["status"]
        assert status["nodes"] == 2 and status["allocatable"]["nvidia.com/mig-3g.71gb"] == 32
