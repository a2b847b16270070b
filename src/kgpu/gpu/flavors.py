"""The flavor catalog: named machine shapes (GPU model and count, CPU, memory, VM or bare metal)."""

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


@cache
def all_flavors() -> dict[str, MachineFlavor]:
    text = resources.files("kgpu.gpu").joinpath("flavors.yaml").read_text()
    flavors = {}
    for entry in yaml.safe_load(text)["flavors"]:
        flavor = MachineFlavor(**entry)
        if flavor.gpu_model is not None:
            get_model(flavor.gpu_model)  # a typo in the data file fails loudly, once
        flavors[flavor.name] = flavor
    return flavors


def get_flavor(name: str) -> MachineFlavor:
    try:
        return all_flavors()[name]
    except KeyError:
        raise KeyError(
            f"unknown flavor {name!r}; known flavors: {', '.join(sorted(all_flavors()))}"
        ) from None
