"""Companies as files in ``companies_dir``: real files, the real loader, every refusal located."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon.config import ConfigError, load_config
from daemon.fleet.companies import DEFAULT_COMPANY, Companies, FileWatch
from tests.conftest import ConfigFactory, dump_yaml

ACME = {
    "wms": {"connector": "csv", "csv": {"inbox": "acme/in", "outbox": "acme/out"}},
    "warehouses": [{"code": "TOKYO", "ne_linked": True, "import_orders": True}],
    "nextengine": {"page_size": 500},
}


def own(code: str) -> dict[str, object]:
    """ACME's file for company ``code``, with WMS folders of its own (two companies never
    share one)."""
    return {
        **ACME,
        "wms": {"connector": "csv", "csv": {"inbox": f"{code}/in", "outbox": f"{code}/out"}},
    }


def write(folder: Path, name: str, data: object) -> Path:
    path = folder / name
    path.write_text(data if isinstance(data, str) else dump_yaml(data), encoding="utf-8")
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    companies = tmp_path / "companies"
    companies.mkdir()
    return companies


#: Fleet mode needs PostgreSQL; loading company files connects nowhere.
POSTGRES = "postgresql+psycopg://nebridge@127.0.0.1/fleet"


def fleet(make_config: ConfigFactory, folder: Path) -> Companies:
    return Companies(
        load_config(make_config(migrate=False, companies_dir="companies", database_url=POSTGRES))
    )


def test_without_companies_dir_daemon_yaml_is_the_one_default_company(
    make_config: ConfigFactory,
) -> None:
    loaded = load_config(make_config(migrate=False))
    companies = Companies(loaded)
    assert not companies.fleet
    assert list(companies.companies) == [DEFAULT_COMPANY]
    assert companies.companies[DEFAULT_COMPANY].config == loaded.config


def test_each_file_is_a_company_on_top_of_daemon_yaml(
    make_config: ConfigFactory, folder: Path
) -> None:
    write(folder, "acme.yaml", ACME)
    write(folder, "beta-2.yml", {"warehouses": [{"code": "OSAKA"}]})
    write(folder, "README.md", "not a company")
    write(folder, ".acme.yaml.swp", "editor junk")
    companies = fleet(make_config, folder)
    assert companies.fleet and companies.refused == ()
    assert list(companies.companies) == ["acme", "beta-2"]
    acme, beta = companies.companies["acme"].config, companies.companies["beta-2"].config
    base = companies.base.config
    assert [w.code for w in acme.warehouses] == ["TOKYO"]
    assert acme.nextengine.page_size == 500
    assert acme.nextengine.client_id == base.nextengine.client_id  # the app is global
    assert acme.wms.connector_section()["inbox"] == "acme/in"
    assert beta.plugins == base.plugins and beta.wms == base.wms  # left out: daemon.yaml's
    assert acme.resolved_database_url == beta.resolved_database_url == base.resolved_database_url
    assert acme.state_dir == base.state_dir / "companies" / "acme"


def test_a_bad_file_is_refused_alone_with_its_path_and_line(
    make_config: ConfigFactory, folder: Path
) -> None:
    write(folder, "acme.yaml", ACME)
    bad = write(
        folder,
        "broken.yaml",
        "wms:\n  connector: csv\nwarehouse:\n  - code: X\n"
        "nextengine:\n  client_id: mine\n  page_size: 0\n",
    )
    write(folder, "yaml-error.yaml", "warehouses: [\n")
    write(folder, "database.yaml", {"database_url": "sqlite:///x.db"})
    write(folder, "Upper.yaml", ACME)
    companies = fleet(make_config, folder)
    assert list(companies.companies) == ["acme"]
    messages = {r.path.name: str(r) for r in companies.refused}
    assert set(messages) == {"broken.yaml", "yaml-error.yaml", "database.yaml", "Upper.yaml"}
    broken = messages["broken.yaml"]
    assert str(bad) in broken
    assert "line 3: warehouse: unknown key `warehouse` — did you mean `warehouses`?" in broken
    assert "line 6: nextengine.client_id: `client_id` belongs to the fleet's one" in broken
    assert "nebridge connect --company CODE" in broken
    assert "invalid YAML" in messages["yaml-error.yaml"]
    assert "`database_url` is shared by every company" in messages["database.yaml"]
    assert "not a company code" in messages["Upper.yaml"]

    write(folder, "broken.yaml", {**ACME, "nextengine": {"page_size": 0}})
    refusal = next(
        str(r)
        for r in fleet(make_config, folder).refused  # the model's checks
        if r.path.name == "broken.yaml"
    )
    assert "broken.yaml" in refusal and "line" in refusal
    assert "nextengine.page_size: must be at least 1" in refusal


def test_symbolic_links_and_two_files_for_one_code_are_refused(
    make_config: ConfigFactory, folder: Path, tmp_path: Path
) -> None:
    real = write(tmp_path, "elsewhere.yaml", ACME)
    (folder / "linked.yaml").symlink_to(real)
    write(folder, "twice.yaml", ACME)
    write(folder, "twice.yml", ACME)
    write(folder, "fine.yaml", ACME)
    companies = fleet(make_config, folder)
    assert list(companies.companies) == ["fine"]
    messages = [str(r) for r in companies.refused]
    assert any("linked.yaml" in m and "symbolic link" in m for m in messages)
    assert sum("company `twice` has 2 files" in m for m in messages) == 2


def test_reload_reports_added_changed_removed_and_keeps_the_last_good_version(
    make_config: ConfigFactory, folder: Path
) -> None:
    write(folder, "acme.yaml", ACME)
    write(folder, "beta.yaml", own("beta"))
    companies = fleet(make_config, folder)
    assert not companies.reload()  # nothing changed on disk

    write(folder, "gamma.yaml", own("gamma"))
    write(folder, "acme.yaml", {**ACME, "nextengine": {"page_size": 9}})
    os.remove(folder / "beta.yaml")
    changes = companies.reload()
    assert (changes.added, changes.changed, changes.removed) == (("gamma",), ("acme",), ("beta",))
    assert companies.companies["acme"].config.nextengine.page_size == 9

    write(folder, "acme.yaml", "warehouses: 3\n")  # a bad edit: acme keeps running as it was
    changes = companies.reload()
    assert not changes and [r.path.name for r in changes.refused] == ["acme.yaml"]
    assert "line 1: warehouses: must be a list" in str(changes.refused[0])
    assert companies.companies["acme"].config.nextengine.page_size == 9

    os.remove(folder / "acme.yaml")
    assert companies.reload().removed == ("acme",)


def test_a_missing_companies_dir_is_refused_at_its_line(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    loaded = load_config(make_config(migrate=False, companies_dir="nowhere", database_url=POSTGRES))
    with pytest.raises(ConfigError, match=r"line \d+: companies_dir: cannot read the folder"):
        Companies(loaded)


def test_fleet_mode_on_sqlite_is_refused_at_the_companies_dir_line(
    make_config: ConfigFactory, folder: Path
) -> None:
    with pytest.raises(
        ConfigError,
        match=r"line \d+: companies_dir: fleet mode .* needs "
        r"PostgreSQL.*or remove `companies_dir`",
    ):
        load_config(make_config(migrate=False, companies_dir="companies"))


def test_the_watch_applies_a_file_once_it_stood_still_for_one_look(
    make_config: ConfigFactory, folder: Path
) -> None:
    """Added, changed, removed company files and a changed daemon.yaml are noticed; a file
    still being written (its size moving between two looks) is not applied half-written."""
    write(folder, "acme.yaml", ACME)
    companies = fleet(make_config, folder)
    watch = FileWatch(companies)
    assert not watch.poll() and not watch.poll()  # nothing changed

    beta = write(folder, "beta.yaml", "warehouses:\n")  # an editor's first half
    assert not watch.poll()  # seen once: maybe still being written
    write(folder, "beta.yaml", own("beta"))  # the second half
    assert not watch.poll()  # it moved again since the last look
    assert watch.poll()  # stood still for one look: reload
    watch.mark()
    assert companies.reload().added == ("beta",)
    assert not watch.poll() and not watch.poll()

    os.remove(beta)
    write(folder, "acme.yaml", {**ACME, "nextengine": {"page_size": 7}})
    write(folder, "notes.txt", "not a company")  # not watched: not a company file
    assert not watch.poll()
    assert watch.poll()
    watch.mark()
    changes = companies.reload()
    assert changes.removed == ("beta",) and changes.changed == ("acme",)

    companies.base.path.write_text(
        companies.base.path.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8"
    )
    assert not watch.poll() and watch.poll()  # daemon.yaml is watched too
