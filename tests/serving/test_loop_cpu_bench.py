"""bench/loop_cpu.py reads per-thread CPU time from /proc and finds kgpu's replica under the gateway."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench import loop_cpu

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_cpu_of_a_busy_thread_is_charged_to_it_not_to_the_main_thread():
    pid = os.getpid()
    spun, release = threading.Event(), threading.Event()

    def work() -> None:
        _spin(0.5)
        spun.set()
        release.wait(10)  # stay alive until read: /proc lists only living threads

    before = loop_cpu.thread_cpu_s(pid)
    worker = threading.Thread(target=work)
    worker.start()
    spun.wait(10)
    after = loop_cpu.thread_cpu_s(pid)
    release.set()
    worker.join()
    assert pid in before and pid in after  # the main thread's id is the process id
    main, others = loop_cpu.split_cpu(before, after, pid)
    assert others >= 0.3  # most of the half second of spinning shows, in clock ticks
    assert main < others


def test_finds_the_replica_process_among_the_gateways_descendants():
    # A stand-in gateway that starts a grandchild whose command line names kgpu.serving, as kgpu up does.
    grandchild = "import time; time.sleep(30)  # kgpu.serving"
    parent_code = (
        "import subprocess, sys, time; "
        f"subprocess.Popen([sys.executable, '-c', {grandchild!r}, '-m', 'kgpu.serving']); time.sleep(30)"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code])
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                replica = loop_cpu.replica_pid(parent.pid)
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert replica in loop_cpu.descendants(parent.pid)
        assert b"kgpu.serving" in Path(f"/proc/{replica}/cmdline").read_bytes()
    finally:
        for pid in loop_cpu.descendants(parent.pid):
            os.kill(pid, 9)
        parent.kill()
        parent.wait()
