"""CPU threads from the cgroup quota, on cgroup trees laid out as the kernel mounts them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kgpu.serving.cpus import cgroup_cpu_limit, cpu_threads


def tree(tmp_path: Path, proc: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    root.mkdir(exist_ok=True)
    proc_cgroup = tmp_path / "proc-cgroup"
    proc_cgroup.write_text(proc)
    return root, proc_cgroup


@pytest.mark.parametrize(
    ("proc", "files", "cpus"),
    [
        pytest.param(
            "0::/kubepods/pod1/ctr\n",
            {"kubepods/pod1/ctr/cpu.max": "250000 100000\n"},
            2.5,
            id="v2-own-group",
        ),
        pytest.param(
            "0::/kubepods/pod1/ctr\n",
            {"kubepods/pod1/cpu.max": "100000 100000\n", "kubepods/pod1/ctr/cpu.max": "max 100000\n"},
            1.0,
            id="v2-a-parent-limits-an-unlimited-child",
        ),
        pytest.param("0::/user.slice\n", {"user.slice/cpu.max": "max 100000\n"}, None, id="v2-unlimited"),
        # A container's namespace mounts its own group at the root; the path may still name it.
        pytest.param("0::/kubepods/pod1/ctr\n", {"cpu.max": "200000 100000\n"}, 2.0, id="v2-in-a-container"),
        pytest.param(
            "4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n",
            {
                "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "300000\n",
                "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
            },
            3.0,
            id="v1-cpu-controller",
        ),
    ],
)
def test_cgroup_cpu_quota(tmp_path, proc: str, files: dict[str, str], cpus: float | None):
    root, proc_cgroup = tree(tmp_path, proc, files)
    assert cgroup_cpu_limit(root, proc_cgroup) == cpus


def test_cgroup_v1_minus_one_is_unlimited(tmp_path):
    root, proc = tree(
        tmp_path, "1:cpu:/\n", {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}
    )
    assert cgroup_cpu_limit(root, proc) is None


def test_no_cgroup_information_is_none(tmp_path):
    assert cgroup_cpu_limit(tmp_path / "none", tmp_path / "no-proc-file") is None


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs sched_getaffinity")
def test_threads_are_the_smaller_of_cores_and_quota_rounded_up(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    root, proc = tree(tmp_path, "0::/pod\n", {"pod/cpu.max": "150000 100000\n"})
    assert cpu_threads(root, proc) == 2  # 1.5 CPUs: two threads, not 64
    root, proc = tree(tmp_path / "big", "0::/pod\n", {"pod/cpu.max": "12800000 100000\n"})
    assert cpu_threads(root, proc) == 64  # a quota above the cores does not add threads
    root, proc = tree(tmp_path / "tiny", "0::/pod\n", {"pod/cpu.max": "10000 100000\n"})
    assert cpu_threads(root, proc) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "6")
    assert cpu_threads(root, proc) == 6  # set on purpose: it wins
