"""Read and write kgpu resources as YAML or JSON, with field paths in every error."""

from __future__ import annotations

import json
from collections.abc import Iterable
from os import PathLike
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kgpu.api.errors import (
    FieldError,
    ResourceValidationError,
    invalid,
    join_path,
    required,
    unsupported,
)
from kgpu.api.models import RESOURCE_KINDS, Resource
from kgpu.api.pydantic_errors import field_errors_from_pydantic

# Resources nest a few levels (spec.resources.limits); far deeper is a mistake, and near Python's
# recursion limit it would overflow the stack of validation or of rendering the value in an error.
MAX_NESTING = 64


def _too_deep(obj: Any, limit: int) -> str | None:
    """The field (named to two levels) holding values nested past `limit` levels, if any; iterative."""
    stack: list[tuple[Any, int, str]] = [(obj, 0, "")]
    while stack:
        value, depth, path = stack.pop()
        if depth > limit:
            return path
        if isinstance(value, dict):
            children = [(str(key), child) for key, child in value.items()]
        elif isinstance(value, list):
            children = [(f"[{index}]", child) for index, child in enumerate(value)]
        else:
            continue
        for key, child in children:
            stack.append((child, depth + 1, join_path(path, key) if depth < 2 else path))
    return None


def parse_resource(obj: Any) -> Resource:
    """Validate one decoded document (a dict) into the model its ``kind`` names."""
    if not isinstance(obj, dict):
        raise ResourceValidationError(
            [invalid("", obj, "a resource must be an object with apiVersion, kind, metadata and spec")]
        )
    if (deep := _too_deep(obj, MAX_NESTING)) is not None:
        raise ResourceValidationError([FieldError(deep, f"must not nest deeper than {MAX_NESTING} levels")])
    kind = obj.get("kind")
    if kind is None:
        raise ResourceValidationError(
            [required("kind", "one of " + ", ".join(f'"{k}"' for k in RESOURCE_KINDS))]
        )
    if kind not in RESOURCE_KINDS:
        raise ResourceValidationError([unsupported("kind", kind, RESOURCE_KINDS)])
    model = RESOURCE_KINDS[kind]
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise ResourceValidationError(field_errors_from_pydantic(exc, model)) from None


# Aliases let a few hundred bytes of YAML stand for billions of values ("billion laughs"); whatever then
# walks the values (validation, an error message, the store) would run out of memory. No resource needs
# more than this: the bound counts each node once per place it appears, a scalar by its length.
MAX_YAML_EXPANDED_SIZE = 1_000_000


class YAMLExpansionError(yaml.YAMLError):
    """A document whose aliases expand it past MAX_YAML_EXPANDED_SIZE (or refer to themselves)."""


class _UniqueKeys:
    """PyYAML's safe constructor, refusing a key set twice in one mapping (PyYAML keeps the last silently).

    kubectl refuses such files ('key "metadata" already set in map'): a repeated key is nearly always an
    edit gone wrong, and keeping one half of it applies something nobody wrote. Keys merged in with
    ``<<`` may still be overridden, as YAML's merge keys mean.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:  # an unhashable key: the base loader reports it
                    break
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"key {json.dumps(key, default=str)} already set in map",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _StrictLoader(_UniqueKeys, yaml.SafeLoader):
    """The pure-Python loader (files: its error messages quote the offending line)."""


# libyaml's parser (when PyYAML was built with it) reads a document some 5x faster than the
# pure-Python one: what the API server uses for request bodies.
_StrictFastLoader = (
    type("_StrictFastLoader", (_UniqueKeys, yaml.CSafeLoader), {})
    if getattr(yaml, "__with_libyaml__", False)
    else _StrictLoader
)


class DuplicateKeyError(ValueError):
    """A JSON object that names the same key twice."""


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise DuplicateKeyError(f"duplicate key {json.dumps(key)}")
        seen[key] = value
    return seen


def json_loads_strict(text: str | bytes) -> Any:
    """``json.loads`` refusing an object that names a key twice (as the Kubernetes API server does)."""
    return json.loads(text, object_pairs_hook=_unique_pairs)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_expansion(root: yaml.Node, limit: int) -> None:
    """Size of the node graph with every alias expanded, computed once per node (iteratively: no recursion)."""
    sizes: dict[int, int] = {}
    ancestors: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            ancestors.discard(key)
            own = max(1, len(node.value)) if isinstance(node, yaml.ScalarNode) else 1
            sizes[key] = own + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > limit:
                raise YAMLExpansionError(f"aliases expand this document past {limit} values and characters")
            continue
        if key in sizes:
            continue
        if key in ancestors:
            raise YAMLExpansionError("an alias refers to a node that contains it")
        ancestors.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


def _expansion_limit(text: str | bytes) -> int:
    # Without aliases a document is no larger than its text; twice that covers empty scalars.
    return max(MAX_YAML_EXPANDED_SIZE, 2 * len(text))


def safe_load_all(text: str | bytes) -> list[Any]:
    """``yaml.safe_load_all``, refusing documents whose aliases expand past the bound."""
    loader = _StrictLoader(text)
    try:
        documents = []
        while loader.check_node():
            node = loader.get_node()
            _check_expansion(node, _expansion_limit(text))
            documents.append(loader.construct_document(node))
        return documents
    finally:
        loader.dispose()


def safe_load(text: str | bytes) -> Any:
    """``yaml.safe_load`` (exactly one document) with safe_load_all's bound, on libyaml's parser."""
    loader = _StrictFastLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, _expansion_limit(text))
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _decode(text: str, source: str) -> list[Any]:
    try:
        return _decode_documents(text, source)
    except RecursionError:  # both parsers recurse once per level
        raise ResourceValidationError([FieldError(source, "nested too deeply to parse")], source) from None
    except ResourceValidationError:
        raise
    except ValueError as exc:  # an integer past Python's int() digit limit, from either parser
        raise ResourceValidationError([FieldError(source, f"cannot read a number: {exc}")], source) from None


def _decode_documents(text: str, source: str) -> list[Any]:
    if text.lstrip().startswith(("{", "[")):
        try:
            return [json_loads_strict(text)]
        except DuplicateKeyError as exc:
            raise ResourceValidationError([FieldError(source, f"invalid JSON: {exc}")], source) from None
        except json.JSONDecodeError:
            pass  # flow-style YAML starts with "{" too; the YAML parser reports real syntax errors
    try:
        return safe_load_all(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ResourceValidationError([FieldError(where, f"invalid YAML: {problem}")], source) from None


def _documents(decoded: list[Any]) -> list[Any]:
    """Flatten top-level lists and Kubernetes ``kind: List`` wrappers; drop empty documents."""
    documents = []
    for doc in decoded:
        if doc is None:
            continue
        if isinstance(doc, list):
            documents.extend(_documents(doc))
        elif isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            documents.extend(_documents(doc["items"]))
        else:
            documents.append(doc)
    return documents


def load_resources(text: str, source: str = "<input>") -> list[Resource]:
    """All resources in a YAML (multi-document) or JSON text, validated."""
    documents = _documents(_decode(text, source))
    if not documents:
        raise ResourceValidationError(
            [FieldError(source, "no resources found (expected YAML or JSON with apiVersion and kind)")],
            source,
        )
    resources = []
    for number, doc in enumerate(documents, start=1):
        try:
            resources.append(parse_resource(doc))
        except ResourceValidationError as exc:
            where = f"{source} (document {number})" if len(documents) > 1 else source
            raise ResourceValidationError(exc.errors, where) from None
    return resources


def load_resource_file(path: str | PathLike[str]) -> list[Resource]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ResourceValidationError(
            [FieldError(str(path), f"cannot read file: {reason}")], str(path)
        ) from None
    return load_resources(text, source=str(path))


def _plain(resource: Resource) -> dict[str, Any]:
    return resource.model_dump(mode="json", by_alias=True, exclude_none=True)


def dump_resource(resource: Resource, fmt: str = "yaml") -> str:
    """The resource as YAML or JSON, camelCase keys; loads back to an equal resource."""
    data = _plain(resource)
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    raise ValueError(f'unknown format "{fmt}": use "yaml" or "json"')


def dump_resources(resources: Iterable[Resource], fmt: str = "yaml") -> str:
    """Several resources: multi-document YAML, or a JSON list."""
    items = list(resources)
    if fmt == "json":
        return json.dumps([_plain(r) for r in items], indent=2) + "\n"
    return "---\n".join(dump_resource(r, "yaml") for r in items)
