"""Matplotlib for the CLI's `--plot` options, imported only when a plot is asked for."""

from __future__ import annotations

from typing import Any


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend, or a clear error naming the extra to install."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from kgpu.sim.traces import TraceError

        raise TraceError(
            "--plot needs matplotlib: pip install 'kgpu[bench]' (or pip install matplotlib)"
        ) from None
    return plt
