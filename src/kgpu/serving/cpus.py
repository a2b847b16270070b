"""How many CPU threads a replica should use.

Inside a container the CPU limit is a CFS quota (Kubernetes' ``limits.cpu``), not a set of
cores: ``sched_getaffinity`` still lists every core of the node, and a replica that starts
one thread per core on a 64-core node under a 2-CPU limit spends most of its time throttled.
So the count is the smallest of: an explicit ``OMP_NUM_THREADS``, the cores the process may
run on, and the CPU quota of its cgroup (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``; the
process's own group and every group above it, since a parent's limit applies too).

No maintained library reads the quota (psutil and ``os.process_cpu_count`` see affinity
only), hence the few lines here; the rules are those of the kernel's cgroup documentation.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def cpu_threads(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """CPU threads this process should use (at least 1)."""
    explicit = os.environ.get("OMP_NUM_THREADS", "")
    if explicit.isdigit() and int(explicit) > 0:
        return int(explicit)  # set on purpose, e.g. several replicas sharing one host
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_limit(cgroup_root, proc_cgroup)
    return max(1, min(cores, math.ceil(quota))) if quota is not None else max(1, cores)


def cgroup_cpu_limit(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """CPUs the process's cgroup quota allows (e.g. 2.5), or None when unlimited or unknown."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:  # cgroup v2: one unified tree
            limits += _quotas(cgroup_root, path, _v2_quota)
        elif "cpu" in controllers.split(","):  # cgroup v1: the cpu controller's tree
            limits += _quotas(cgroup_root / controllers, path, _v1_quota)
    return min(limits) if limits else None


def _quotas(mount: Path, path: str, read) -> list[float]:
    """Quotas of the group at ``path`` under ``mount`` and of every group above it.

    In a container the mount shows the container's own group at its root while the path
    still names it from the host's root; the groups that exist under the mount are read.
    """
    parts = [p for p in path.strip("/").split("/") if p]
    found = []
    for depth in range(len(parts), -1, -1):
        quota = read(mount.joinpath(*parts[:depth]))
        if quota is not None:
            found.append(quota)
    return found


def _v2_quota(group: Path) -> float | None:
    try:
        quota, _, period = (group / "cpu.max").read_text().strip().partition(" ")
    except OSError:
        return None
    return _ratio(quota, period or "100000")


def _v1_quota(group: Path) -> float | None:
    try:
        quota = (group / "cpu.cfs_quota_us").read_text().strip()
        period = (group / "cpu.cfs_period_us").read_text().strip()
    except OSError:
        return None
    return _ratio(quota, period)


def _ratio(quota: str, period: str) -> float | None:
    """quota / period in CPUs; "max" or -1 mean no limit."""
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None  # "max": unlimited
    return q / p if q > 0 and p > 0 else None
