"""What a results file records of the machine (its GPU, the package versions), and the environment of
the child processes a benchmark starts (offline, kgpu's sources and the benchmarks importable)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def machine_facts(device: str) -> dict:
    """What results files record of the machine: its GPU when one was used, and the package versions."""
    return {"gpu": gpu_name() if device == "cuda" else None, "versions": versions()}


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for package in (
        "torch",
        "transformers",
        "sentence-transformers",
        "litserve",
        "fastapi",
        "uvicorn",
        "aiohttp",
        "orjson",
    ):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = None
    return out


def gpu_name() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=15,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"
    paths = env.get("PYTHONPATH", "").split(os.pathsep)
    for path in (str(REPO_ROOT), str(REPO_ROOT / "src")):  # `python -m bench.<name>` and kgpu itself
        if path not in paths:
            paths.insert(0, path)
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env
