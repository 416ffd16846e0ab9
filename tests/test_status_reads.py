"""``nebridge status`` reads the store with plain SQL (:mod:`daemon.store.reads`, #18): the same
figures as the ORM readers the engine, ``attention`` and the metrics use, on SQLite and on
PostgreSQL, and the same gate on a database that is not migrated or not there.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from daemon import attention, nelink, orderwatch
from daemon.cli import app
from daemon.config import load_config
from daemon.nextengine.tokens import FileTokenStore, TokenSet
from daemon.notify import pending_by_sink
from daemon.outbox import backlog_by_state
from daemon.pluginload import load_plugins
from daemon.status import ATTENTION_LIMIT, collect_status, live_attention
from daemon.store.engine import make_engine, write_session
from daemon.store.models import (
    AttentionProblem,
    ImportedOrder,
    InboxBatch,
    InboxEvent,
    NeLink,
    NotificationRow,
    NotifyDelivery,
    OrderChange,
    OutboxItem,
    RunRecord,
)
from daemon.store.reads import StoreUnreadable, open_reader, sqlite_file, utc
from tests.conftest import ConfigFactory

T0 = datetime(2026, 12, 1, 9, 30, 15, 123456, tzinfo=UTC)
NOW = datetime.now(UTC)  # the token pair lapses in 3 days: no warning


def _fill(url: str) -> None:
    """One row of every kind ``status`` counts or lists, several per attention source."""
    engine = make_engine(url, create=False)
    at = [T0 + timedelta(minutes=i) for i in range(30)]
    with write_session(engine) as s:
        s.add(
            NeLink(
                state="connected",
                company_id="C1",
                company_name="テスト商店",
                connected_at=at[0],
                updated_at=at[0],
            )
        )
        for i, state in enumerate(("held", "held", "instructed")):
            s.add(
                ImportedOrder(
                    ne_order_id=f"10{i}",
                    warehouse="ITAKU",
                    state=state,
                    hold_reason="no such product" if i else None,
                    imported_at=at[i],
                    updated_at=at[i + 1],
                )
            )
        for i, (kind, state) in enumerate(
            (("shipment", "held"), ("shipment", "pending"), ("receipt", "held"))
        ):
            s.add(
                InboxEvent(
                    kind=kind,
                    external_id=f"E{i}",
                    warehouse="SHINJUKU",
                    content_hash="h",
                    payload="{}",
                    source="f.csv",
                    state=state,
                    last_error="bad row" if i else None,
                    received_at=at[3 + i],
                    processed_at=at[6] if i == 2 else None,
                )
            )
        s.flush()
        for i, state in enumerate(("failed", "in_doubt", "pending", "done", "failed")):
            s.add(
                OutboxItem(
                    idempotency_key=f"k{i}",
                    kind="ship_order",
                    warehouse="ITAKU",
                    plugin="status_update",
                    subject=f"S{i}",
                    payload="{}",
                    state=state,
                    last_error="refused" if i == 0 else None,
                    updated_at=at[8 + i],
                )
            )
        s.add(
            InboxBatch(
                source="bad.csv",
                kind="shipment",
                state="rejected",
                errors="line 2: no order\nline 3: no order",
                received_at=at[14],
            )
        )
        s.add(InboxBatch(source="ok.csv", kind="shipment", state="accepted", received_at=at[15]))
        s.add(
            AttentionProblem(
                key="file_not_taken:x.csv",
                kind="file_not_taken",
                severity="warning",
                warehouse="ITAKU",
                subject="x.csv",
                reason="locked",
                fix="unlock it",
                first_seen=at[16],
                last_seen=at[17],
            )
        )
        s.add(
            AttentionProblem(
                key="old",
                kind="wms_mismatch",
                reason="r",
                fix="f",
                state="resolved",
                first_seen=at[0],
                last_seen=at[1],
            )
        )
        for stage, minute in (("shipments", 18), ("shipments", 19), ("receipts", 20)):
            s.add(
                RunRecord(
                    run_id=f"r{minute}",
                    warehouse="ITAKU",
                    stage=stage,
                    outcome="ok" if minute != 19 else "failed",
                    items_in=minute,
                    items_out=1,
                    detail=f"run {minute}",
                    started_at=at[minute],
                )
            )
        note = NotificationRow(
            key="k",
            kind="held_order",
            event="open",
            severity="error",
            title="t",
            detail="d",
            fix="f",
            ids="[]",
            lines="[]",
        )
        s.add(note)
        s.flush()
        for i, state in enumerate(("pending", "in_flight", "sent")):
            s.add(
                NotifyDelivery(
                    notification_id=note.id or 0,
                    sink=f"sink{i % 2}",
                    delivery_key=f"{note.id}:{i}",
                    state=state,
                )
            )
        for i, kind in enumerate(("cancelled", "edited", "cancelled")):
            s.add(
                OrderChange(
                    ne_order_id=f"10{i}",
                    warehouse="ITAKU",
                    kind=kind,
                    batch=f"b{i}",
                    detected_at=at[21],
                )
            )
    engine.dispose()


@pytest.fixture
def filled(make_config: ConfigFactory, database_url: str) -> Path:
    """A migrated installation on ``database_url`` with rows of every kind and a token pair."""
    path = make_config(database_url=database_url)
    _fill(database_url)
    FileTokenStore(load_config(path).config.token_file).save(
        TokenSet("a", "r", NOW + timedelta(days=1), NOW + timedelta(days=3))
    )
    return path


def test_status_reads_what_the_orm_readers_read(filled: Path) -> None:
    loaded = load_config(filled)
    url = loaded.config.resolved_database_url
    host = load_plugins(loaded)[0]
    with open_reader(url) as reader:
        data = collect_status(loaded, reader, host)
    engine = make_engine(url, create=False)
    try:
        expected_attention = attention.collect(
            engine, live=live_attention(host), limit=ATTENTION_LIMIT
        ).as_dict()
        assert data["attention"] == expected_attention
        assert data["attention"]["counts"] == {
            "held_order": 2,
            "held_event": 2,
            "failed_action": 2,
            "in_doubt_action": 1,
            "rejected_file": 1,
            "file_not_taken": 1,
        }
        assert data["outbox"] == backlog_by_state(engine)
        assert data["notify"]["waiting"] == pending_by_sink(engine) == {"sink0": 1, "sink1": 1}
        assert data["order_watch"] == orderwatch.counts(engine)
        link = nelink.link_info(loaded.config, engine).as_dict()
        assert data["nextengine"] == {**link, "warning": None}
        assert link["state"] == "connected" and link["connected_at"] == T0.isoformat()
    finally:
        engine.dispose()
    assert data["inbox"] == {"shipment": {"held": 1, "pending": 1}, "receipt": {"held": 1}}
    stages = data["warehouses"][0]["stages"]
    assert stages["shipments"] == {
        "at": (T0 + timedelta(minutes=19)).isoformat(),
        "outcome": "failed",
        "items_in": 19,
        "items_out": 1,
        "detail": "run 19",
    }
    assert stages["import_orders"] is None and stages["receipts"]["items_in"] == 20
    assert data["database"]["up_to_date"] is True


def test_the_attention_read_keeps_the_limit_and_the_order(filled: Path) -> None:
    """Fewer items than there are: the newest, in the ORM reader's order, every kind counted."""
    loaded = load_config(filled)
    url = loaded.config.resolved_database_url
    from daemon.attention_items import collect_plain

    with open_reader(url) as reader:
        plain = collect_plain(reader, limit=3, company="acme").as_dict()
    engine = make_engine(url, create=False)
    try:
        assert plain == attention.collect(engine, limit=3, company="acme").as_dict()
    finally:
        engine.dispose()
    assert len(plain["items"]) == 3 and plain["total"] == 9
    assert [i["kind"] for i in plain["items"]] == [
        "file_not_taken",
        "rejected_file",
        "failed_action",
    ]
    assert "--company acme" in plain["items"][1]["fix"]


def test_status_json_on_the_cli(filled: Path) -> None:
    result = CliRunner().invoke(app, ["--config", str(filled), "status", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["attention"]["total"] == 9
    assert data["nextengine"]["company_name"] == "テスト商店"


def test_an_unmigrated_database_is_gated(make_config: ConfigFactory, database_url: str) -> None:
    """An empty database: status says to run `db upgrade` and shows no store figure."""
    path = make_config(migrate=False, database_url=database_url)
    empty = sqlite_file(database_url)
    if empty is not None:  # the SQLite file exists, with no table
        empty.touch()
    result = CliRunner().invoke(app, ["--config", str(path), "status", "--json"])
    assert result.exit_code == 1, result.output  # as on a missing SQLite file (F15)
    data = json.loads(result.stdout)
    assert data["problems"] == ["database not migrated: run `nebridge db upgrade`"]
    assert data["database"] == {
        "revision": None,
        "latest": data["database"]["latest"],
        "up_to_date": False,
    }
    assert "nextengine" not in data and data["database"]["latest"]
    human = CliRunner().invoke(app, ["--config", str(path), "status"])
    assert human.exit_code == 1, human.output
    assert "nebridge db upgrade" in human.stderr
    assert "nothing waits for a person" not in human.stdout


def test_a_missing_sqlite_file_says_what_to_do(make_config: ConfigFactory) -> None:
    path = make_config(migrate=False)
    result = CliRunner().invoke(app, ["--config", str(path), "status"])
    assert result.exit_code == 1
    assert "there is no database at" in result.stderr and "nebridge db upgrade" in result.stderr
    assert not (path.parent / "state" / "nebridge.db").exists()  # not created by status


def test_an_unreadable_sqlite_file_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-database.db"
    bad.write_bytes(b"this is not SQLite" * 100)
    with (
        pytest.raises(StoreUnreadable, match=r"not-a-database\.db.*state_dir"),
        open_reader(f"sqlite:///{bad}") as reader,
    ):
        reader.rows("SELECT 1 FROM alembic_version")


@pytest.mark.parametrize(
    ("url", "file"),
    [
        ("sqlite:////srv/nb/nebridge.db", "/srv/nb/nebridge.db"),
        ("sqlite:///state/nebridge.db", "state/nebridge.db"),
        ("sqlite:///x.db?timeout=5", None),  # options: the engine reads it
        ("sqlite:///a%20b.db", None),
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        ("postgresql+psycopg://u@h/db", None),
    ],
)
def test_only_a_plain_sqlite_url_is_read_by_sqlite3(url: str, file: str | None) -> None:
    assert sqlite_file(url) == (None if file is None else Path(file))


def test_stored_timestamps_read_as_aware_utc() -> None:
    assert utc("2026-12-01 09:30:15.123456") == T0
    assert utc(T0.astimezone(timezone(timedelta(hours=9)))) == T0
    assert utc(None) is None
