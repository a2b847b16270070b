"""The JSON a benchmark script writes: what ran, when, with which settings and packages, then its numbers."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def write_results(path: Path, benchmark: str, config: dict, machine: dict, **numbers: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": benchmark,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": [Path(sys.executable).name, *sys.argv],
        "config": {
            key: value if isinstance(value, (int, float, bool)) or value is None else str(value)
            for key, value in config.items()
        },
        "machine": machine,
        **numbers,
    }
    path.write_text(json.dumps(document, indent=2))
