"""MIG geometry: place a layout of GPU-instance profiles on one GPU's memory slices.

A GPU has 7 compute slices and 8 memory slices; each instance takes a run of
memory slices starting at one of its profile's allowed starts, and instances may
not overlap. Layouts hold at most a handful of instances, so an exact
backtracking search over the allowed starts is instant.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kgpu.gpu.catalog import GPUModel, MigProfile

MIG_COMPUTE_SLICES = 7
MIG_MEMORY_SLICES = 8


@dataclass(frozen=True)
class MigPlacement:
    """A MIG instance at a memory-slice start; it covers slices ``start .. start + size - 1``."""

    profile: str
    start: int
    size: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _slice_ranges(slices: set[int]) -> str:
    """{0,1,2,5} -> "0-2, 5" for readable error messages."""
    ordered = sorted(slices)
    ranges: list[str] = []
    begin = prev = ordered[0]
    for s in [*ordered[1:], None]:
        if s is not None and s == prev + 1:
            prev = s
            continue
        ranges.append(f"{begin}-{prev}" if prev != begin else str(begin))
        if s is not None:
            begin = prev = s
    return ", ".join(ranges)


def _check_counts(model: GPUModel, layout: Mapping[str, int]) -> list[MigProfile]:
    """Resolve profile names and check counts; returns one entry per instance, largest first."""
    if not model.supports_mig:
        raise ValueError(f"{model.name} does not support MIG")
    if not layout:
        raise ValueError("MIG layout is empty: give at least one profile and count, e.g. {'1g.18gb': 7}")
    instances: list[MigProfile] = []
    for name, count in layout.items():
        try:
            profile = model.mig_profile(name)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"{name}: count must be a positive integer, got {count!r}")
        if count > profile.max_count:
            raise ValueError(f"{name}: at most {profile.max_count} per GPU on {model.name}, got {count}")
        instances.extend([profile] * count)
    compute = sum(p.compute_slices for p in instances)
    if compute > MIG_COMPUTE_SLICES:
        raise ValueError(
            f"MIG layout needs {compute} compute slices; one {model.name} has {MIG_COMPUTE_SLICES}"
        )
    # Big instances first: they have the fewest starts, so the search prunes early.
    instances.sort(key=lambda p: (-p.memory_slices, -p.compute_slices, len(p.starts), p.name))
    return instances


def place_mig_layout(model: GPUModel, layout: Mapping[str, int]) -> list[MigPlacement]:
    """Concrete non-overlapping placements for ``layout`` sorted by start, or ValueError saying why not."""
    instances = _check_counts(model, layout)
    placed: list[MigPlacement] = []
    used: set[int] = set()
    deepest: list[MigPlacement] = []

    def search(i: int) -> bool:
        nonlocal deepest
        if len(placed) > len(deepest):
            deepest = list(placed)
        if i == len(instances):
            return True
        profile = instances[i]
        # Identical instances are interchangeable: keep their starts increasing to skip permutations.
        min_start = placed[-1].start + 1 if placed and placed[-1].profile == profile.name else 0
        for start in profile.starts:
            covered = set(range(start, start + profile.memory_slices))
            if start < min_start or covered & used or max(covered) >= MIG_MEMORY_SLICES:
                continue
            placed.append(MigPlacement(profile.name, start, profile.memory_slices))
            used.update(covered)
            if search(i + 1):
                return True
            placed.pop()
            used.difference_update(covered)
        return False

    if search(0):
        return sorted(placed, key=lambda p: p.start)
    raise ValueError(_explain_misfit(model, instances, deepest))


def _explain_misfit(model: GPUModel, instances: list[MigProfile], deepest: list[MigPlacement]) -> str:
    blocked = instances[len(deepest)]
    starts = ", ".join(str(s) for s in blocked.starts[:-1])
    starts = f"{starts} or {blocked.starts[-1]}" if starts else str(blocked.starts[-1])
    if deepest:
        used = {s for p in deepest for s in range(p.start, p.start + p.size)}
        where = ", ".join(f"{p.profile} at start {p.start}" for p in sorted(deepest, key=lambda p: p.start))
        reason = (
            f"{where} use memory slices {_slice_ranges(used)}, leaving no free start for "
            f"{blocked.name} (it may start at memory slice {starts})"
        )
    else:
        reason = f"no allowed start for {blocked.name}"
    needed = sum(p.memory_slices for p in instances)
    if needed > MIG_MEMORY_SLICES:
        reason += f"; the layout needs {needed} of {MIG_MEMORY_SLICES} memory slices"
    return f"MIG layout does not fit one {model.name}: {reason}"
