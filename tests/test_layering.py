"""Which package may import which (docs/architecture.md), checked on every import statement.

``hooks`` is the public contract: it imports neither the engine nor a plugin. ``daemon`` (the
engine) never imports a plugin; plugins import only ``hooks``. Inside the engine, the admin
side (CLI, ``*_admin``) depends on the engine, never the other way round.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Top-level package → the project packages it may import (besides itself).
ALLOWED = {
    "hooks": set(),
    "daemon": {"hooks"},
    "plugins": {"hooks"},
}
#: Engine modules that must not import the admin side.
ADMIN = ("daemon.cli", "daemon.inbox_admin", "daemon.outbox_admin")


def _imports(path: Path) -> Iterator[str]:
    """Every module ``path`` imports (absolute names; relative imports resolved)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                yield ".".join([*base, node.module] if node.module else base)
            elif node.module:
                yield node.module


def _arrows() -> set[tuple[str, str]]:
    """(file, imported module) of every import across project packages."""
    arrows = set()
    for top in ALLOWED:
        for path in sorted((ROOT / top).rglob("*.py")):
            for module in _imports(path):
                if module.split(".")[0] in ALLOWED and module.split(".")[0] != top:
                    arrows.add((str(path.relative_to(ROOT)), module))
    return arrows


def test_packages_import_only_what_the_layering_allows() -> None:
    wrong = {
        (file, module)
        for file, module in _arrows()
        if module.split(".")[0] not in ALLOWED[file.split("/")[0]]
    }
    assert wrong == set(), "see docs/architecture.md for the allowed arrows"


def test_the_engine_does_not_import_the_admin_side() -> None:
    wrong = []
    for path in sorted((ROOT / "daemon").rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if name.startswith(ADMIN) or name == "daemon.__main__":
            continue
        wrong += [(name, m) for m in _imports(path) if m.startswith(ADMIN)]
    assert wrong == []


def test_the_rules_see_real_imports() -> None:
    """The scan is not vacuous: it finds the engine's imports of the contract."""
    assert any(f == "daemon/pipeline.py" and m.startswith("hooks.") for f, m in _arrows())
