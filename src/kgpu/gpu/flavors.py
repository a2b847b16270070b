"""The flavor catalog: named machine shapes (GPU model and count, CPU, memory, VM or bare metal).

Each flavor also carries a price per GPU-hour (USD, a planning assumption documented in
flavors.yaml): placement across clusters fills the cheaper one first by it, and the fleet
replay turns GPU-hours into cost with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml

from kgpu.gpu.catalog import get_model


@dataclass(frozen=True)
class MachineFlavor:
    name: str
    kind: str  # "bare-metal" or "vm"
    gpu_model: str | None  # a GPU catalog name
    gpu_count: int
    cpu: str
    memory: str
    price_per_gpu_hour: float  # USD per GPU per hour; 0 for a flavor without a GPU


def _check_price(flavor: MachineFlavor) -> None:
    price = flavor.price_per_gpu_hour
    if isinstance(price, bool) or not isinstance(price, (int, float)) or not price >= 0:
        raise ValueError(f"flavor {flavor.name}: price_per_gpu_hour must be a number >= 0, not {price!r}")
    if flavor.gpu_count > 0 and price == 0:
        raise ValueError(f"flavor {flavor.name}: a GPU flavor needs a price_per_gpu_hour above 0")


@cache
def all_flavors() -> dict[str, MachineFlavor]:
    text = resources.files("kgpu.gpu").joinpath("flavors.yaml").read_text()
    flavors = {}
    for entry in yaml.safe_load(text)["flavors"]:
        flavor = MachineFlavor(**entry)
        if flavor.gpu_model is not None:
            get_model(flavor.gpu_model)  # a typo in the data file fails loudly, once
        _check_price(flavor)
        flavors[flavor.name] = flavor
    return flavors


def get_flavor(name: str) -> MachineFlavor:
    try:
        return all_flavors()[name]
    except KeyError:
        raise KeyError(
            f"unknown flavor {name!r}; known flavors: {', '.join(sorted(all_flavors()))}"
        ) from None


def catalog_price_per_gpu_hour(gpu_model: str) -> float | None:
    """The lowest catalog price per GPU-hour of a GPU model, or None when no flavor offers it.

    What a node pool declared by GPU model alone (no flavor name, no price of its own) costs.
    """
    prices = [f.price_per_gpu_hour for f in all_flavors().values() if f.gpu_model == gpu_model]
    return min(prices) if prices else None
