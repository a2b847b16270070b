"""How the benchmark brings kgpu up: `kgpu up -f <service file>` on a free port, throwaway state.

The service is examples/minilm.yaml (service ``minilm``) with the benchmark's device and dtype written
into ``spec.runtime``, and on GPU a whole ``nvidia.com/gpu`` so the replica owns the device exactly
like the other systems do. The adjusted copy lives in the temporary state directory; the example file
itself is never changed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "examples" / "minilm.yaml"


def kgpu_executable() -> list[str]:
    """The console script next to this interpreter when installed, else the module entry point."""
    script = Path(sys.executable).parent / "kgpu"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "kgpu.cli.main"]


def service_file(
    work_dir: Path, device: str, dtype: str, model_uri: str | None = None, engine_workers: int | None = None
) -> Path:
    """A copy of the example service pinned to ``device``/``dtype`` (``model_uri``, ``engine_workers`` when given)."""
    documents = [doc for doc in yaml.safe_load_all(EXAMPLE.read_text()) if doc]
    for doc in documents:
        if doc.get("kind") != "InferenceService":
            continue
        spec = doc.setdefault("spec", {})
        if model_uri is not None:
            spec["model"]["uri"] = model_uri
        runtime = spec.setdefault("runtime", {})
        runtime["device"] = device
        if engine_workers is not None:
            runtime["engineWorkers"] = engine_workers
        if dtype != "auto":
            runtime["dtype"] = dtype
        if device == "cuda":
            resources = spec.setdefault("resources", {})
            resources.setdefault("limits", {})["nvidia.com/gpu"] = 1
            resources.setdefault("requests", {})["nvidia.com/gpu"] = 1
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / "minilm-bench.yaml"
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return path


def up_command(
    port: int,
    work_dir: Path,
    device: str,
    dtype: str,
    model_uri: str | None = None,
    engine_workers: int | None = None,
) -> list[str]:
    services = service_file(work_dir, device, dtype, model_uri, engine_workers)
    state_dir = work_dir / "state"
    return [*kgpu_executable(), "up", "-f", str(services), "--port", str(port), "--state-dir", str(state_dir)]
