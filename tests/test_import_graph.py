"""The control plane reaches the backends only through their protocol and its registry.

Read from the source (every `import` and `from ... import`, at any depth, lazy ones too): no
module under `controlplane/` but the registry imports a concrete backend (`backends.local*`,
`backends.kubernetes`, `backends.sim`), and nothing under `backends/` imports `controlplane/`.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "kgpu"
# What the control plane may use of backends/: the protocol and what every backend shares.
SHARED = ("kgpu.backends.base", "kgpu.backends.pools")
REGISTRY = SRC / "controlplane" / "registry.py"


def imports(path: Path) -> set[str]:
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def modules(package: str) -> list[Path]:
    return sorted((SRC / package).rglob("*.py"))


def test_only_the_registry_of_the_control_plane_imports_a_concrete_backend():
    found = {
        str(path.relative_to(SRC)): sorted(
            name
            for name in imports(path)
            if name.startswith("kgpu.backends.") and not name.startswith(SHARED)
        )
        for path in modules("controlplane")
        if path != REGISTRY
    }
    assert {path: names for path, names in found.items() if names} == {}


def test_no_backend_imports_the_control_plane():
    found = {
        str(path.relative_to(SRC)): sorted(n for n in imports(path) if n.startswith("kgpu.controlplane"))
        for path in modules("backends")
    }
    assert {path: names for path, names in found.items() if names} == {}


def test_the_registry_is_where_the_concrete_backends_are_built():
    built = imports(REGISTRY)
    assert {"kgpu.backends.local", "kgpu.backends.kubernetes.cluster", "kgpu.backends.sim"} <= built
