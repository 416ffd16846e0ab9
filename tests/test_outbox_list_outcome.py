"""``outbox list`` shows what became of a done action, not an error it met on the way (review
F6): a stock upload whose answer was lost ("outcome unknown") and that was then found in Next
Engine's queue is done, and the table says where it was uploaded. Real sandbox over HTTP, real
CLI; ``--json`` keeps the error it met as ``last_error``."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from daemon.cli import app
from tests.conftest import ConfigFactory
from tests.ne_world import make_world
from tests.test_reliability_fixes import FAST_DISPATCH, UPLOAD, dispatch, prepare


def test_a_done_upload_found_after_an_unknown_outcome_shows_its_queue(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    for world in make_world(make_config, tmp_path, dispatch=FAST_DISPATCH):
        prepare(world, orders=0, receipts=1)
        world.sandbox.faults.drop_next(when="after", path=UPLOAD)  # applied, answer lost
        for _ in range(3):
            dispatch(world)
        world.sandbox.state.process_ques()
        dispatch(world)
        runner = CliRunner()
        listed = runner.invoke(app, ["--config", str(world.config), "outbox", "list", "--json"])
        assert listed.exit_code == 0, listed.output
        [upload] = [r for r in json.loads(listed.stdout) if r["kind"] == "adjust_stock"]
        assert upload["state"] == "done"
        assert "outcome unknown" in (upload["last_error"] or "")  # what happened on the way
        assert (upload["result"] or "").startswith("uploaded in que")
        table = runner.invoke(app, ["--config", str(world.config), "outbox", "list"])
        assert table.exit_code == 0, table.output
        [row] = [line for line in table.stdout.splitlines() if "adjust_stock" in line]
        assert "uploaded in que" in row and "outcome unknown" not in row
