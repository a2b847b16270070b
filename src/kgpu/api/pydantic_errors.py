"""Turn pydantic's validation errors into FieldErrors with Kubernetes paths and wording."""

from __future__ import annotations

import difflib
import re
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_camel

from kgpu.api.errors import FIELD_ERRORS_TYPE, FieldError, invalid, join_path, required, unsupported

# Map-valued fields: their keys are user data and go in brackets (limits[nvidia.com/gpu]).
MAP_FIELDS = frozenset({"labels", "annotations", "requests", "limits", "migLayout", "autoscaler", "status"})

_TYPE_MESSAGES = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "string_type": "must be a string",
    "bool_type": "must be a boolean",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "list_type": "must be a list",
}
_BOUND_MESSAGES = {
    "greater_than_equal": ("ge", "must be greater than or equal to {}"),
    "greater_than": ("gt", "must be greater than {}"),
    "less_than_equal": ("le", "must be less than or equal to {}"),
    "less_than": ("lt", "must be less than {}"),
}
_REQUIRED_DETAILS = {"metadata.name": "name or generateName is required"}


def loc_to_path(loc: tuple[str | int, ...]) -> str:
    path = ""
    previous: str | int | None = None
    for part in loc:
        if isinstance(part, int) or previous in MAP_FIELDS:
            path += f"[{part}]"
        else:
            path = join_path(path, to_camel(part) if "_" in part else part)
        previous = part if isinstance(part, int) or previous in MAP_FIELDS else to_camel(part)
    return path


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    """The model type behind Optional[...] / list[...] / dict[..., ...], if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, dict):
        for arg in typing.get_args(annotation):
            model = _inner_model(arg)
            if model is not None:
                return model
    return None


def _model_at(root: type[BaseModel] | None, loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    model = root
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        field = next(
            (f for name, f in model.model_fields.items() if part in (name, f.alias)),
            None,
        )
        if field is None:
            return None
        model = _inner_model(field.annotation)
    return model


def _unknown_field_message(root: type[BaseModel] | None, loc: tuple[str | int, ...]) -> str:
    name = str(loc[-1])
    message = f'unknown field "{name}"'
    model = _model_at(root, loc[:-1])
    if model is None:
        return message
    known = sorted(f.alias or n for n, f in model.model_fields.items())
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f'{message} (did you mean "{close[0]}"?)'
    return f"{message}; known fields: {', '.join(known)}"


def _literal_choices(expected: str) -> list[str]:
    # pydantic renders Literal choices as "'a', 'b' or 'c'".
    return re.findall(r"'((?:[^'\\]|\\.)*)'", expected)


def _convert(error: Any, root: type[BaseModel] | None) -> list[FieldError]:
    loc = tuple(error["loc"])
    path = loc_to_path(loc)
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind == FIELD_ERRORS_TYPE:
        return [FieldError(join_path(path, e.path), e.message) for e in ctx["field_errors"]]
    if kind == "missing":
        return [required(path, _REQUIRED_DETAILS.get(path, ""))]
    if kind == "extra_forbidden":
        return [FieldError(path, _unknown_field_message(root, loc))]
    if kind == "literal_error":
        return [unsupported(path, value, _literal_choices(ctx.get("expected", "")))]
    if kind in _TYPE_MESSAGES:
        return [invalid(path, value, _TYPE_MESSAGES[kind])]
    if kind in _BOUND_MESSAGES:
        key, template = _BOUND_MESSAGES[kind]
        return [invalid(path, value, template.format(ctx.get(key)))]
    return [invalid(path, value, error["msg"])]


def field_errors_from_pydantic(exc: ValidationError, root: type[BaseModel] | None = None) -> list[FieldError]:
    """FieldErrors for every error in ``exc``; ``root`` (the validated model) enables field suggestions."""
    errors: list[FieldError] = []
    for error in exc.errors():
        errors.extend(_convert(error, root))
    return errors
