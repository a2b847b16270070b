"""A renderer for the subset of Helm's Go templates that charts/kgpu uses (no helm binary here).

Supported: ``{{ .Values.a.b }}``, ``.Release.Name``, ``.Release.Namespace``, ``.Chart.<Field>``,
``{{- ... -}}`` whitespace trimming, ``if``/``else``/``end`` blocks, and the pipeline functions ``quote``,
``toYaml`` and ``nindent N``. Anything else is an error, which keeps the chart's templates inside
what this renderer (and therefore the tests) can check.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


class TemplateError(ValueError):
    pass


def _lookup(path: str, scope: dict[str, Any]) -> Any:
    if not path.startswith("."):
        raise TemplateError(f"unsupported expression {path!r}")
    value: Any = scope
    for part in path[1:].split("."):
        if not isinstance(value, dict) or part not in value:
            raise TemplateError(f"{path}: no value")
        value = value[part]
    return value


def _to_yaml(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=True, default_flow_style=False).rstrip("\n")


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _pipeline(expr: str, scope: dict[str, Any]) -> Any:
    stages = [s.strip() for s in expr.split("|")]
    first = stages[0].split()
    if first[0] == "toYaml" and len(first) == 2:
        value: Any = _to_yaml(_lookup(first[1], scope))
    elif len(first) == 1:
        value = _lookup(first[0], scope)
    else:
        raise TemplateError(f"unsupported command {stages[0]!r}")
    for stage in stages[1:]:
        name, *args = stage.split()
        if name == "quote" and not args:
            value = json.dumps(_scalar(value))
        elif name == "nindent" and len(args) == 1:
            pad = " " * int(args[0])
            value = "\n" + "\n".join(pad + line if line else line for line in _scalar(value).split("\n"))
        else:
            raise TemplateError(f"unsupported function {stage!r}")
    return value


def _truthy(value: Any) -> bool:
    return bool(value)


def render_template(text: str, scope: dict[str, Any]) -> str:
    out: list[str] = []
    active = [True]  # one entry per open `if`
    position = 0
    trim_next = False
    for match in _ACTION.finditer(text):
        chunk = text[position : match.start()]
        if trim_next:
            chunk = chunk.lstrip()
        if match.group(1):
            chunk = chunk.rstrip()
        if all(active):
            out.append(chunk)
        action = match.group(2)
        if action.startswith("if "):
            active.append(all(active) and _truthy(_pipeline(action[3:], scope)))
        elif action == "else":
            if len(active) == 1:
                raise TemplateError("else without if")
            active[-1] = all(active[:-1]) and not active[-1]
        elif action == "end":
            if len(active) == 1:
                raise TemplateError("end without if")
            active.pop()
        elif action.startswith("/*"):
            pass
        elif all(active):
            out.append(_scalar(_pipeline(action, scope)))
        position = match.end()
        trim_next = bool(match.group(3))
    if len(active) != 1:
        raise TemplateError("if without end")
    tail = text[position:]
    out.append(tail.lstrip() if trim_next else tail)
    return "".join(out)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = (
            deep_merge(merged[key], value)
            if isinstance(value, dict) and isinstance(merged.get(key), dict)
            else value
        )
    return merged


def render_chart(
    chart_dir: Path,
    release: str = "kgpu",
    namespace: str = "kgpu-system",
    values: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Every object the chart's templates produce (like `helm template`), CRDs not included."""
    chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    defaults = yaml.safe_load((chart_dir / "values.yaml").read_text())
    scope = {
        "Values": deep_merge(defaults, values or {}),
        "Release": {"Name": release, "Namespace": namespace},
        "Chart": {"Name": chart["name"], "Version": chart["version"], "AppVersion": chart["appVersion"]},
    }
    objects = []
    for template in sorted((chart_dir / "templates").glob("*.yaml")):
        rendered = render_template(template.read_text(), scope)
        objects += [doc for doc in yaml.safe_load_all(rendered) if doc]
    return objects
