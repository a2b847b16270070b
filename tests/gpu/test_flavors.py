"""The flavor catalog's price per GPU-hour: every flavor has one, and bad data fails at load."""

from __future__ import annotations

from importlib import resources

import pytest
import yaml

from kgpu.gpu import flavors
from kgpu.gpu.flavors import all_flavors, catalog_price_per_gpu_hour, get_flavor


def test_every_flavor_in_the_packaged_yaml_declares_a_price() -> None:
    entries = yaml.safe_load(resources.files("kgpu.gpu").joinpath("flavors.yaml").read_text())["flavors"]
    assert entries and all("price_per_gpu_hour" in entry for entry in entries)
    for flavor in all_flavors().values():
        if flavor.gpu_count:
            assert flavor.price_per_gpu_hour > 0, flavor.name
        else:
            assert flavor.price_per_gpu_hour == 0, flavor.name


def test_prices_follow_the_gpus_market_order() -> None:
    price = {f.gpu_model: f.price_per_gpu_hour for f in all_flavors().values() if f.gpu_model}
    assert price["L4"] < price["L40S"] < price["A100-80GB"] < price["H100-80GB"] < price["H200-141GB"]
    assert get_flavor("bm3-ai-1xlarge-h100-80-8").price_per_gpu_hour == price["H100-80GB"]


def test_catalog_price_of_a_gpu_model_is_its_cheapest_flavor_and_none_when_unoffered() -> None:
    assert catalog_price_per_gpu_hour("L4") == get_flavor("g3-ai-16-64-l4-24-1").price_per_gpu_hour
    assert catalog_price_per_gpu_hour("T4") is None


@pytest.mark.parametrize(
    ("price", "message"),
    [
        (None, "must be a number >= 0"),
        (-1.0, "must be a number >= 0"),
        (0.0, "needs a price_per_gpu_hour above 0"),
    ],
)
def test_a_bad_or_missing_price_fails_loudly_at_load(monkeypatch, price, message) -> None:
    entry = {"name": "x", "kind": "vm", "gpu_model": "L4", "gpu_count": 1, "cpu": "8", "memory": "32Gi"}
    if price is not None:
        entry["price_per_gpu_hour"] = price
    text = yaml.safe_dump({"flavors": [entry]})

    class Files:
        def joinpath(self, _name):
            return self

        def read_text(self):
            return text

    monkeypatch.setattr(flavors.resources, "files", lambda _package: Files())
    all_flavors.cache_clear()
    try:
        with pytest.raises(
            (ValueError, TypeError), match=message if price is not None else "price_per_gpu_hour"
        ):
            all_flavors()
    finally:
        monkeypatch.undo()
        all_flavors.cache_clear()
