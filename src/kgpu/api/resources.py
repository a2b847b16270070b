"""Container resource rules: Kubernetes' rules for extended resources, and GPU names from the catalog.

Extended resources (anything fully qualified outside kubernetes.io, GPUs included)
are integers, cannot be overcommitted, must have a limit, and a request, when
given, must equal the limit. CPU and memory use the quantity syntax and a request
may not exceed its limit.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

from kgpu.api.errors import FieldError, invalid, required, unsupported
from kgpu.api.quantity import QuantityError, parse_quantity
from kgpu.gpu.catalog import is_gpu_resource, resource_names_for_vendor, vendor_for_resource_domain

Quantity = str | int | float
# What one replica reserves on its node when its service declares no cpu or memory (what a
# LimitRange default gives a container in Kubernetes): a CPU replica of a small embedding model
# measured about 250 MB resident.
DEFAULT_CPU_REQUEST_MILLI = 250
DEFAULT_MEMORY_REQUEST_BYTES = 256 * 1024**2
STANDARD_RESOURCES = frozenset({"cpu", "memory", "ephemeral-storage"})


def is_standard_resource(name: str) -> bool:
    return name in STANDARD_RESOURCES or name.startswith("hugepages-")


def is_extended_resource(name: str) -> bool:
    domain = name.split("/", 1)[0]
    return "/" in name and domain != "kubernetes.io" and not domain.endswith(".kubernetes.io")


def _as_text(value: Quantity) -> str:
    # The API server echoes quantities as strings ("1.5"), whatever their YAML type.
    return value if isinstance(value, str) else repr(value)


def _check_name(path: str, name: str) -> FieldError | None:
    if not is_standard_resource(name) and "/" not in name:
        return invalid(path, name, "must be a standard resource type or fully qualified")
    vendor = vendor_for_resource_domain(name)
    if vendor is not None and not is_gpu_resource(name):
        return unsupported(path, name, resource_names_for_vendor(vendor))
    return None


def _check_value(path: str, name: str, value: Quantity) -> tuple[FieldError | None, Quantity]:
    """Error (or None) and the normalized value: ints for extended resources, no floats left."""
    try:
        amount = parse_quantity(value)
    except QuantityError as exc:
        return invalid(path, _as_text(value), str(exc)), value
    if amount < 0:
        return invalid(path, _as_text(value), "must be greater than or equal to 0"), value
    if is_extended_resource(name):
        if amount != amount.to_integral_value():
            return invalid(path, _as_text(value), "must be an integer"), value
        return None, int(amount)
    return None, value if not isinstance(value, float) else _as_text(value)


def _section(section: str, values: dict[str, Quantity]) -> tuple[list[FieldError], dict[str, Quantity]]:
    errors: list[FieldError] = []
    normalized: dict[str, Quantity] = {}
    for name, value in values.items():
        path = f"{section}[{name}]"
        name_error = _check_name(path, name)
        if name_error:
            errors.append(name_error)
            continue
        value_error, normalized[name] = _check_value(path, name, value)
        if value_error:
            errors.append(value_error)
    return errors, normalized


def _cross_checks(requests: dict[str, Quantity], limits: dict[str, Quantity]) -> list[FieldError]:
    errors: list[FieldError] = []
    for name, request in requests.items():
        limit = limits.get(name)
        if is_extended_resource(name):
            if limit is None:
                errors.append(required("limits", "Limit must be set for non overcommitable resources"))
            elif parse_quantity(request) != parse_quantity(limit):
                errors.append(
                    invalid("requests", _as_text(request), f"must be equal to {name} limit of {limit}")
                )
        elif limit is not None and parse_quantity(request) > parse_quantity(limit):
            errors.append(
                invalid(
                    "requests", _as_text(request), f"must be less than or equal to {name} limit of {limit}"
                )
            )
    gpus = sorted(name for name in limits if is_gpu_resource(name))
    if len(gpus) > 1:
        errors.append(
            invalid(
                "limits",
                ", ".join(gpus),
                "at most one GPU resource may be set per service (whole, shared or MIG)",
            )
        )
    return errors


def check_resource_requirements(
    requests: dict[str, Quantity], limits: dict[str, Quantity]
) -> tuple[list[FieldError], dict[str, Quantity], dict[str, Quantity]]:
    """Errors with paths relative to ``resources`` and the normalized (requests, limits)."""
    request_errors, requests = _section("requests", requests)
    limit_errors, limits = _section("limits", limits)
    errors = request_errors + limit_errors
    if not errors:
        errors = _cross_checks(requests, limits)
    return errors, requests, limits


def gpu_request(requests: dict[str, Quantity], limits: dict[str, Quantity]) -> tuple[str, int] | None:
    """The GPU-like resource and its count (limits win; requests equal them once valid), or None."""
    for source in (limits, requests):
        for name, value in source.items():
            if is_gpu_resource(name):
                count = int(parse_quantity(value))
                return (name, count) if count > 0 else None
    return None


def cpu_memory_request(requests: dict[str, Quantity], limits: dict[str, Quantity]) -> tuple[int, int]:
    """(milli-CPU, bytes) one replica requests: its request, else its limit (Kubernetes makes a lone
    limit the request too), else the defaults above. Valid values only (after the rules above)."""
    cpu = requests.get("cpu", limits.get("cpu"))
    memory = requests.get("memory", limits.get("memory"))
    cpu_milli = DEFAULT_CPU_REQUEST_MILLI if cpu is None else _ceil(parse_quantity(cpu) * 1000)
    memory_bytes = DEFAULT_MEMORY_REQUEST_BYTES if memory is None else _ceil(parse_quantity(memory))
    return cpu_milli, memory_bytes


def _ceil(amount: Decimal) -> int:
    return int(amount.to_integral_value(rounding=ROUND_CEILING))
