"""Validation errors with Kubernetes-style field paths and the API server's wording."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic_core import PydanticCustomError

# Error type carried through pydantic when a model's own rules fail; see raise_field_errors.
FIELD_ERRORS_TYPE = "kgpu_field_errors"


@dataclass(frozen=True)
class FieldError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ResourceValidationError(ValueError):
    """One or more invalid fields; ``str()`` gives one ``<path>: <message>`` line per error."""

    def __init__(self, errors: Iterable[FieldError], source: str | None = None) -> None:
        self.errors = list(errors)
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


def format_value(value: Any) -> str:
    """Render a value the way the API server does: strings quoted, numbers bare."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return repr(value)


def invalid(path: str, value: Any, detail: str) -> FieldError:
    return FieldError(path, f"Invalid value: {format_value(value)}: {detail}")


def required(path: str, detail: str = "") -> FieldError:
    return FieldError(path, f"Required value: {detail}" if detail else "Required value")


def unsupported(path: str, value: Any, supported: Iterable[str]) -> FieldError:
    choices = ", ".join(json.dumps(s) for s in supported)
    return FieldError(path, f"Unsupported value: {format_value(value)}: supported values: {choices}")


def forbidden(path: str, detail: str) -> FieldError:
    return FieldError(path, f"Forbidden: {detail}")


def join_path(prefix: str, sub: str) -> str:
    if not prefix:
        return sub
    if not sub:
        return prefix
    return prefix + sub if sub.startswith("[") else f"{prefix}.{sub}"


def raise_field_errors(errors: list[FieldError]) -> None:
    """Raise from a pydantic validator so the errors keep their own paths (relative to the model).

    Pydantic wraps plain ValueErrors into one message at the model's location; this
    custom error carries the FieldErrors through so the loader can rebuild full paths.
    """
    if errors:
        summary = "; ".join(str(e) for e in errors)
        raise PydanticCustomError(
            FIELD_ERRORS_TYPE, "{summary}", {"summary": summary, "field_errors": errors}
        )
