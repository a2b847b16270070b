"""Workload variants of the openb trace, one dimension at a time, as the FGD paper's artifact named them.

The artifact evaluated FGD on mixes built from the default pod list, varying one property at a
time (``openb_pod_list_cpu050`` ... ``gpushare100`` ... ``gpuspec33`` ... ``multigpu50``). Those
files are not shipped with the trace here, so this module rebuilds them from the default pod list.
The rule for every dimension: split the pods into classes (CPU-only, GPU-sharing, one whole GPU,
several whole GPUs), change the count of the classes that dimension is about, and keep every other
class's count and every class's own distribution (each class is resampled in whole copies plus a
random subset of its pods, never by inventing requests). Levels:

- ``cpu050`` ... ``cpu250``: CPU-only pods' total CPU request at 0.5x, 1x, 2x and 2.5x the trace's
  (GPU pods unchanged); the trace's CPU-only pods ask for 22.5% of all requested CPU, so the levels
  give about 12.7%, 22.5%, 36.7% and 42.1%.
- ``gpushare20`` ... ``gpushare100``: GPU-sharing pods (one GPU, ``gpu_milli < 1000``) as 20-100% of
  the GPU pods (the trace: 43.6%); the GPU pods' count is kept, whole-GPU pods keep their own mix
  of 1, 2, 4 and 8 GPUs.
- ``gpuspec10`` ... ``gpuspec33``: that share of the GPU pods, chosen uniformly at random, pinned to
  one GPU model (``gpu_spec``; the trace pins none). The model is drawn in proportion to the
  cluster's GPUs of each model among the models with a node big enough for the pod (GPU count,
  CPU and memory), so a pinned pod can always run somewhere and big pools get most pins.
- ``multigpu20`` ... ``multigpu50``: pods with several whole GPUs as that share of the requested
  GPU (the trace: 7.3%); single-GPU and CPU-only pods are kept, multi-GPU pods keep their own mix.

Any other level in a dimension's range is a variant too (``multigpu35``), and so is a mix of
dimensions applied in turn (``multigpu40+gpuspec20``): checks on mixes nothing was tuned on.

A variant is shuffled once with its build seed, so the packing benchmark's tuning (which drops pods
from the end when a trace alone exceeds the target) treats every class alike.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from kgpu.scheduling.requests import MILLI, PodRequest
from kgpu.scheduling.snapshot import NodeSpec

BUILD_SEED = 0

# dimension -> levels, in the artifact's file naming (cpu: multiple of the trace's CPU-only request).
LEVELS: dict[str, tuple[int, ...]] = {
    "cpu": (50, 100, 200, 250),
    "gpushare": (20, 40, 60, 80, 100),
    "gpuspec": (10, 20, 25, 33),
    "multigpu": (20, 30, 40, 50),
}
NAME_FORMAT = {"cpu": "cpu{:03d}", "gpushare": "gpushare{}", "gpuspec": "gpuspec{}", "multigpu": "multigpu{}"}
# Levels a name may ask for beyond LEVELS (checks on levels and mixes nobody tuned on), inclusive.
LEVEL_RANGE = {"cpu": (1, 400), "gpushare": (1, 100), "gpuspec": (1, 100), "multigpu": (1, 90)}
# Not looked at while the kgpu policy was developed (beyond the first table of every variant);
# the bench reports them apart.
HELD_OUT = ("cpu200", "gpushare60", "gpuspec25", "multigpu20")


def pod_class(pod: PodRequest) -> str:
    """'cpu' (no GPU), 'share' (part of one GPU), 'single' (one whole GPU) or 'multi' (several)."""
    if pod.gpu_count == 0:
        return "cpu"
    if pod.gpu_milli < MILLI:
        return "share"
    return "single" if pod.gpu_count == 1 else "multi"


@dataclass(frozen=True)
class Variant:
    name: str
    dimension: str
    level: int
    pods: list[PodRequest]


def _classes(pods: Sequence[PodRequest]) -> dict[str, list[PodRequest]]:
    out: dict[str, list[PodRequest]] = {"cpu": [], "share": [], "single": [], "multi": []}
    for pod in pods:
        out[pod_class(pod)].append(pod)
    return out


def resample(pods: Sequence[PodRequest], count: int, rng: np.random.Generator) -> list[PodRequest]:
    """``count`` pods from ``pods``: whole copies, then a random subset without replacement.

    Stratified this way a class keeps its own distribution as closely as a count allows (exactly,
    for whole multiples).
    """
    if count <= 0 or not pods:
        return []
    copies, rest = divmod(count, len(pods))
    out = list(pods) * copies
    out += [pods[i] for i in sorted(rng.choice(len(pods), size=rest, replace=False))]
    return out


def _cpu(classes: dict[str, list[PodRequest]], level: int, _nodes, rng) -> list[PodRequest]:
    gpu = classes["share"] + classes["single"] + classes["multi"]
    return gpu + resample(classes["cpu"], round(len(classes["cpu"]) * level / 100), rng)


def _gpushare(classes: dict[str, list[PodRequest]], level: int, _nodes, rng) -> list[PodRequest]:
    whole = classes["single"] + classes["multi"]
    gpu_pods = len(classes["share"]) + len(whole)
    shares = round(gpu_pods * level / 100)
    return classes["cpu"] + resample(classes["share"], shares, rng) + resample(whole, gpu_pods - shares, rng)


def _multigpu(classes: dict[str, list[PodRequest]], level: int, _nodes, rng) -> list[PodRequest]:
    single_milli = sum(p.total_gpu_milli for p in classes["share"] + classes["single"])
    multi = classes["multi"]
    if not multi:
        raise ValueError("multigpu variants resample the pod list's multi-GPU pods, and it has none")
    mean_multi = sum(p.total_gpu_milli for p in multi) / len(multi)
    count = round(level / (100 - level) * single_milli / mean_multi)
    return classes["cpu"] + classes["share"] + classes["single"] + resample(multi, count, rng)


def model_weights(pod: PodRequest, nodes: Sequence[NodeSpec]) -> dict[str, int]:
    """GPUs per model, over the models with at least one node that can host ``pod`` on its own."""
    fits = {
        n.gpu_model
        for n in nodes
        if n.gpu_model
        and n.gpu_count >= pod.gpu_count
        and n.cpu_milli >= pod.cpu_milli
        and n.memory_mib >= pod.memory_mib
    }
    weights: dict[str, int] = {}
    for n in nodes:
        if n.gpu_model in fits:
            weights[n.gpu_model] = weights.get(n.gpu_model, 0) + n.gpu_count
    return weights


def _gpuspec(classes: dict[str, list[PodRequest]], level: int, nodes, rng) -> list[PodRequest]:
    gpu = classes["share"] + classes["single"] + classes["multi"]
    pinned = set(rng.choice(len(gpu), size=round(len(gpu) * level / 100), replace=False).tolist())
    out = list(classes["cpu"])
    for i, pod in enumerate(gpu):
        if i in pinned:
            weights = model_weights(pod, nodes)
            if not weights:
                raise ValueError(
                    f"gpuspec: no node can host the pod {pod} on its own, so no model to pin it to"
                )
            names = sorted(weights)
            p = np.array([weights[m] for m in names], dtype=np.float64)
            pod = replace(pod, gpu_models=(names[int(rng.choice(len(names), p=p / p.sum()))],))
        out.append(pod)
    return out


BUILDERS: dict[str, Callable[..., list[PodRequest]]] = {
    "cpu": _cpu,
    "gpushare": _gpushare,
    "gpuspec": _gpuspec,
    "multigpu": _multigpu,
}


def variant_names() -> list[str]:
    return [NAME_FORMAT[d].format(level) for d, levels in LEVELS.items() for level in levels]


def parse_name(name: str) -> tuple[str, int]:
    """``'gpushare40'`` -> ``('gpushare', 40)``; a clear error for a name that is not a variant.

    Any level in ``LEVEL_RANGE`` is a variant (``gpushare30``), written as the listed ones are.
    """
    for dimension, (low, high) in LEVEL_RANGE.items():
        digits = name.removeprefix(dimension)
        if (
            digits.isdigit()
            and low <= int(digits) <= high
            and NAME_FORMAT[dimension].format(int(digits)) == name
        ):
            return dimension, int(digits)
    ranges = ", ".join(
        f"{NAME_FORMAT[d].format(lo)}..{NAME_FORMAT[d].format(hi)}" for d, (lo, hi) in LEVEL_RANGE.items()
    )
    raise ValueError(
        f"unknown variant {name!r}; known: {', '.join(variant_names())} (any level in {ranges}, "
        "or two or more of other dimensions joined by '+')"
    )


def parse_mix(name: str) -> list[tuple[str, int]]:
    """``'multigpu40+gpuspec20'`` -> ``[('multigpu', 40), ('gpuspec', 20)]``: levels of distinct dimensions."""
    parts = [parse_name(part) for part in name.split("+")]
    dimensions = [d for d, _ in parts]
    if len(set(dimensions)) != len(dimensions):
        raise ValueError(f"variant {name!r}: each dimension at most once")
    return parts


def build_variant(
    name: str, pods: Sequence[PodRequest], nodes: Sequence[NodeSpec], seed: int = BUILD_SEED
) -> Variant:
    """The variant ``name`` of the pod list ``pods`` (the default trace) for the cluster ``nodes``.

    A mix of dimensions (``multigpu40+gpuspec20``) applies each in the order given.
    """
    parts = parse_mix(name)
    rng = np.random.default_rng([seed, *name.encode()])
    built = list(pods)
    for dimension, level in parts:
        built = BUILDERS[dimension](_classes(built), level, nodes, rng)
    order = rng.permutation(len(built))
    dimension, level = parts[0]
    return Variant(name, dimension, level, [built[i] for i in order])


def build_variants(
    pods: Sequence[PodRequest],
    nodes: Sequence[NodeSpec],
    names: Sequence[str] | None = None,
    seed: int = BUILD_SEED,
) -> list[Variant]:
    return [build_variant(n, pods, nodes, seed) for n in (names or variant_names())]


def mix(pods: Sequence[PodRequest]) -> dict[str, float]:
    """The four quantities the variants vary, plus the pod count: what a variant is checked against."""
    classes = _classes(pods)
    gpu_pods = len(pods) - len(classes["cpu"])
    cpu_total = sum(p.cpu_milli for p in pods)
    gpu_total = sum(p.total_gpu_milli for p in pods)
    return {
        "pods": len(pods),
        "cpu_only_cpu_pct": 100 * sum(p.cpu_milli for p in classes["cpu"]) / cpu_total if cpu_total else 0.0,
        "share_pods_pct": 100 * len(classes["share"]) / gpu_pods if gpu_pods else 0.0,
        "pinned_pods_pct": 100 * sum(1 for p in pods if p.gpu_count and p.gpu_models) / gpu_pods
        if gpu_pods
        else 0.0,
        "multi_gpu_pct": 100 * sum(p.total_gpu_milli for p in classes["multi"]) / gpu_total
        if gpu_total
        else 0.0,
    }


HEADER = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli", "gpu_spec")


def write_pods(pods: Sequence[PodRequest], path: Path, prefix: str) -> None:
    """An openb-format pod list (the columns ``kgpu.sim.traces.load_pods`` reads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        for i, p in enumerate(pods):
            writer.writerow(
                (
                    f"{prefix}-{i:05d}",
                    p.cpu_milli,
                    p.memory_mib,
                    p.gpu_count,
                    p.gpu_milli,
                    "|".join(p.gpu_models),
                )
            )
