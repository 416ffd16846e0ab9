"""An order the WMS connector cannot take is held alone; its batch-mates go on (issue #12, 5).

Real sandbox over HTTP, real order files, real databases, the real CLI: an order whose
consignee name cannot be written in CP932 is held with the reason while the others of its
batch are instructed; after a fix it is rendered again (by itself when it changes in Next
Engine, or with ``nebridge orders retry``), and ``nebridge orders drop`` gives one up for good.
Never an order instructed twice, never one lost.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from daemon.admin import run_once
from daemon.attention import collect
from daemon.cli import app
from daemon.config import load_config
from daemon.store.engine import make_engine, read_session
from daemon.store.models import ImportedOrder, InstructionBatchRecord
from tests.conftest import ConfigFactory
from tests.ne_world import World, make_world

SUSHI = "🍣 太郎"  # U+1F363 has no CP932 code
PAST = "2026-01-05 09:00:00"  # print-instruct date long reached


@pytest.fixture
def world(make_config: ConfigFactory, tmp_path: Path, database_url: str) -> Iterator[World]:
    wms = {
        "connector": "csv",
        "csv": {
            "inbox": str(tmp_path / "wms" / "inbox"),
            "outbox": str(tmp_path / "wms" / "outbox"),
            "stable_seconds": 0.0,
            "encoding_out": "cp932",
        },
    }
    yield from make_world(
        make_config, tmp_path, database_url=database_url, wms=wms, order_import={"claim": "tag"}
    )


def cli(world: World, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["--config", str(world.config), *args])
    return result.exit_code, result.stdout, " ".join(result.stderr.split())  # unwrapped


def files(world: World) -> list[list[dict[str, str]]]:
    """The rows of every order file (CP932, or UTF-8 once the test switched)."""
    out = []
    for path in sorted(world.outbox.glob("orders-*.csv")):
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("cp932")
        out.append(list(csv.DictReader(io.StringIO(text, newline=""))))
    return out


def instructed(world: World) -> Counter[str]:
    """How many order files name each order (an order in two files would be doubled)."""
    return Counter(o for rows in files(world) for o in {r["ne_order_id"] for r in rows})


def orders(world: World, *args: str) -> dict[str, dict[str, Any]]:
    code, out, err = cli(world, "orders", "list", "--json", *args)
    assert code == 0, err
    return {row["ne_order_id"]: row for row in json.loads(out)}


def run(world: World) -> Any:
    rt = world.runtime()
    try:
        return run_once(rt)
    finally:
        rt.close()


def engine_of(world: World) -> Any:
    return make_engine(load_config(world.config).config.resolved_database_url)


def setup_orders(world: World) -> tuple[int, int, int]:
    st = world.sandbox.state
    st.create_goods("A-1", quantity=50)
    good1 = st.create_order([("A-1", 1)], instruct_date=PAST)
    bad = st.create_order(
        [("A-1", 2)], fields={"receive_order_consignee_name": SUSHI}, instruct_date=PAST
    )
    good2 = st.create_order([("A-1", 3)], instruct_date=PAST)
    world.products([("P-A", "A-1")])
    return good1, bad, good2


def test_unencodable_order_is_held_alone_and_taken_again_once_fixed_in_next_engine(
    world: World,
) -> None:
    good1, bad, good2 = setup_orders(world)
    report = run(world)
    assert instructed(world) == Counter({str(good1): 1, str(good2): 1})
    stage = next(r for r in report.stages if r.stage.value == "import_orders")
    assert stage.counts["imported"] == 2 and stage.counts["held"] == 1
    assert any(f"order {bad} held" in n and "cp932" in n for n in stage.notices)

    held = orders(world, "--state", "held")
    assert list(held) == [str(bad)]
    assert "cannot be written in cp932" in held[str(bad)]["reason"]
    assert f"nebridge orders retry {bad}" in held[str(bad)]["reason"]
    assert {o for o, r in orders(world).items() if r["state"] == "instructed"} == {
        str(good1),
        str(good2),
    }
    engine = engine_of(world)
    try:
        items = [i for i in collect(engine).items if i.kind == "held_order"]
        assert [i.subject for i in items] == [str(bad)]
        assert f"nebridge orders retry {bad}" in items[0].fix
        with read_session(engine) as session:
            (record,) = session.scalars(select(InstructionBatchRecord)).all()
        assert record.state == "pushed"
        assert [o["ne_order_id"] for o in json.loads(record.orders)] == [str(good1), str(good2)]
    finally:
        engine.dispose()
    # the claim tag marks what was instructed, never the held order
    assert "[nebridge取込済]" in world.order(good1)["receive_order_gruoping_tag"]
    assert "[nebridge取込済]" not in (world.order(bad)["receive_order_gruoping_tag"] or "")

    run(world)  # unchanged: still held, nothing written twice
    assert instructed(world) == Counter({str(good1): 1, str(good2): 1})

    world.sandbox.state.human_edit(bad, {"receive_order_consignee_name": "寿司 太郎"})
    report = run(world)
    assert instructed(world) == Counter({str(good1): 1, str(bad): 1, str(good2): 1})
    assert orders(world)[str(bad)]["state"] == "instructed"
    assert orders(world, "--state", "held") == {}
    (row,) = [r for f in files(world) for r in f if r["ne_order_id"] == str(bad)]
    assert row["consignee_name"] == "寿司 太郎"


def test_retry_renders_again_after_a_fix_outside_next_engine_and_drop_gives_up(
    world: World,
) -> None:
    good1, bad, good2 = setup_orders(world)
    other = world.sandbox.state.create_order(
        [("A-1", 1)], fields={"receive_order_consignee_address2": "🏠 1F"}, instruct_date=PAST
    )
    run(world)
    assert set(orders(world, "--state", "held")) == {str(bad), str(other)}

    code, _out, err = cli(world, "orders", "drop", str(other))
    assert code == 0 and "never import it" in err
    code, _out, err = cli(world, "orders", "retry", str(good1))
    assert code == 1 and "never instructs an order twice" in err
    code, _out, err = cli(world, "orders", "retry", "999999")
    assert code == 1 and "nebridge orders list" in err

    # an hour later another order changes: the import's cursor moves past the held order,
    # which is then no longer read by itself
    world.sandbox.state.clock.advance(3600)
    world.sandbox.state.human_edit(good2, {"receive_order_consignee_name": "佐藤 花子"})
    run(world)
    assert orders(world)[str(bad)]["state"] == "held"
    # the fix is on nebridge's side (the WMS now reads UTF-8): nothing changes in NE
    text = world.config.read_text(encoding="utf-8")
    assert text.count("encoding_out: cp932") == 1
    world.config.write_text(
        text.replace("encoding_out: cp932", "encoding_out: utf-8"), encoding="utf-8"
    )
    run(world)
    assert str(bad) not in instructed(world)  # not by itself: nothing changed in NE
    calls = len(world.sandbox.ledger.entries())
    code, _out, err = cli(world, "orders", "retry", str(bad))
    assert code == 0 and "next order import" in err
    assert len(world.sandbox.ledger.entries()) == calls  # retry itself asks nothing of NE
    assert orders(world, "--state", "retry").keys() == {str(bad)}
    run(world)
    rows = [r for f in files(world) for r in f if r["ne_order_id"] == str(bad)]
    assert len(rows) == 1 and rows[0]["consignee_name"] == SUSHI
    assert instructed(world)[str(bad)] == 1
    assert orders(world)[str(bad)]["state"] == "instructed"

    world.sandbox.state.human_edit(other, {"receive_order_consignee_address2": "1F"})
    run(world)
    assert str(other) not in instructed(world)
    assert orders(world)[str(other)]["state"] == "dropped"
    code, out, _err = cli(world, "orders", "list", "--state", "dropped")
    assert code == 0 and str(other) in out


def test_a_batch_left_pending_is_split_when_delivered_again(world: World) -> None:
    """The batch is recorded, its delivery fails (outbox folder gone), then it is delivered
    again: the refused order is held then, the others are written once."""
    good1, bad, good2 = setup_orders(world)
    rt = world.runtime()
    try:
        assert rt.connector is not None
        rt.connector.recover(rt.connector_context())  # as the daemon starts: folders made
        shutil.rmtree(world.outbox)
        world.outbox.write_text("not a folder")
        report = run_once(rt)
    finally:
        rt.close()
    stage = next(r for r in report.stages if r.stage.value == "import_orders")
    assert any("not delivered yet" in f for f in stage.failures)
    engine = engine_of(world)
    try:
        waiting = [i for i in collect(engine).items if i.kind == "held_instruction"]
        assert len(waiting) == 1 and "3 order(s)" in waiting[0].reason
        with read_session(engine) as session:
            assert [r.state for r in session.scalars(select(InstructionBatchRecord))] == ["pending"]
            assert {o.ne_order_id: o.state for o in session.scalars(select(ImportedOrder))} == {
                str(good1): "instructed",
                str(bad): "instructed",
                str(good2): "instructed",
            }
        world.outbox.unlink()
        world.outbox.mkdir()
        run(world)
        assert instructed(world) == Counter({str(good1): 1, str(good2): 1})
        assert not [i for i in collect(engine).items if i.kind == "held_instruction"]
        with read_session(engine) as session:
            records = session.scalars(select(InstructionBatchRecord)).all()
            held = session.get(ImportedOrder, str(bad))
        assert {r.state for r in records} == {"pushed"}
        assert str(bad) not in {o["ne_order_id"] for r in records for o in json.loads(r.orders)}
        assert held is not None and held.state == "held" and held.instruction_batch is None
        run(world)
        assert instructed(world) == Counter({str(good1): 1, str(good2): 1})
    finally:
        engine.dispose()
