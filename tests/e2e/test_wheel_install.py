"""The first run of a user who installed kgpu: build the wheel, install it into a fresh venv, `kgpu up` in an empty directory.

What it proves: the wheel carries everything `kgpu up` needs that is not a dependency (the example
service, the console's static files, the `kgpu` entry point), and `kgpu up` with no file serves the
example from a directory that has nothing of the repository in it: the installed package is what
runs (the test checks `kgpu.__file__`), not the checkout.

What it does not prove: that pip resolves kgpu's dependencies from an index. To cost seconds and no
network, the fresh venv reads the dependencies from the venv running the tests through a `.pth`
file (a site directory's `.pth` lines are added to `sys.path`, but `.pth` files inside the added
directory are not processed, so the checkout's editable install of kgpu stays invisible), and the
wheel is installed with `--no-deps --no-index`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import httpx

from tests.live_server import free_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_INPUT = "a first run from an empty directory"


def _run(args: list[str], env: dict[str, str], cwd: Path | None = None) -> str:
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _build_wheel(tmp_path: Path, env: dict[str, str]) -> Path:
    # A copy of what the build reads, so the build's egg-info and build/ never land in the checkout.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = tmp_path / "dist"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index", "--no-build-isolation",
         "--wheel-dir", str(dist), str(source)],
        env,
    )  # fmt: skip
    (wheel,) = dist.glob("kgpu-*.whl")
    return wheel


def test_wheel_installed_in_a_fresh_venv_serves_the_example_from_an_empty_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", COLUMNS="200")
    wheel = _build_wheel(tmp_path, env)
    names = set(zipfile.ZipFile(wheel).namelist())
    console = "kgpu/controlplane/console"
    assert {
        "kgpu/examples/minilm.yaml",
        f"{console}/index.html",
        f"{console}/vendor/uplot/uPlot.iife.min.js",
        f"{console}/vendor/uplot/uPlot.min.css",
        f"{console}/vendor/uplot/LICENSE",
    } <= names

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], env)
    (site,) = (venv / "lib").glob("python3*/site-packages")
    (site / "kgpu-test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--ignore-installed",
          str(wheel)], env)  # fmt: skip
    installed = _run([str(python), "-c", "import kgpu; print(kgpu.__file__)"], env, cwd=tmp_path).strip()
    assert Path(installed).is_relative_to(site), installed

    empty = tmp_path / "empty"
    empty.mkdir()
    port = free_port()
    log_path = tmp_path / "kgpu-up.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(venv / "bin" / "kgpu"), "up", "--port", str(port)],
            cwd=empty, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        answer = _first_answer(f"http://127.0.0.1:{port}", process, deadline_s=240)
        assert answer.status_code == 200, (
            f"{answer.status_code} {answer.text}\n{log_path.read_text()[-3000:]}"
        )
        (item,) = answer.json()["data"]
        assert len(item["embedding"]) == 384  # all-MiniLM-L6-v2's width
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert (empty / ".kgpu").is_dir()  # its state went where the user ran it


def _first_answer(url: str, process: subprocess.Popen, deadline_s: float) -> httpx.Response:
    """The example's first answer, polled until its replica is ready; fails early if `kgpu up` exits."""
    deadline = time.monotonic() + deadline_s
    body = {"model": "minilm", "input": EXAMPLE_INPUT}
    last: httpx.Response | str = "no answer"
    with httpx.Client(base_url=url, timeout=30) as http:
        while time.monotonic() < deadline:
            assert process.poll() is None, f"kgpu up exited with {process.returncode}"
            try:
                last = http.post("/v1/embeddings", json=body)
                if last.status_code == 200:
                    return last
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.5)
    raise AssertionError(f"the example did not answer in {deadline_s}s: {last}")
