"""A fleet for the trace replay: several simulated clusters, the service's placement, outages.

`kgpu sim replay --fleet FILE` reads one YAML document (see examples/fleets/onprem-and-cloud.yaml)::

    clusters:                      # in the service's declared order
      - name: onprem
        labels: {provider: onprem}
        pools:
          - name: h100
            flavor: {gpuModel: H100-80GB, gpuCount: 4, kind: bare-metal, pricePerGpuHour: 1.2}
            minNodes: 1
            maxNodes: 1
            nodeBootDelay: 300s    # default: by the flavor's kind (bare metal 300s, VM 60s)
        replicaStartDelay: 20s     # default: the replay's service model (20s)
    placement:                     # the service's spec.placement
      policy: fill                 # fill | spread | failover (kgpu.multicluster.placement)
      clusters: [onprem, cloud]    # and/or clusterSelector: {matchLabels: {...}}
    failoverAfter: 10s             # grace before a silent (suspect) cluster is declared unavailable (the default)
    outages:
      - {cluster: onprem, start: 28m, end: 38m}   # trace time, from the first request

A pool's `flavor` is the NodePool's flavor (`kgpu.api.models.Flavor`): a catalog name, or a GPU
model and count, and its price per GPU-hour (the catalog's unless `pricePerGpuHour` says what you
pay, e.g. an on-premises pool's amortised cost). Errors name the field (`clusters[1].pools[0].maxNodes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import Field, PlainValidator, ValidationError, model_validator

from kgpu.api.errors import FieldError, invalid, raise_field_errors, unsupported
from kgpu.api.models import Flavor, KgpuModel, PlacementSpec
from kgpu.api.pydantic_errors import field_errors_from_pydantic
from kgpu.backends.sim.nodes import JOIN_DELAY_S, parse_duration
from kgpu.multicluster.health import DEFAULT_GRACE_S


class FleetError(ValueError):
    """The fleet file is missing, not YAML, or invalid (one line per field)."""


def _seconds(value: str | int | float) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 90s, 10m or 1h, or a number of seconds")
    seconds = float(value) if isinstance(value, (int, float)) else parse_duration(value)
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def _checked(value: object) -> str | int | float:
    try:
        if not isinstance(value, (str, int, float)):
            raise ValueError("must be a duration such as 90s, 10m or 1h, or a number of seconds")
        _seconds(value)
    except ValueError as exc:
        raise_field_errors(
            [invalid("", value if isinstance(value, (str, int, float)) else str(value), str(exc))]
        )
    return value  # type: ignore[return-value]


# A duration as written (`90s`, `10m`, `1h`, or seconds), checked when the file is read.
Duration = Annotated[str | int | float, PlainValidator(_checked)]


class FleetPool(KgpuModel):
    name: str = Field("gpu", min_length=1, max_length=63)
    flavor: Flavor
    min_nodes: int = Field(0, ge=0, le=10_000)
    max_nodes: int = Field(..., ge=0, le=10_000)
    node_boot_delay: Duration | None = None

    @model_validator(mode="after")
    def _pool_rules(self) -> FleetPool:
        errors = []
        if self.flavor.gpu_count < 1:
            errors.append(invalid("flavor.gpuCount", self.flavor.gpu_count, "a fleet pool needs GPU nodes"))
        if self.max_nodes < self.min_nodes:
            errors.append(invalid("maxNodes", self.max_nodes, f"must be >= minNodes ({self.min_nodes})"))
        raise_field_errors(errors)
        return self

    @property
    def boot_s(self) -> float:
        """Seconds from asking for a node to its joining: the pool's, else by the flavor's kind."""
        if self.node_boot_delay is not None:
            return _seconds(self.node_boot_delay)
        return JOIN_DELAY_S[self.flavor.kind or "vm"]

    @property
    def price(self) -> float:
        return float(self.flavor.price_per_gpu_hour or 0.0)


class FleetCluster(KgpuModel):
    name: str = Field(..., min_length=1, max_length=63)
    labels: dict[str, str] = Field(default_factory=dict)
    local: bool = False
    pools: list[FleetPool] = Field(..., min_length=1)
    replica_start_delay: Duration | None = None

    def replica_start_s(self, default: float) -> float:
        """Seconds from a replica's start to its serving here: the cluster's delay, else ``default``."""
        return default if self.replica_start_delay is None else _seconds(self.replica_start_delay)

    @property
    def max_gpus(self) -> int:
        return sum(p.max_nodes * p.flavor.gpu_count for p in self.pools)


class Outage(KgpuModel):
    cluster: str
    start: Duration
    end: Duration

    @property
    def start_s(self) -> float:
        return _seconds(self.start)

    @property
    def end_s(self) -> float:
        return _seconds(self.end)


class Fleet(KgpuModel):
    clusters: list[FleetCluster] = Field(..., min_length=1)
    placement: PlacementSpec  # the service's spec.placement
    failover_after: Duration = DEFAULT_GRACE_S  # the control plane's grace for a silent cluster
    outages: list[Outage] = Field(default_factory=list)

    @model_validator(mode="after")
    def _fleet_rules(self) -> Fleet:
        errors: list[FieldError] = []
        names = [c.name for c in self.clusters]
        for i, name in enumerate(names):
            if name in names[:i]:
                errors.append(invalid(f"clusters[{i}].name", name, "names another cluster already"))
            pools = [p.name for p in self.clusters[i].pools]
            for j, pool in enumerate(pools):
                if pool in pools[:j]:
                    errors.append(
                        invalid(f"clusters[{i}].pools[{j}].name", pool, "names another pool already")
                    )
        for i, name in enumerate(self.placement.clusters):
            if name not in names:
                errors.append(unsupported(f"placement.clusters[{i}]", name, names))
        if not errors and not self.allowed():
            errors.append(FieldError("placement.clusterSelector", "matches no cluster of the fleet"))
        for i, outage in enumerate(self.outages):
            if outage.cluster not in names:
                errors.append(unsupported(f"outages[{i}].cluster", outage.cluster, names))
            if outage.end_s <= outage.start_s:
                errors.append(invalid(f"outages[{i}].end", outage.end, "must be after start"))
        raise_field_errors(errors)
        return self

    @property
    def failover_after_s(self) -> float:
        return _seconds(self.failover_after)

    def allowed(self) -> list[FleetCluster]:
        """The service's clusters in placement order, the control plane's rule: those
        `placement.clusters` names, in that order, then those `clusterSelector` matches, by name."""
        by_name = {c.name: c for c in self.clusters}
        chosen = [by_name[name] for name in self.placement.clusters if name in by_name]
        selector = self.placement.cluster_selector
        if selector is not None and selector.match_labels:
            chosen += [
                by_name[name]
                for name in sorted(by_name)
                if name not in self.placement.clusters
                and all(by_name[name].labels.get(k) == v for k, v in selector.match_labels.items())
            ]
        return chosen


def parse_fleet(document: object) -> Fleet:
    """Validate a decoded fleet document; every error names its field."""
    if not isinstance(document, dict):
        raise FleetError("a fleet must be a mapping with clusters, placement and outages")
    try:
        return Fleet.model_validate(document)
    except ValidationError as exc:
        raise FleetError("\n".join(str(e) for e in field_errors_from_pydantic(exc, Fleet))) from None


def outage_option(text: str) -> dict:
    """One outage written ``CLUSTER@START+LENGTH`` (``onprem@28m+10m``), as a fleet file's entry."""
    cluster, at, window = text.partition("@")
    start, plus, length = window.partition("+")
    if not (cluster and at and start and plus and length):
        raise FleetError(f'"{text}" is not CLUSTER@START+LENGTH, e.g. onprem@28m+10m')
    try:
        start_s, length_s = _seconds(start), _seconds(length)
    except ValueError as exc:
        raise FleetError(f'"{text}": {exc}') from None
    if length_s <= 0:
        raise FleetError(f'"{text}": the length must be above 0')
    return {"cluster": cluster, "start": start_s, "end": start_s + length_s}


def load_fleet(path: Path | str, outages: Sequence[dict] | None = None) -> Fleet:
    """The fleet of a YAML file; ``outages`` (fleet-file entries) replace the file's own."""
    path = Path(path)
    if not path.is_file():
        raise FleetError(f"fleet file {path} not found (see examples/fleets/onprem-and-cloud.yaml)")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise FleetError(f"{path}: not YAML: {exc}") from None
    if outages is not None and isinstance(document, dict):
        document = {**document, "outages": list(outages)}
    try:
        return parse_fleet(document)
    except FleetError as exc:
        raise FleetError(f"{path}: {exc}") from None
