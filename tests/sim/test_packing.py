"""Trace loading, workload tuning and the packing replay on a small sub-trace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kgpu.cli.sim import sim_app
from kgpu.scheduling import PodRequest
from kgpu.sim.packing import run_packing, shuffled, tune_workload
from kgpu.sim.traces import TraceError, load_nodes, load_pods

NODES_CSV = "sn,cpu_milli,memory_mib,gpu,model\n" + "".join(
    f"node-{i},{64000 if i % 2 else 16000},262144,{8 if i % 2 else 2},{'G2' if i % 2 else 'T4'}\n"
    for i in range(12)
)
PODS_CSV = (
    "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time\n"
    + "".join(
        f"pod-{i},{2000 + 500 * (i % 5)},4096,{[1, 1, 1, 0, 2, 8][i % 6]},{[1000, 300, 650, 0, 1000, 1000][i % 6]},,LS,Running,0,1,0\n"
        for i in range(40)
    )
)


@pytest.fixture
def trace(tmp_path: Path) -> tuple[Path, Path]:
    nodes, pods = tmp_path / "nodes.csv", tmp_path / "pods.csv"
    nodes.write_text(NODES_CSV)
    pods.write_text(PODS_CSV)
    return nodes, pods


def test_tuning_fills_to_the_ratio_without_passing_it() -> None:
    pods = [PodRequest(gpu_count=1, gpu_milli=m) for m in (1000, 500, 250)] + [PodRequest(cpu_milli=100)]
    capacity = 10_000
    tuned = tune_workload(pods, capacity, seed=7, ratio=1.3)
    total = sum(p.total_gpu_milli for p in tuned)
    assert total <= 13_000
    assert tuned[:4] == pods  # the trace itself comes first, copies are appended
    assert total + 250 > 13_000 or total + 500 > 13_000 or total + 1000 > 13_000
    assert tune_workload(pods, capacity, seed=7) == tuned  # the seed decides
    assert sorted(map(id, shuffled(tuned, 3))) == sorted(map(id, tuned))


def test_loaders_read_the_openb_columns(trace: tuple[Path, Path]) -> None:
    nodes, pods = trace
    specs = load_nodes(nodes)
    assert (specs[1].gpu_count, specs[1].gpu_model, specs[0].gpu_model) == (8, "G2", "T4")
    requests = load_pods(pods)
    assert requests[1].kind == "share" and requests[3].kind == "none" and requests[5].gpu_count == 8


def test_missing_trace_names_the_public_source(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="alibaba/clusterdata.*cluster-trace-gpu-v2023"):
        load_pods(tmp_path / "absent.csv")


@pytest.mark.parametrize(
    "policy", ["random", "dot-product", "gpu-packing", "gpu-clustering", "best-fit", "fgd", "kgpu"]
)
def test_replay_reports_every_percent(trace: tuple[Path, Path], policy: str) -> None:
    nodes, pods = trace
    result = run_packing(load_nodes(nodes), load_pods(pods), policy, seed=42)
    alloc = result["allocation_pct_at"]
    assert list(alloc) == [str(k) for k in range(1, 131)]
    values = list(alloc.values())
    assert values == sorted(values)  # pods never leave
    assert all(0 <= a <= 100.0 for a in values)
    assert values[-1] > 0
    assert all(0 <= f <= 100 for f in result["fragmentation_pct_at"].values())
    assert result["capacity_gpus"] == 6 * 8 + 6 * 2


def test_cli_prints_json(trace: tuple[Path, Path]) -> None:
    nodes, pods = trace
    out = CliRunner().invoke(
        sim_app,
        ["pack", "--trace", str(pods), "--nodes", str(nodes), "--policy", "fgd", "--seed", "43", "--json"],
    )
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert {
        "policy",
        "seed",
        "capacity_gpus",
        "allocation_pct_at",
        "unallocated_gpus_at_100",
        "fragmentation_pct_at",
        "seconds",
    } <= set(data)
    assert data["policy"] == "fgd" and data["seed"] == 43


def test_cli_refuses_an_unknown_policy(trace: tuple[Path, Path]) -> None:
    nodes, pods = trace
    out = CliRunner().invoke(
        sim_app, ["pack", "--trace", str(pods), "--nodes", str(nodes), "--policy", "nope"]
    )
    assert out.exit_code == 2 and "unknown policy" in out.output
