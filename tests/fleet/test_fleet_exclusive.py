"""Two companies never share a WMS folder, file or state folder (fleet review F10): refused by
``config check`` (the real CLI), by a reload, and by a real worker on PostgreSQL, naming both
files and the field; the company already loaded keeps its folders."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from typer.testing import CliRunner

from daemon.cli import app
from daemon.config import load_config
from daemon.fleet.companies import Companies
from daemon.fleet.leases import fleet_engine
from daemon.fleet.worker import FleetWorker
from tests.conftest import ConfigFactory, dump_yaml
from tests.fleet.test_worker import Recorder, step

POSTGRES = "postgresql+psycopg://nebridge@127.0.0.1/fleet"


def company(folder: Path, code: str, inbox: Path | None = None, outbox: Path | None = None) -> Path:
    """``<code>.yaml``: with a ``wms`` section when folders are given, else inheriting
    daemon.yaml's."""
    data: dict[str, object] = {"warehouses": [{"code": "MAIN", "ne_linked": True}]}
    if inbox is not None and outbox is not None:
        data["wms"] = {"connector": "csv", "csv": {"inbox": str(inbox), "outbox": str(outbox)}}
    path = folder / f"{code}.yaml"
    path.write_text(dump_yaml(data), encoding="utf-8")
    return path


def test_config_check_refuses_a_company_on_another_companys_folders(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    """A copied file (one folder reached through a symbolic link), a folder inside another's,
    and two files inheriting daemon.yaml's `wms`: each refused naming both files; the first
    code in sort order keeps the folders."""
    folder = tmp_path / "companies"
    folder.mkdir()
    wms = tmp_path / "wms"
    (wms / "acme" / "in").mkdir(parents=True)
    (tmp_path / "link").symlink_to(wms / "acme")
    acme = company(folder, "acme", wms / "acme" / "in", wms / "acme" / "out")
    company(folder, "theta", tmp_path / "link" / "in", wms / "theta" / "out")
    company(folder, "kappa", wms / "kappa" / "in", wms / "acme" / "out" / "kappa")
    company(folder, "eta")  # daemon.yaml's wms: the first inheriting code keeps it
    company(folder, "zeta")
    config = make_config(migrate=False, companies_dir="companies", database_url=POSTGRES)

    result = CliRunner().invoke(app, ["--config", str(config), "config", "check", "--json"])
    assert result.exit_code == 1, result.output
    entries = {e["company"]: e for e in json.loads(result.stdout)["companies"]}
    assert not entries["acme"]["issues"] and not entries["eta"]["issues"]
    theta = entries["theta"]["issues"][0]
    assert theta["path"] == "wms.csv.inbox"
    assert f"is wms.csv.inbox {wms / 'acme' / 'in'} of company `acme` ({acme})" in theta["message"]
    kappa = entries["kappa"]["issues"][0]
    assert kappa["path"] == "wms.csv.outbox" and "overlaps wms.csv.outbox" in kappa["message"]
    zeta = entries["zeta"]["issues"][0]
    assert "of company `eta`" in zeta["message"] and "without a `wms` section" in zeta["message"]

    human = CliRunner().invoke(app, ["--config", str(config), "config", "check"])
    assert human.exit_code == 1 and "give `theta` its own" in human.output


def test_a_loaded_company_keeps_its_folders_and_state_folder(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    """A newcomer sorting first, a changed file moving onto another's folder and a state
    folder reached through a link are refused; the loaded companies keep running as they
    were; a move to a free folder is applied."""
    folder = tmp_path / "companies"
    folder.mkdir()
    wms = tmp_path / "wms"
    company(folder, "acme", wms / "acme" / "in", wms / "acme" / "out")
    company(folder, "beta", wms / "beta" / "in", wms / "beta" / "out")
    companies = Companies(
        load_config(make_config(migrate=False, companies_dir="companies", database_url=POSTGRES))
    )
    assert list(companies.companies) == ["acme", "beta"] and companies.refused == ()

    company(folder, "aaa", wms / "aaa" / "in", wms / "acme" / "out")
    company(folder, "acme", wms / "beta" / "in", wms / "acme" / "out")
    changes = companies.reload()
    assert (changes.added, changes.changed, changes.removed) == ((), (), ())
    assert sorted(r.path.name for r in changes.refused) == ["aaa.yaml", "acme.yaml"]
    inbox = companies.companies["acme"].config.wms.connector_section()["inbox"]
    assert inbox == str(wms / "acme" / "in")  # its last valid version

    company(folder, "acme", wms / "acme2" / "in", wms / "acme2" / "out")
    os.remove(folder / "aaa.yaml")
    changes = companies.reload()
    assert changes.changed == ("acme",) and changes.refused == ()

    state = companies.companies["acme"].config.state_dir
    state.mkdir(parents=True)
    (state.parent / "gamma").symlink_to(state)
    company(folder, "gamma", wms / "gamma" / "in", wms / "gamma" / "out")
    changes = companies.reload()
    assert changes.added == () and "state_dir" in str(changes.refused[0])
    assert "of company `acme`" in str(changes.refused[0])


def test_a_worker_does_not_serve_a_company_on_another_companys_folders(
    make_config: ConfigFactory, fleet_url: str, tmp_path: Path
) -> None:
    """Added while the worker runs, a company copying acme's folders is never started; acme
    keeps running, untouched; once it has folders of its own it is served."""
    folder = tmp_path / "companies"
    folder.mkdir()
    wms = tmp_path / "wms"
    company(folder, "acme", wms / "acme" / "in", wms / "acme" / "out")
    config = make_config(database_url=fleet_url, companies_dir="companies")
    engine = fleet_engine(fleet_url, lease_seconds=10.0)
    recorder = Recorder()
    worker = FleetWorker(Companies(load_config(config)), engine, recorder.start, lease_seconds=10.0)
    try:
        step(worker)
        assert worker.serving() == ["acme"]
        company(folder, "aaa", wms / "acme" / "in", wms / "acme" / "out")
        changes = worker.reload()
        assert changes.added == () and "of company `acme`" in str(changes.refused[0])
        step(worker)
        step(worker)
        assert worker.serving() == ["acme"]
        assert [e for e in recorder.events if e[1] == "aaa"] == []
        assert ("stop", "acme", 0) not in recorder.events

        company(folder, "aaa", wms / "aaa" / "in", wms / "aaa" / "out")
        assert worker.reload().added == ("aaa",)
        step(worker)
        step(worker)
        assert worker.serving() == ["aaa", "acme"]
    finally:
        stop = threading.Event()
        stop.set()
        worker.serve(stop)  # every service stopped, every lease released
        engine.dispose()
