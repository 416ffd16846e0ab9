"""``nebridge plugins new``: write a pip-installable plugin package that works as generated.

The package has a ``pyproject.toml`` with the ``nebridge`` entry point and a compatible
``nebridge`` version range, the plugin module (declaring the hook API range it was written
for), a test that runs it against the Next Engine sandbox with the testing kit
(:mod:`daemon.testing`) and a README. Each kind is a small working example to edit:

- ``filter``: skip orders of some shops at import (``nebridge_filter_order``);
- ``actions``: a warning when an order ships without a tracking number
  (``nebridge_shipment_actions``);
- ``connector``: a WMS connector over a folder of JSON files (``nebridge_wms_connectors``),
  tested with the connector conformance suite;
- ``notifier``: every notification appended to a JSON-lines file (``nebridge_notify``).
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from enum import StrEnum
from importlib.metadata import entry_points
from importlib.util import find_spec
from pathlib import Path

from daemon.pluginmanager import CONNECTOR_PREFIX
from daemon.scaffold_templates import COMMON, KINDS


class PluginKind(StrEnum):
    """What the generated plugin does (which hooks its example implements)."""

    FILTER = "filter"
    ACTIONS = "actions"
    CONNECTOR = "connector"
    NOTIFIER = "notifier"


class ScaffoldError(Exception):
    """The package cannot be written as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Scaffold:
    """What was written: the package folder and its files (relative paths)."""

    folder: Path
    files: tuple[str, ...]
    distribution: str


#: A plugin name: a lowercase ASCII Python identifier (isidentifier() accepts full-width
#: letters, which make a package that cannot be installed as written).
PLUGIN_NAME = re.compile(r"[a-z][a-z0-9_]*")


def check_name(name: str) -> None:
    """Refuse a name that is not a lowercase Python identifier, is a plugin already installed
    or would shadow an importable module."""
    if not PLUGIN_NAME.fullmatch(name) or keyword.iskeyword(name):  # ASCII: ｊｓｏｎ is not
        raise ScaffoldError(
            f"{name!r} is not a valid plugin name: use a lowercase Python identifier "
            "(ASCII letters a-z, digits, underscores; starting with a letter), e.g. skip_shops"
        )
    if name in {ep.name for ep in entry_points(group="nebridge")}:
        raise ScaffoldError(
            f"a plugin named {name!r} is already installed "
            "(`nebridge plugins list`); choose another name"
        )
    if find_spec(name) is not None:
        raise ScaffoldError(
            f"a Python module named {name!r} already exists here; choose "
            "another name, e.g. with your company's prefix"
        )


def nebridge_range(version: str) -> str:
    """The ``nebridge`` versions a plugin written against ``version`` accepts: the same minor
    release line before 1.0 (where minors may break), the same major release from 1.0 on."""
    parts = [int(p) if p.isdigit() else 0 for p in version.split("+")[0].split(".")[:3]]
    major, minor, patch = [*parts, 0, 0, 0][:3]
    upper = f"{major}.{minor + 1}" if major == 0 else f"{major + 1}"
    return f">={major}.{minor}.{patch},<{upper}"


def hook_api_range(version: str) -> str:
    """The hook API range to declare: this minor version or newer within its major."""
    major, _, minor = version.partition(".")
    return f">={major}.{minor or 0},<{int(major) + 1}"


def default_folder(name: str) -> Path:
    """``./nebridge-<name>`` with hyphens, as the distribution is called."""
    return Path.cwd() / distribution_name(name)


def distribution_name(name: str) -> str:
    """The pip name of the package: ``nebridge-<name>`` with hyphens."""
    return "nebridge-" + name.replace("_", "-")


def render(text: str, values: dict[str, str]) -> str:
    """``text`` with every ``<<key>>`` replaced by its value."""
    for key, value in values.items():
        text = text.replace(f"<<{key}>>", value)
    return text


def create(name: str, kind: PluginKind, folder: Path | None = None) -> Scaffold:
    """Write the package of plugin ``name`` into ``folder`` (new or empty)."""
    import daemon
    from hooks import HOOK_API_VERSION

    check_name(name)
    if kind is PluginKind.CONNECTOR and not name.startswith(CONNECTOR_PREFIX):
        raise ScaffoldError(
            f"a connector plugin is named {CONNECTOR_PREFIX}<connector> (its "
            f"connector is chosen with wms.connector: <connector>); e.g. "
            f"{CONNECTOR_PREFIX}{name}"
        )
    target = (folder or default_folder(name)).resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ScaffoldError(
            f"{target} exists and is not an empty folder; choose another "
            "with --dir PATH, or move it away"
        )
    values = {
        "name": name,
        "dist": distribution_name(name),
        "connector": name.removeprefix(CONNECTOR_PREFIX),
        "kind": kind.value,
        "nebridge_range": nebridge_range(daemon.__version__),
        "hook_api": hook_api_range(HOOK_API_VERSION),
        "summary": KINDS[kind.value]["summary"],
        "enable": (
            f"then choose it: `wms.connector: {name.removeprefix(CONNECTOR_PREFIX)}` in daemon.yaml"
            if kind is PluginKind.CONNECTOR
            else f"then enable it: `nebridge plugins enable {name}`"
        ),
    }
    files = {**COMMON, **{k: v for k, v in KINDS[kind.value].items() if k != "summary"}}
    written: list[str] = []
    for relative, template in files.items():
        path = target / render(relative, values)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(template, values), encoding="utf-8")
        written.append(str(path.relative_to(target)))
    return Scaffold(target, tuple(sorted(written)), values["dist"])
