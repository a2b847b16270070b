"""GPU sharing rules for a NodePool: exclusive, time-slicing, MPS or MIG on the flavor's GPU."""

from __future__ import annotations

from kgpu.api.errors import FieldError, forbidden, invalid, required
from kgpu.gpu.catalog import get_model, validate_mig_layout, vendor_display_name


def sharing_errors(
    mode: str, replicas: int | None, mig_layout: dict[str, int] | None, gpu_model: str | None
) -> list[FieldError]:
    """Rules for spec.sharing given the flavor's GPU model; paths relative to spec."""
    errors = []
    if replicas is not None and mode not in ("time-slicing", "mps"):
        errors.append(forbidden("sharing.replicas", "may only be set when mode is time-slicing or mps"))
    if mig_layout is not None and mode != "mig":
        errors.append(forbidden("sharing.migLayout", "may only be set when mode is mig"))
    if mode == "exclusive":
        return errors
    if mode in ("time-slicing", "mps"):
        if replicas is None:
            errors.append(required("sharing.replicas", f"{mode} needs replicas >= 2 (clients per GPU)"))
        elif replicas < 2:
            errors.append(invalid("sharing.replicas", replicas, "must be greater than or equal to 2"))
    if gpu_model is None:
        errors.append(required("flavor.gpuModel", f"sharing mode {mode} needs a GPU model"))
        return errors
    try:
        model = get_model(gpu_model)
    except KeyError:
        return errors  # already reported at spec.flavor.gpuModel
    if model.vendor != "nvidia":
        errors.append(
            invalid(
                "sharing.mode",
                mode,
                f"{mode} needs an NVIDIA GPU; {model.name} is made by {vendor_display_name(model.vendor)}",
            )
        )
    elif mode == "mig":
        if not model.supports_mig:
            errors.append(invalid("sharing.mode", mode, f"{model.name} does not support MIG"))
        elif mig_layout is None:
            example = model.mig_profiles[0].name
            errors.append(
                required(
                    "sharing.migLayout", f'mig needs a layout of profile counts, e.g. {{"{example}": 7}}'
                )
            )
        else:
            try:
                validate_mig_layout(model.name, mig_layout)
            except ValueError as exc:
                errors.append(invalid("sharing.migLayout", mig_layout, str(exc)))
    return errors
