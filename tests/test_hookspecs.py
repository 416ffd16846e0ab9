"""The plugin contract is documented: every hookspec has a docstring and a section in the docs."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from hooks.specs import ALL_SPECS

DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def hookspec_names() -> list[str]:
    return [
        name
        for spec in ALL_SPECS
        for name, _ in inspect.getmembers(spec, inspect.isfunction)
        if name.startswith("nebridge_")
    ]


def test_there_are_hookspecs() -> None:
    assert len(hookspec_names()) >= 6


def test_every_hookspec_has_a_docstring() -> None:
    for spec in ALL_SPECS:
        for name, fn in inspect.getmembers(spec, inspect.isfunction):
            if name.startswith("nebridge_"):
                assert fn.__doc__ and len(fn.__doc__.strip()) > 40, f"{name} lacks a docstring"


def test_every_hookspec_is_documented_for_plugin_authors() -> None:
    headings = set(re.findall(r"^### (nebridge_\w+)\s*$", DOCS.read_text(encoding="utf-8"), re.M))
    missing = set(hookspec_names()) - headings
    assert not missing, f"document these hooks in docs/plugins.md: {sorted(missing)}"
    stale = headings - set(hookspec_names())
    assert not stale, f"docs/plugins.md documents hooks that do not exist: {sorted(stale)}"
