"""A company's runtime in fleet mode on the CI PostgreSQL: its rows in its own schema, every
commit and Next Engine call fenced by its lease, its schema migrated and checked."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlmodel import select

from daemon.config import load_config
from daemon.fleet.companies import Companies
from daemon.fleet.leases import LeaseKeeper, LeaseLost
from daemon.fleet.runtime import (
    CompanyNotMigrated,
    FleetDatabase,
    company_runtime,
    company_schema,
    upgrade_company,
)
from daemon.pipeline import Stage
from daemon.store.engine import head_revision, read_session, write_session
from daemon.store.models import Cursor, InboxEvent, WmsProduct
from daemon.testing.installation import RECEIPT_HEADER, drop_file
from tests.conftest import ConfigFactory, dump_yaml


def company_file(folder: Path, code: str, wms: Path) -> None:
    (folder / f"{code}.yaml").write_text(
        dump_yaml(
            {
                "wms": {
                    "connector": "csv",
                    "csv": {
                        "inbox": str(wms / "in"),
                        "outbox": str(wms / "out"),
                        "stable_seconds": 0.0,
                    },
                },
                "warehouses": [{"code": "MAIN", "ne_linked": True, "import_orders": True}],
            }
        ),
        encoding="utf-8",
    )


def test_company_schema_names_never_collide_across_installations() -> None:
    assert company_schema("acme") == "public__acme"
    assert company_schema("acme", "tenant7") == "tenant7__acme"
    # the collisions of the former `nb_<code>` / `<base>_<code>` names
    assert company_schema("acme") != company_schema("acme", "nb")
    assert company_schema("east_acme", "shop") != company_schema("acme", "shop_east")
    assert company_schema("a_b", "x") != company_schema("b", "x_a")
    with pytest.raises(CompanyNotMigrated, match="holds '__'"):
        company_schema("acme", "shop__east")
    long = company_schema("a" * 63)
    assert len(long) == 63 and long != company_schema("a" * 62 + "b")


def test_a_company_schema_owned_by_another_installation_is_refused(
    make_config: ConfigFactory, fleet_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "companies"
    folder.mkdir()
    company_file(folder, "acme", tmp_path / "acme")
    loaded = load_config(
        make_config(migrate=False, database_url=fleet_url, companies_dir="companies")
    )
    fleet = FleetDatabase(fleet_url, lease_seconds=10.0)
    schema = fleet.schema("acme")
    try:
        upgrade_company(fleet_url, "acme")
        with fleet.engine.connect() as connection:
            marker = connection.execute(
                text("SELECT obj_description(to_regnamespace(:s), 'pg_namespace')"), {"s": schema}
            ).scalar()
        assert marker == f"nebridge company acme of the installation in schema {fleet.base_schema}"
        with fleet.engine.begin() as connection:  # as if another installation had made it
            connection.execute(
                text(
                    f'COMMENT ON SCHEMA "{schema}" IS '
                    "'nebridge company acme of the installation in schema x'"
                )
            )
        with pytest.raises(CompanyNotMigrated, match="owned by another installation"):
            upgrade_company(fleet_url, "acme")
        with pytest.raises(CompanyNotMigrated, match="owned by another installation"):
            company_runtime(loaded, Companies(loaded).companies["acme"], fleet=fleet)
    finally:
        with fleet.engine.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        fleet.close()


def test_each_company_keeps_its_rows_and_commits_only_while_it_holds_the_lease(
    make_config: ConfigFactory, fleet_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "companies"
    folder.mkdir()
    for code in ("acme", "bolt"):
        company_file(folder, code, tmp_path / code)
    loaded = load_config(
        make_config(migrate=False, database_url=fleet_url, companies_dir="companies")
    )
    companies = Companies(loaded)
    fleet = FleetDatabase(fleet_url, lease_seconds=10.0)
    keeper = LeaseKeeper(fleet.engine, companies.companies, lease_seconds=10.0, worker_id="w1")
    try:
        with pytest.raises(CompanyNotMigrated, match="nebridge db upgrade"):
            company_runtime(loaded, companies.companies["acme"], fleet=fleet)
        for code in ("acme", "bolt"):
            assert upgrade_company(fleet_url, code) == (None, head_revision(fleet.engine))
        assert upgrade_company(fleet_url, "acme")[0] == head_revision(fleet.engine)
        keeper.tick()
        runtimes = {
            code: company_runtime(
                loaded, companies.companies[code], lease=keeper.lease(code), fleet=fleet
            )
            for code in ("acme", "bolt")
        }
        drop_file(
            tmp_path / "acme" / "in",
            "products.csv",
            "product_code,link_code",
            ["P-1,G-1", "P-2,G-2"],
        )
        drop_file(
            tmp_path / "acme" / "in",
            "receipts-1.csv",
            RECEIPT_HEADER,
            ["R-1,MAIN,2026-11-27 10:00:00,P-1,3"],
        )
        for runtime in runtimes.values():
            intake = runtime.intake()
            assert intake is not None
            intake.run_once()
        with read_session(runtimes["acme"].db) as session:
            assert len(session.exec(select(WmsProduct)).all()) == 2
            assert len(session.exec(select(InboxEvent)).all()) == 1  # insert_many's raw SQL
        with read_session(runtimes["bolt"].db) as session:
            assert session.exec(select(WmsProduct)).all() == []
            assert session.exec(select(InboxEvent)).all() == []
        with fleet.engine.connect() as connection:  # nothing in the installation's schema
            assert connection.execute(text("SELECT count(*) FROM wms_product")).scalar() == 0
            assert (
                connection.execute(
                    text(f'SELECT count(*) FROM "{fleet.schema("acme")}".wms_product')
                ).scalar()
                == 2
            )
            assert (
                connection.execute(
                    text("SELECT to_regclass(:t)"), {"t": f'"{fleet.schema("acme")}".fleet_lease'}
                ).scalar()
                is None
            )  # the fleet tables are shared, not per company

        with write_session(runtimes["acme"].db) as session:
            session.add(Cursor(name="probe", value="1"))
        assert runtimes["acme"].fence() is None
        with fleet.engine.begin() as connection:  # another worker took acme over
            connection.execute(
                text(
                    "UPDATE fleet_lease SET holder = 'w2', epoch = epoch + 1 WHERE company = 'acme'"
                )
            )
        with (
            pytest.raises(LeaseLost, match="taken over"),
            write_session(runtimes["acme"].db) as session,
        ):
            session.add(Cursor(name="probe", value="2"))
        assert runtimes["acme"].stop_event.is_set()  # its jobs stop starting at once
        assert not runtimes["bolt"].stop_event.is_set()
        assert "taken over" in (runtimes["acme"].fence() or "")
        late = drop_file(
            tmp_path / "acme" / "in",
            "receipts-2.csv",
            RECEIPT_HEADER,
            ["R-2,MAIN,2026-11-27 10:00:00,P-1,1"],
        )
        intake = runtimes["acme"].intake()
        assert intake is not None
        caplog.clear()
        with caplog.at_level(logging.INFO):
            report = intake.run_once()  # as with a database gone away, the file is not blamed:
            assert any("taken over" in failure for failure in report.failures)
            intake.run_once()
            with pytest.raises(LeaseLost, match="taken over"):  # to the job runner, unlogged
                runtimes["acme"].pipelines()[0].run_once(stages=(Stage.SHIPMENTS,))
        # an expected event: one WARNING line for the company, no traceback, no ERROR
        lost = [r for r in caplog.records if "taken over" in r.getMessage()]
        assert [(r.levelno, r.exc_info) for r in lost] == [(logging.WARNING, None)]
        assert "'acme'" in lost[0].getMessage()
        assert "nothing was committed" in lost[0].getMessage()
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
        assert late.exists()  # it stays for the worker that holds acme now
        assert not list((tmp_path / "acme" / "in").glob("rejected/receipts-2*"))
        with read_session(runtimes["acme"].db) as session:
            assert session.get(Cursor, "probe").value == "1"  # type: ignore[union-attr]
        with write_session(runtimes["bolt"].db) as session:  # bolt's lease is untouched
            session.add(Cursor(name="probe", value="2"))
        for runtime in runtimes.values():
            runtime.close()
        with fleet.engine.connect() as connection:  # the shared pool outlives a company
            assert connection.execute(text("SELECT 1")).scalar() == 1
        with fleet.engine.begin() as connection:  # migrated by a newer nebridge
            connection.execute(
                text(f"UPDATE \"{fleet.schema('bolt')}\".alembic_version SET version_num = '9999'")
            )
        with pytest.raises(CompanyNotMigrated, match="older nebridge"):
            company_runtime(loaded, companies.companies["bolt"], fleet=fleet)
    finally:
        keeper.stop()
        with fleet.engine.begin() as connection:
            for code in ("acme", "bolt"):
                connection.execute(text(f'DROP SCHEMA IF EXISTS "{fleet.schema(code)}" CASCADE'))
        fleet.close()
