"""The README's promise: exactly two one-line commands first, and CI runs the second verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def first_section_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first = text.split("\n## ", 2)[1]
    assert first.startswith("Quick start")
    return re.findall(r"```sh\n(.*?)\n```", first, re.S)


def test_first_section_has_exactly_two_one_line_commands() -> None:
    commands = first_section_commands()
    assert len(commands) == 2
    assert all("\n" not in c for c in commands)
    assert commands[0].endswith("nebridge demo")
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert first_section_commands()[1] in ci.splitlines()
