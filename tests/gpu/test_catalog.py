from __future__ import annotations

from importlib import resources

import pytest
import yaml

from kgpu.gpu import catalog
from kgpu.gpu.catalog import (
    get_model,
    is_gpu_resource,
    known_resource_names,
    mig_profile_of_resource,
    model_for_product_name,
    resource_names_for_vendor,
    vendor_for_resource_domain,
)


def test_catalog_is_read_from_packaged_yaml() -> None:
    raw = yaml.safe_load(resources.files("kgpu.gpu").joinpath("catalog.yaml").read_text())
    assert [m["name"] for m in raw["models"]] == catalog.model_names()


@pytest.mark.parametrize(
    ("name", "vendor", "resource"),
    [
        ("A100-40GB", "nvidia", "nvidia.com/gpu"),
        ("A100-80GB", "nvidia", "nvidia.com/gpu"),
        ("H100-80GB", "nvidia", "nvidia.com/gpu"),
        ("H200-141GB", "nvidia", "nvidia.com/gpu"),
        ("L40S", "nvidia", "nvidia.com/gpu"),
        ("L4", "nvidia", "nvidia.com/gpu"),
        ("T4", "nvidia", "nvidia.com/gpu"),
        ("MI300X", "amd", "amd.com/gpu"),
        ("Gaudi2", "habana", "habana.ai/gaudi"),
        ("Gaudi3", "habana", "habana.ai/gaudi"),
        ("Intel-Max-1550", "intel", "gpu.intel.com/i915"),
        ("Intel-Flex-170", "intel", "gpu.intel.com/i915"),
    ],
)
def test_required_models_have_vendor_and_resource_name(name: str, vendor: str, resource: str) -> None:
    model = get_model(name)
    assert (model.vendor, model.resource_name) == (vendor, resource)


def test_get_model_is_case_insensitive_and_unknown_names_list_the_known_ones() -> None:
    assert get_model("h200-141gb").name == "H200-141GB"
    with pytest.raises(KeyError) as info:
        get_model("H300")
    assert "unknown GPU model 'H300'; known models: A100-40GB, A100-80GB, H100-80GB" in str(info.value)


@pytest.mark.parametrize(
    ("product", "model"),
    [
        ("NVIDIA H200", "H200-141GB"),
        ("NVIDIA H100 80GB HBM3", "H100-80GB"),
        ("NVIDIA-H100-80GB-HBM3", "H100-80GB"),  # GPU Feature Discovery label form
        ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
        ("NVIDIA A100-SXM4-40GB", "A100-40GB"),
        ("Tesla T4", "T4"),
        ("NVIDIA L40S", "L40S"),
    ],
)
def test_nvml_product_names_map_to_catalog_models(product: str, model: str) -> None:
    found = model_for_product_name(product)
    assert found is not None and found.name == model


def test_unknown_product_name_maps_to_none() -> None:
    assert model_for_product_name("NVIDIA GeForce RTX 4090") is None


def test_h200_mig_profiles_match_the_nvml_readout() -> None:
    # Profile ids and memory sizes read from a real H200 (reference/gpu-facts.md).
    expected = {
        "1g.18gb": (19, 16384, 7),
        "1g.18gb+me": (20, 16384, 1),
        "1g.35gb": (15, 33280, 4),
        "2g.35gb": (14, 33280, 3),
        "3g.71gb": (9, 71424, 2),
        "4g.71gb": (5, 71424, 1),
        "7g.141gb": (0, 143360, 1),
    }
    h200 = get_model("H200-141GB")
    assert {p.name: (p.nvml_profile_id, p.memory_mib, p.max_count) for p in h200.mig_profiles} == expected


@pytest.mark.parametrize("model_name", ["A100-40GB", "A100-80GB", "H100-80GB", "H200-141GB"])
def test_mig_geometry_per_shape(model_name: str) -> None:
    by_slices = {
        (p.compute_slices, p.memory_slices, p.name.endswith("+me")): p
        for p in get_model(model_name).mig_profiles
    }
    assert by_slices[(1, 1, False)].starts == (0, 1, 2, 3, 4, 5, 6)
    assert by_slices[(1, 2, False)].starts == (0, 2, 4, 6)
    assert by_slices[(2, 2, False)].starts == (0, 2, 4)
    assert by_slices[(3, 4, False)].starts == (0, 4)
    assert by_slices[(4, 4, False)].starts == (0,)
    assert by_slices[(7, 8, False)].starts == (0,)
    assert by_slices[(1, 1, True)].max_count == 1


def test_models_without_mig_have_no_profiles() -> None:
    assert not get_model("L40S").supports_mig
    assert not get_model("MI300X").supports_mig
    assert get_model("H100-80GB").supports_mig


def test_known_resource_names_cover_vendors_and_mig_profiles() -> None:
    names = known_resource_names()
    for name in [
        "nvidia.com/gpu",
        "nvidia.com/gpu.shared",
        "nvidia.com/mig-1g.18gb",
        "nvidia.com/mig-3g.40gb",
        "amd.com/gpu",
        "gpu.intel.com/i915",
        "gpu.intel.com/xe",
        "habana.ai/gaudi",
    ]:
        assert name in names
        assert is_gpu_resource(name)
    assert not is_gpu_resource("nvidia.com/gpus")
    assert not is_gpu_resource("cpu")
    assert not is_gpu_resource("nvidia.com/mig-1g.19gb")


def test_resource_names_for_vendor_list_whole_devices_first() -> None:
    names = resource_names_for_vendor("nvidia")
    assert names[:2] == ["nvidia.com/gpu", "nvidia.com/gpu.shared"]
    assert "nvidia.com/mig-7g.141gb" in names
    assert resource_names_for_vendor("amd") == ["amd.com/gpu"]


def test_vendor_and_mig_profile_of_resource_names() -> None:
    assert vendor_for_resource_domain("nvidia.com/gpus") == "nvidia"
    assert vendor_for_resource_domain("gpu.intel.com/xe") == "intel"
    assert vendor_for_resource_domain("example.com/foo") is None
    assert mig_profile_of_resource("nvidia.com/mig-1g.18gb") == "1g.18gb"
    assert mig_profile_of_resource("nvidia.com/gpu") is None


def test_to_dict_is_plain_data() -> None:
    data = get_model("H200-141GB").to_dict()
    assert data["mig_profiles"][0]["starts"] == [0, 1, 2, 3, 4, 5, 6]
    assert yaml.safe_load(yaml.safe_dump(data)) == data
