"""Loader for the Azure LLM inference trace (Azure/AzurePublicDataset, 2023, CC BY 4.0).

Columns ``TIMESTAMP,ContextTokens,GeneratedTokens``; arrivals are returned in seconds from the
first request, at the trace's real timing.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from kgpu.sim.traces import TraceError  # one error type for every trace file

DEFAULT_TRACE = Path("../shared/data/azure-llm-inference-2023/AzureLLMInferenceTrace_code.csv")
SOURCE_HINT = (
    "download AzureLLMInferenceTrace_code.csv from the public repository Azure/AzurePublicDataset "
    "(data/AzureLLMInferenceTrace_code.csv, CC BY 4.0) and pass its path with --trace"
)
COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


@dataclass(frozen=True)
class TraceRequest:
    arrival_s: float
    context_tokens: int
    generated_tokens: int


def _parse_time(text: str) -> datetime:
    # The trace has 7 fractional digits; Python parses at most 6.
    head, _, frac = text.strip().partition(".")
    return datetime.fromisoformat(f"{head}.{(frac or '0')[:6]}")


def load_azure_trace(path: Path | str = DEFAULT_TRACE) -> list[TraceRequest]:
    """Requests sorted by arrival, arrival times relative to the first request."""
    path = Path(path)
    if not path.is_file():
        raise TraceError(f"trace file {path} not found: {SOURCE_HINT}")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise TraceError(f"{path}: missing column(s) {', '.join(missing)}; expected {','.join(COLUMNS)}")
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                rows.append(
                    (_parse_time(row["TIMESTAMP"]), int(row["ContextTokens"]), int(row["GeneratedTokens"]))
                )
            except (ValueError, TypeError) as exc:
                raise TraceError(f"{path}:{line}: {exc}") from exc
    if not rows:
        raise TraceError(f"{path}: the trace has no requests")
    rows.sort(key=lambda r: r[0])
    start = rows[0][0]
    return [TraceRequest((t - start).total_seconds(), ctx, gen) for t, ctx, gen in rows]
