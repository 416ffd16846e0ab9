"""`nebridge db current` only reads (review F18).

Run as root before the service's first start, it created the state folder and an empty,
root-owned SQLite database the service user could then not migrate.
"""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from daemon.cli import app
from tests.conftest import ConfigFactory


def test_db_current_without_a_database_creates_nothing_and_says_what_to_do(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    state = tmp_path / "fresh" / "state"
    config = make_config(migrate=False, state_dir=str(state))
    for args in (["db", "current"], ["db", "current", "--json"]):
        result = CliRunner().invoke(app, ["--config", str(config), *args])
        assert result.exit_code == 1, result.output
        said = json.loads(result.stdout)["error"] if "--json" in args else result.stderr
        text = " ".join(said.split())
        assert f"there is no database at {state / 'nebridge.db'} yet" in text
        assert "`nebridge db upgrade`" in text and "start the daemon" in text
        assert not (tmp_path / "fresh").exists()


def test_db_current_reads_an_empty_and_a_migrated_database(
    make_config: ConfigFactory, database_url: str
) -> None:
    config = make_config(migrate=False, database_url=database_url)
    if database_url.startswith("sqlite"):  # an empty file, as a crash before migrating leaves
        Path(database_url.removeprefix("sqlite:///")).touch(mode=0o600)
    before = CliRunner().invoke(app, ["--config", str(config), "db", "current", "--json"])
    assert before.exit_code == 1 and json.loads(before.stdout)["current"] is None, before.output
    assert CliRunner().invoke(app, ["--config", str(config), "db", "upgrade"]).exit_code == 0
    after = CliRunner().invoke(app, ["--config", str(config), "db", "current", "--json"])
    assert after.exit_code == 0, after.output
    shown = json.loads(after.stdout)
    assert shown["current"] == shown["latest"] and shown["up_to_date"] is True
