"""Loaders for the Alibaba PAI "openb" GPU trace (alibaba/clusterdata, cluster-trace-gpu-v2023)."""

from __future__ import annotations

import csv
from pathlib import Path

from kgpu.scheduling.requests import PodRequest
from kgpu.scheduling.snapshot import NodeSpec

TRACE_SOURCE = "https://github.com/alibaba/clusterdata/tree/master/cluster-trace-gpu-v2023"
# Relative to the project root (the working directory), as the project's data README says.
DATA_DIR = Path("../shared/data/alibaba-gpu-v2023")
DEFAULT_PODS = DATA_DIR / "openb_pod_list_default.csv"
DEFAULT_NODES = DATA_DIR / "openb_node_list_gpu_node.csv"


class TraceError(ValueError):
    """A trace file is missing or malformed."""


def _open_rows(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise TraceError(
            f"trace file {path} not found; download the openb CSVs from the public repository "
            f"alibaba/clusterdata, folder cluster-trace-gpu-v2023 ({TRACE_SOURCE}), into {DATA_DIR}/"
        )
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise TraceError(
                f"{path}: missing column(s) {', '.join(missing)}; expected at least {', '.join(required)}"
            )
        return list(reader)


def _int(row: dict[str, str], column: str, path: Path, line: int) -> int:
    value = (row.get(column) or "0").strip() or "0"
    try:
        return int(float(value))
    except ValueError:
        raise TraceError(f"{path}:{line}: column {column}: not a number: {value!r}") from None


def load_nodes(path: Path | str = DEFAULT_NODES) -> list[NodeSpec]:
    """Nodes of an openb node list (``sn,cpu_milli,memory_mib,gpu,model``)."""
    path = Path(path)
    rows = _open_rows(path, ("sn", "cpu_milli", "memory_mib", "gpu", "model"))
    nodes = []
    for line, row in enumerate(rows, start=2):
        gpus = _int(row, "gpu", path, line)
        nodes.append(
            NodeSpec(
                name=row["sn"],
                cpu_milli=_int(row, "cpu_milli", path, line),
                memory_mib=_int(row, "memory_mib", path, line),
                gpu_count=gpus,
                gpu_model=(row["model"] or None) if gpus else None,
            )
        )
    return nodes


def load_pods(path: Path | str = DEFAULT_PODS) -> list[PodRequest]:
    """Requests of an openb pod list; ``gpu_spec`` (``|``-separated models) restricts the GPU model."""
    path = Path(path)
    rows = _open_rows(path, ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli"))
    pods = []
    for line, row in enumerate(rows, start=2):
        num_gpu = _int(row, "num_gpu", path, line)
        milli = _int(row, "gpu_milli", path, line) if num_gpu else 0
        spec = tuple(m for m in (row.get("gpu_spec") or "").split("|") if m)
        try:
            pods.append(
                PodRequest(
                    cpu_milli=_int(row, "cpu_milli", path, line),
                    memory_mib=_int(row, "memory_mib", path, line),
                    gpu_count=num_gpu,
                    gpu_milli=milli,
                    gpu_models=spec if num_gpu else (),
                )
            )
        except ValueError as exc:
            raise TraceError(f"{path}:{line}: {exc}") from None
    return pods
