"""The Logikura connector's records (which schedules were requested) are never forked: a
start on a state folder other than the one its database recorded — another host's, in a
fleet or with a standby — is refused before anything is sent, and `wms adopt-state-folder`
records a new one when the old is lost for good (attacker review F12)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from ruamel.yaml import YAML
from typer.testing import CliRunner

from daemon import statedir
from daemon.cli import app
from daemon.runtime import build_runtime
from daemon.statedir import StateFolderMismatch
from daemon.testing.installation import dump_yaml
from tests.wms_logikura.test_e2e import Linked, linked  # noqa: F401 - the fixture


def _moved_state(config: Path, folder: Path) -> None:
    """daemon.yaml pointed at ``folder`` as its state folder, holding a copy of the old
    folder's files but not its marker (another host's folder, synced once by hand)."""
    data = YAML(typ="safe").load(config.read_text(encoding="utf-8"))
    old = Path(data.get("state_dir") or config.parent / "state")
    shutil.copytree(old, folder, ignore=shutil.ignore_patterns(statedir.MARKER))
    data["state_dir"] = str(folder)
    config.write_text(dump_yaml(data), encoding="utf-8")


def test_another_state_folder_is_refused_before_anything_is_sent(
    linked: Linked,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    ne, lk = linked.ne, linked.lk
    ne.state.create_goods("A-1", quantity=5)
    lk.state.add_variant("LK-A", link_code="A-1", stock={"ITAKU": 5})
    first = ne.state.create_order([("A-1", 1)], shop_id=1)
    linked.once()
    assert lk.ledger.schedules_created() == {str(first): 1}
    runtime = build_runtime(linked.config)
    try:
        state_dir = runtime.config.state_dir
        assert statedir.recorded(runtime.db) == statedir.marker_of(state_dir) is not None
    finally:
        runtime.close()

    _moved_state(linked.config, tmp_path / "other-host-state")
    second = ne.state.create_order([("A-1", 1)], shop_id=1)
    with pytest.raises(StateFolderMismatch, match="adopt-state-folder"):
        linked.once()
    refused = CliRunner().invoke(app, ["--config", str(linked.config), "run", "--once"])
    assert refused.exit_code == 1
    assert "is not the one where the logikura connector's records" in refused.output
    assert "Traceback" not in refused.output
    assert lk.ledger.schedules_created() == {str(first): 1}  # nothing sent from there

    declined = CliRunner().invoke(
        app, ["--config", str(linked.config), "wms", "adopt-state-folder"], input="n\n"
    )
    assert declined.exit_code == 1 and "may be sent again" in declined.output
    adopted = CliRunner().invoke(
        app, ["--config", str(linked.config), "wms", "adopt-state-folder", "--yes"]
    )
    assert adopted.exit_code == 0, adopted.output
    linked.once()
    assert lk.ledger.schedules_created() == {str(first): 1, str(second): 1}
