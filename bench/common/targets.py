"""The targets the serving benchmark is judged by, evaluated from measured numbers only.

Each target yields PASS, MISS or n/a (with the reason: a system or concurrency level was not measured,
or the target belongs to another device or request shape). A point that had errors on either side
cannot PASS, because failed requests would otherwise flatter the ratio.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class TargetResult:
    name: str
    goal: str
    value: float | None
    status: str  # "PASS" | "MISS" | "n/a"
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)


def point(systems: dict, name: str, concurrency: int) -> dict | None:
    """The measured summary of ``name`` at ``concurrency``, or None when it was not measured."""
    system = systems.get(name) or {}
    for row in system.get("points", []):
        if row.get("concurrency") == concurrency:
            return row
    return None


def engine_ceiling(systems: dict) -> float | None:
    rows = (systems.get("engine") or {}).get("batch_sizes") or []
    best = max((row["seq_per_s"] for row in rows if row.get("seq_per_s")), default=None)
    return best


def _judge(name: str, goal: str, value: float | None, ok: bool, errors: int, detail: str) -> TargetResult:
    if value is None:
        return TargetResult(name, goal, None, "n/a", detail)
    if errors:
        return TargetResult(name, goal, value, "MISS", f"{detail}; {errors} failed requests in the points")
    return TargetResult(name, goal, value, "PASS" if ok else "MISS", detail)


def _ratio_target(systems: dict, other: str, concurrency: int, goal: float, strict: bool) -> TargetResult:
    op = ">" if strict else ">="
    name = f"kgpu / {other} throughput at concurrency {concurrency}"
    a, b = point(systems, "kgpu", concurrency), point(systems, other, concurrency)
    if a is None or b is None:
        missing = "kgpu" if a is None else other
        return TargetResult(name, f"{op} {goal:g}", None, "n/a", f"{missing} not measured at {concurrency}")
    if not b["emb_per_s"]:
        return TargetResult(name, f"{op} {goal:g}", None, "n/a", f"{other} completed no request")
    value = round(a["emb_per_s"] / b["emb_per_s"], 3)
    ok = value > goal if strict else value >= goal
    detail = f"{a['emb_per_s']:.1f} vs {b['emb_per_s']:.1f} emb/s"
    return _judge(name, f"{op} {goal:g}", value, ok, a["errors"] + b["errors"], detail)


def evaluate(systems: dict, device: str, inputs_per_request: int) -> list[TargetResult]:
    results: list[TargetResult] = []
    single = inputs_per_request == 1
    shape_note = f"stated for 1 input per request; this run sent {inputs_per_request}"

    # Throughput against the in-process ceiling at concurrency 64.
    name = "kgpu / engine ceiling at concurrency 64"
    ceiling = engine_ceiling(systems)
    k64 = point(systems, "kgpu", 64)
    if not single:
        results.append(TargetResult(name, ">= 0.8", None, "n/a", shape_note))
    elif ceiling is None or k64 is None:
        missing = "engine" if ceiling is None else "kgpu at 64"
        results.append(TargetResult(name, ">= 0.8", None, "n/a", f"{missing} not measured"))
    else:
        value = round(k64["emb_per_s"] / ceiling, 3)
        detail = f"{k64['emb_per_s']:.1f} emb/s vs best engine {ceiling:.1f} seq/s"
        results.append(_judge(name, ">= 0.8", value, value >= 0.8, k64["errors"], detail))

    for other, goal, strict in (("naive", 1.3, False), ("litserve", 1.0, True)):
        if single:
            results.append(_ratio_target(systems, other, 64, goal, strict))
        else:
            op = ">" if strict else ">="
            results.append(
                TargetResult(
                    f"kgpu / {other} throughput at concurrency 64", f"{op} {goal:g}", None, "n/a", shape_note
                )
            )

    # Added latency at concurrency 1: what one user feels compared with the simplest server.
    name = "kgpu p50 - naive p50 at concurrency 1 (ms)"
    a, b = point(systems, "kgpu", 1), point(systems, "naive", 1)
    if not single:
        results.append(TargetResult(name, "<= 2", None, "n/a", shape_note))
    elif a is None or b is None or a["p50_ms"] is None or b["p50_ms"] is None:
        results.append(TargetResult(name, "<= 2", None, "n/a", "kgpu or naive not measured at 1"))
    else:
        value = round(a["p50_ms"] - b["p50_ms"], 3)
        detail = f"{a['p50_ms']:.2f} ms vs {b['p50_ms']:.2f} ms"
        results.append(_judge(name, "<= 2", value, value <= 2.0, a["errors"] + b["errors"], detail))

    # GPU-only targets.
    name = "kgpu / naive throughput at concurrency 256 (GPU)"
    if device != "cuda":
        results.append(TargetResult(name, ">= 10", None, "n/a", "GPU target; this run is on CPU"))
    elif not single:
        results.append(TargetResult(name, ">= 10", None, "n/a", shape_note))
    else:
        result = _ratio_target(systems, "naive", 256, 10.0, False)
        result.name = name
        results.append(result)

    name = "kgpu embeddings/s with 32 inputs per request (GPU, best concurrency)"
    if device != "cuda":
        results.append(TargetResult(name, ">= 30000", None, "n/a", "GPU target; this run is on CPU"))
    elif inputs_per_request != 32:
        results.append(TargetResult(name, ">= 30000", None, "n/a", "needs --batch-inputs 32"))
    else:
        rows = (systems.get("kgpu") or {}).get("points", [])
        best = max(rows, key=lambda r: r["emb_per_s"], default=None)
        if best is None:
            results.append(TargetResult(name, ">= 30000", None, "n/a", "kgpu not measured"))
        else:
            value = best["emb_per_s"]
            detail = f"at concurrency {best['concurrency']}"
            results.append(_judge(name, ">= 30000", value, value >= 30000, best["errors"], detail))
    return results
