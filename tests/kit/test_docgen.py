"""The reference part of docs/plugins.md is what the contract says now (datasette's
``test_docs.py`` style): generated from hooks/, every hook's documented arguments equal to
pluggy's ``spec.argnames``, every field a deciding plugin reads described; enum-like fields
validated."""

from __future__ import annotations

import re
import subprocess
import sys

import pluggy
import pytest

from daemon import docgen
from hooks.markers import PROJECT_NAME
from hooks.records import Notice, Notification, Problem
from hooks.specs import ALL_SPECS

DESCRIBED = (
    "ShipmentLine",
    "WmsShipment",
    "ReceiptLine",
    "WmsReceipt",
    "ProductLink",
    "OrderInstructionLine",
    "OrderInstruction",
    "NeOrderRow",
    "NeOrder",
    "WarehouseInfo",
    "FilterVerdict",
    "HealthCheck",
    "Problem",
)


def test_committed_reference_is_what_the_contract_says() -> None:
    current = docgen.DOCS.read_text(encoding="utf-8")
    assert docgen.START in current and docgen.END in current
    assert docgen.render(current) == current, (
        "docs/plugins.md is out of date with hooks/: run `python -m daemon.docgen`"
    )


def test_check_mode_agrees() -> None:
    checked = subprocess.run(
        [sys.executable, "-m", "daemon.docgen", "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


def test_documented_hook_arguments_are_pluggys_argnames() -> None:
    pm = pluggy.PluginManager(PROJECT_NAME)
    for spec in ALL_SPECS:
        pm.add_hookspecs(spec)
    text = docgen.DOCS.read_text(encoding="utf-8")
    documented = {
        name: [a for a in args.split(", ") if a]
        for name, args in re.findall(r"^#### `(nebridge_\w+)\(([^)]*)\)`$", text, re.M)
    }
    specs = {
        name: list(caller.spec.argnames)
        for name, caller in vars(pm.hook).items()
        if name.startswith("nebridge_") and caller.spec is not None
    }
    assert specs, "no hook specifications found"
    assert documented == specs


def test_fields_plugins_decide_on_are_described() -> None:
    reference = "\n".join(docgen.records_reference())
    for record in DESCRIBED:
        section = reference.split(f"#### {record}\n", 1)[1].split("\n#### ", 1)[0]
        rows = [r for r in section.splitlines() if r.startswith("| `")]
        assert rows, f"{record} has no fields in the reference"
        blank = [r.split("|")[1].strip() for r in rows if not r.rstrip("| ").split("|")[-1].strip()]
        assert not blank, f"{record}: describe {blank} with a #: comment in hooks/records.py"


def test_markdown_and_render() -> None:
    assert docgen.markdown("see :class:`~hooks.records.NeOrder` and ``x``::") == (
        "see `NeOrder` and `x`:"
    )
    assert docgen.render("# Title\n").startswith("# Title\n\n" + docgen.START)
    stale = f"# T\n{docgen.START}\nSTALE-TEXT\n{docgen.END}\n\n## After\n"
    fresh = docgen.render(stale)
    assert "STALE-TEXT" not in fresh and fresh.endswith("\n## After\n")
    assert docgen.render(fresh) == fresh


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: Notice("m", level="warn"),  # type: ignore[arg-type]
            "Notice.level must be one of 'info', 'warning', 'error', not 'warn'",
        ),
        (
            lambda: Problem("k", "kind", "why", "fix", severity="info"),  # type: ignore[arg-type]
            "Problem.severity must be one of 'warning', 'error', not 'info'",
        ),
        (
            lambda: Notification("k", "kind", "opened", "info", "t", "d"),  # type: ignore[arg-type]
            "Notification.event must be one of",
        ),
    ],
)
def test_enum_like_fields_are_validated(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        make()  # type: ignore[operator]
