"""An emptied companies folder (a shared folder whose mount dropped) does not stop every
company (attacker review F13): the reload is refused with an ERROR saying why and what to do,
unless ``companies_dir/.empty-ok`` says stopping them all is meant."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from daemon.config import load_config
from daemon.fleet.companies import EMPTY_OK, Companies, FileWatch
from daemon.fleet.leases import fleet_engine
from daemon.fleet.worker import FleetWorker
from tests.conftest import ConfigFactory
from tests.fleet.test_worker import Recorder, company_file, step


def test_an_emptied_folder_keeps_every_company_until_confirmed(
    make_config: ConfigFactory, fleet_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A real worker on PostgreSQL serving two companies: their files vanish (ERROR, both kept
    and served), come back (nothing changes), vanish again with ``.empty-ok`` (both stop)."""
    folder = tmp_path / "companies"
    folder.mkdir()
    for code in ("acme", "beta"):
        company_file(folder, code)
    config = make_config(database_url=fleet_url, companies_dir="companies")
    engine = fleet_engine(fleet_url, lease_seconds=30.0)
    worker = FleetWorker(
        Companies(load_config(config)), engine, Recorder().start, lease_seconds=30.0
    )
    try:
        step(worker)
        assert worker.serving() == ["acme", "beta"]
        held = tmp_path / "held"
        shutil.move(folder, held)
        folder.mkdir()  # the mount point, without the share

        caplog.set_level(logging.INFO)
        worker.request_reload()
        step(worker)
        assert worker.serving() == ["acme", "beta"]
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1, errors
        assert "holds no company file any more" in errors[0]
        assert "would stop all 2 companies" in errors[0]
        assert f"create {folder / EMPTY_OK}" in errors[0]

        folder.rmdir()
        shutil.move(held, folder)  # mounted again
        changes = worker.reload()
        assert (changes.added, changes.changed, changes.removed) == ((), (), ())

        for path in folder.glob("*.yaml"):
            path.unlink()
        (folder / EMPTY_OK).touch()  # meant: every company stops
        worker.request_reload()
        step(worker)
        assert worker.serving() == []
    finally:
        worker.keeper.stop()
        engine.dispose()


def test_the_file_watch_notices_the_confirmation(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    """Creating ``.empty-ok`` is a change the workers' file watch applies (no SIGHUP needed)."""
    folder = tmp_path / "companies"
    folder.mkdir()
    company_file(folder, "acme")
    config = make_config(
        migrate=False,
        companies_dir="companies",
        database_url="postgresql+psycopg://nebridge@127.0.0.1/fleet",
    )
    watch = FileWatch(Companies(load_config(config)))
    assert not watch.poll()
    (folder / EMPTY_OK).touch()
    assert watch.poll() or watch.poll()
