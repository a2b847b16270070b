"""Workload variants of the openb trace: each moves one quantity to its level and keeps the rest."""

from __future__ import annotations

import re
import statistics
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kgpu.cli.sim import sim_app
from kgpu.sim.traces import DEFAULT_NODES, DEFAULT_PODS, load_nodes, load_pods
from kgpu.sim.variants import (
    LEVELS,
    build_variant,
    mix,
    model_weights,
    parse_name,
    pod_class,
    variant_names,
    write_pods,
)

needs_trace = pytest.mark.skipif(
    not (DEFAULT_PODS.is_file() and DEFAULT_NODES.is_file()), reason="openb trace not in ../shared/data"
)

# The quantity each dimension moves, and its value at a level (cpu: the trace's value scaled).
TARGET_KEY = {
    "cpu": "cpu_only_cpu_pct",
    "gpushare": "share_pods_pct",
    "gpuspec": "pinned_pods_pct",
    "multigpu": "multi_gpu_pct",
}
# The classes whose count a dimension changes; every other class keeps its count exactly.
MOVED = {"cpu": {"cpu"}, "gpushare": {"share", "single", "multi"}, "gpuspec": set(), "multigpu": {"multi"}}


@pytest.fixture(scope="module")
def trace() -> tuple[list, list]:
    return load_nodes(), load_pods()


def by_class(pods: list) -> dict[str, list]:
    out: dict[str, list] = {"cpu": [], "share": [], "single": [], "multi": []}
    for p in pods:
        out[pod_class(p)].append(replace(p, gpu_models=()))
    return out


def expected_level(dimension: str, level: int, base_pods: list) -> float:
    if dimension != "cpu":
        return float(level)
    cpu_only = sum(p.cpu_milli for p in base_pods if p.gpu_count == 0)
    rest = sum(p.cpu_milli for p in base_pods) - cpu_only
    return 100 * cpu_only * level / 100 / (cpu_only * level / 100 + rest)


def assert_same_distribution(variant: list, trace: list, what: str) -> None:
    """Means of CPU, memory and GPU within 4 standard errors; the request histogram close."""
    for field in ("cpu_milli", "memory_mib", "total_gpu_milli"):
        values = [getattr(p, field) for p in trace]
        mean, sd = statistics.fmean(values), statistics.pstdev(values)
        got = statistics.fmean(getattr(p, field) for p in variant)
        assert abs(got - mean) <= 4 * sd / len(variant) ** 0.5 + 1e-9, (what, field, got, mean)
    a, b = Counter(p.total_gpu_milli for p in variant), Counter(p.total_gpu_milli for p in trace)
    distance = 0.5 * sum(abs(a[k] / len(variant) - b[k] / len(trace)) for k in set(a) | set(b))
    assert distance <= 0.08, (what, distance)


@needs_trace
@pytest.mark.parametrize("name", variant_names())
def test_variant_moves_one_quantity_and_keeps_the_rest(trace: tuple[list, list], name: str) -> None:
    nodes, pods = trace
    dimension, level = parse_name(name)
    variant = build_variant(name, pods, nodes).pods
    got = mix(variant)
    assert got[TARGET_KEY[dimension]] == pytest.approx(expected_level(dimension, level, pods), abs=0.5)
    before, after = by_class(pods), by_class(variant)
    for cls, members in after.items():
        if cls not in MOVED[dimension]:
            assert len(members) == len(before[cls]), (cls, "count changed")
        if members:
            assert_same_distribution(members, before[cls], f"{name}/{cls}")
    if dimension == "gpushare" and level < 100:  # whole-GPU pods keep their mix of 1, 2, 4 and 8 GPUs
        whole = before["single"] + before["multi"]
        assert_same_distribution(after["single"] + after["multi"], whole, f"{name}/whole")
    if dimension != "gpuspec":
        assert got["pinned_pods_pct"] == 0


@needs_trace
def test_pinned_pods_go_to_models_that_can_host_them(trace: tuple[list, list]) -> None:
    nodes, pods = trace
    variant = build_variant("gpuspec33", pods, nodes).pods
    pinned = [p for p in variant if p.gpu_models]
    assert {m for p in pinned for m in p.gpu_models} >= {"G2", "T4"}
    for pod in pinned:
        assert pod.gpu_models[0] in model_weights(replace(pod, gpu_models=()), nodes)
    # G2 holds most GPUs, so most pins name it
    assert Counter(p.gpu_models[0] for p in pinned).most_common(1)[0][0] == "G2"


@needs_trace
def test_a_variant_is_the_same_for_the_same_seed_and_reads_back_from_csv(
    trace: tuple[list, list], tmp_path: Path
) -> None:
    nodes, pods = trace
    first = build_variant("gpuspec10", pods, nodes).pods
    assert build_variant("gpuspec10", pods, nodes).pods == first
    assert build_variant("gpuspec10", pods, nodes, seed=1).pods != first
    path = tmp_path / "v.csv"
    write_pods(first, path, prefix="v")
    assert load_pods(path) == first


def test_every_dimension_has_several_levels_and_names_parse_back() -> None:
    assert all(len(levels) >= 4 for levels in LEVELS.values())
    assert [parse_name(n) for n in variant_names()] == [(d, lv) for d, lvs in LEVELS.items() for lv in lvs]
    assert parse_name("gpushare30") == ("gpushare", 30)  # a level nobody tuned on
    for bad in ("gpushare130", "cpu50", "gpushare", "multigpu40+multigpu30"):
        with pytest.raises(ValueError, match=re.escape(f"variant '{bad}'")):
            build_variant(bad, [], [])


@needs_trace
def test_a_mix_of_two_dimensions_moves_both_quantities(trace: tuple[list, list]) -> None:
    nodes, pods = trace
    got = mix(build_variant("multigpu40+gpuspec20", pods, nodes).pods)
    assert got["multi_gpu_pct"] == pytest.approx(40, abs=0.5)
    assert got["pinned_pods_pct"] == pytest.approx(20, abs=0.5)
    assert got["pods"] > len(pods)  # multi-GPU pods were added


def test_cli_refuses_an_unknown_variant_by_name() -> None:
    out = CliRunner().invoke(sim_app, ["variants", "--names", "cpu999"])
    assert out.exit_code == 1
    assert "unknown variant 'cpu999'" in out.output


def test_a_pod_list_a_variant_cannot_be_built_from_is_a_clear_error() -> None:
    from kgpu.scheduling.requests import PodRequest
    from kgpu.scheduling.snapshot import NodeSpec

    nodes = [NodeSpec("n", 8000, 16384, 2, "T4")]
    singles = [PodRequest(cpu_milli=1000, gpu_count=1, gpu_milli=1000)] * 4
    with pytest.raises(ValueError, match="no multi-GPU pods|has none"):
        build_variant("multigpu30", singles, nodes)
    too_big = [PodRequest(cpu_milli=64000, gpu_count=1, gpu_milli=1000)] * 4
    with pytest.raises(ValueError, match="no node can host"):
        build_variant("gpuspec100", too_big, nodes)
