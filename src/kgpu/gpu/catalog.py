"""The GPU catalog: models, vendors, resource names and MIG profiles, read from catalog.yaml."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from kgpu.gpu.mig import MIG_COMPUTE_SLICES, MIG_MEMORY_SLICES, MigPlacement, place_mig_layout

__all__ = [
    "MIG_COMPUTE_SLICES",
    "MIG_MEMORY_SLICES",
    "VENDOR_DOMAINS",
    "VENDOR_RESOURCES",
    "GPUModel",
    "MigPlacement",
    "MigProfile",
    "all_models",
    "get_model",
    "is_gpu_resource",
    "known_resource_names",
    "mig_profile_of_resource",
    "mig_resource_name",
    "model_for_product_name",
    "model_names",
    "resource_names_for_vendor",
    "validate_mig_layout",
    "vendor_display_name",
    "vendor_for_resource_domain",
]


@dataclass(frozen=True)
class MigProfile:
    """One MIG GPU-instance profile (e.g. ``3g.71gb``) and where it may sit on the GPU."""

    name: str
    compute_slices: int
    memory_slices: int
    max_count: int
    starts: tuple[int, ...]
    memory_mib: int
    nvml_profile_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["starts"] = list(self.starts)
        return data


@dataclass(frozen=True)
class GPUModel:
    name: str
    vendor: str
    memory_gib: int
    nvml_names: tuple[str, ...]
    resource_name: str
    mig_profiles: tuple[MigProfile, ...] = ()
    # Other spellings of the same model, e.g. the short names a production trace uses ("V100M32").
    aliases: tuple[str, ...] = ()
    # False where the vendor never published the memory size (memory_gib is then 0).
    memory_known: bool = True

    @property
    def supports_mig(self) -> bool:
        return bool(self.mig_profiles)

    def mig_profile(self, name: str) -> MigProfile:
        for profile in self.mig_profiles:
            if profile.name == name:
                return profile
        known = ", ".join(p.name for p in self.mig_profiles) or "none (no MIG support)"
        raise KeyError(f"unknown MIG profile {name!r} for {self.name}; known profiles: {known}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "vendor": self.vendor,
            "memory_gib": self.memory_gib,
            "nvml_names": list(self.nvml_names),
            "resource_name": self.resource_name,
            "mig_profiles": [p.to_dict() for p in self.mig_profiles],
            "aliases": list(self.aliases),
            "memory_known": self.memory_known,
        }


@dataclass(frozen=True)
class _Catalog:
    models: tuple[GPUModel, ...]
    vendor_domains: dict[str, str]
    vendor_display_names: dict[str, str]
    vendor_resources: dict[str, tuple[str, ...]]
    mig_resource_prefix: dict[str, str]


@lru_cache(maxsize=1)
def _catalog() -> _Catalog:
    text = resources.files("kgpu.gpu").joinpath("catalog.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    shapes = raw["mig_geometry"]["shapes"]
    models = []
    for entry in raw["models"]:
        profiles = []
        for profile_name, spec in (entry.get("mig_profiles") or {}).items():
            shape = shapes[spec["shape"]]
            profiles.append(
                MigProfile(
                    name=profile_name,
                    compute_slices=shape["compute_slices"],
                    memory_slices=shape["memory_slices"],
                    max_count=shape["max_count"],
                    starts=tuple(shape["starts"]),
                    memory_mib=spec["memory_mib"],
                    nvml_profile_id=shape.get("nvml_profile_id"),
                )
            )
        models.append(
            GPUModel(
                name=entry["name"],
                vendor=entry["vendor"],
                memory_gib=entry.get("memory_gib") or 0,
                nvml_names=tuple(entry["nvml_names"]),
                resource_name=entry["resource_name"],
                mig_profiles=tuple(profiles),
                aliases=tuple(entry.get("aliases") or ()),
                memory_known=entry.get("memory_gib") is not None,
            )
        )
    vendors = raw["vendors"]
    return _Catalog(
        models=tuple(models),
        vendor_domains={v: spec["domain"] for v, spec in vendors.items()},
        vendor_display_names={v: spec["display_name"] for v, spec in vendors.items()},
        vendor_resources={v: tuple(spec["resources"]) for v, spec in vendors.items()},
        mig_resource_prefix={
            v: spec["mig_resource_prefix"] for v, spec in vendors.items() if "mig_resource_prefix" in spec
        },
    )


# Whole-device and shared resource names per vendor (MIG names come from the models' profiles).
VENDOR_RESOURCES: dict[str, tuple[str, ...]] = dict(_catalog().vendor_resources)
VENDOR_DOMAINS: dict[str, str] = dict(_catalog().vendor_domains)


def vendor_display_name(vendor: str) -> str:
    """ "nvidia" -> "NVIDIA", for messages."""
    return _catalog().vendor_display_names.get(vendor, vendor)


def all_models() -> list[GPUModel]:
    return list(_catalog().models)


def model_names() -> list[str]:
    return [m.name for m in _catalog().models]


def get_model(name: str) -> GPUModel:
    """The catalog model called ``name`` or one of its aliases (case-insensitive); KeyError lists the known names."""
    wanted = name.lower()
    for model in _catalog().models:
        if model.name.lower() == wanted or any(alias.lower() == wanted for alias in model.aliases):
            return model
    raise KeyError(f"unknown GPU model {name!r}; known models: {', '.join(model_names())}")


def _normalize_product_name(name: str) -> str:
    # GPU Feature Discovery labels write "NVIDIA H100 80GB HBM3" as "NVIDIA-H100-80GB-HBM3".
    return re.sub(r"[\s_-]+", "-", name.strip()).lower()


def model_for_product_name(nvml_name: str) -> GPUModel | None:
    """Map an NVML product name (or its GFD label form) to a catalog model, or None if unknown."""
    wanted = _normalize_product_name(nvml_name)
    for model in _catalog().models:
        if any(_normalize_product_name(n) == wanted for n in model.nvml_names):
            return model
    return None


def mig_resource_name(vendor: str, profile: str) -> str:
    return f"{_catalog().mig_resource_prefix[vendor]}{profile}"


def resource_names_for_vendor(vendor: str) -> list[str]:
    """Whole-device names first, then the MIG names of every catalog profile for that vendor."""
    names = list(VENDOR_RESOURCES[vendor])
    if vendor in _catalog().mig_resource_prefix:
        profiles = sorted({p.name for m in all_models() if m.vendor == vendor for p in m.mig_profiles})
        names.extend(mig_resource_name(vendor, p) for p in profiles)
    return names


def known_resource_names() -> set[str]:
    return {name for vendor in VENDOR_RESOURCES for name in resource_names_for_vendor(vendor)}


def is_gpu_resource(name: str) -> bool:
    """True for accelerator resource names kgpu knows (whole, shared, or ``nvidia.com/mig-<profile>``)."""
    return name in known_resource_names()


def vendor_for_resource_domain(name: str) -> str | None:
    """The vendor whose domain prefixes this resource name (``nvidia.com/...``), or None."""
    domain = name.split("/", 1)[0] if "/" in name else ""
    for vendor, vendor_domain in VENDOR_DOMAINS.items():
        if domain == vendor_domain:
            return vendor
    return None


def mig_profile_of_resource(name: str) -> str | None:
    """``nvidia.com/mig-1g.18gb`` -> ``1g.18gb``; None for non-MIG names."""
    for prefix in _catalog().mig_resource_prefix.values():
        if name.startswith(prefix):
            return name[len(prefix) :]
    return None


def validate_mig_layout(model_name: str, layout: dict[str, int]) -> list[MigPlacement]:
    """Place ``layout`` (profile -> count) on one GPU of ``model_name``; ValueError says why it cannot."""
    return place_mig_layout(get_model(model_name), layout)
