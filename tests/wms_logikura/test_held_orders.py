"""Logikura: an order Logikura cannot take is held alone, its batch-mates are created once,
and after the fix ``nebridge orders retry`` creates it (issue #12, finding 5)."""

from __future__ import annotations

from ruamel.yaml import YAML
from typer.testing import CliRunner

from daemon.cli import app
from tests.conftest import dump_yaml
from tests.wms_logikura.test_e2e import Linked, linked  # noqa: F401 (the fixture)


def set_logikura(world: Linked, **options: object) -> None:
    data = YAML(typ="safe", pure=True).load(world.config.read_text(encoding="utf-8"))
    data["wms"]["logikura"].update(options)
    world.config.write_text(dump_yaml(data), encoding="utf-8")


def test_unmapped_delivery_method_holds_only_that_order(linked: Linked) -> None:  # noqa: F811
    ne, lk = linked.ne, linked.lk
    set_logikura(
        linked,
        unmapped_delivery_method="fail",
        delivery_methods={"ヤマト運輸(宅急便)": "yamato_b2"},
    )
    ne.state.create_goods("A-1", quantity=10)
    lk.state.add_variant("LK-A", link_code="A-1", stock={"ITAKU": 10})
    good = ne.state.create_order([("A-1", 1)], shop_id=1)
    odd = ne.state.create_order([("A-1", 2)], shop_id=1, fields={"receive_order_delivery_id": "99"})
    good2 = ne.state.create_order([("A-1", 3)], shop_id=1)

    first = linked.once()
    assert lk.ledger.schedules_created() == {str(good): 1, str(good2): 1}
    stage = next(s for s in first.stages if s.stage.value == "import_orders")
    assert stage.failures == []
    held = [i for i in first.attention.items if i.kind == "held_order"]
    assert [i.subject for i in held] == [str(odd)]
    assert "wms.logikura.delivery_methods" in held[0].reason
    assert f"nebridge orders retry {odd}" in held[0].fix
    linked.once()  # the batch is delivered: nothing is sent again, the order stays held
    assert lk.ledger.schedules_created() == {str(good): 1, str(good2): 1}

    set_logikura(linked, delivery_methods={"ヤマト運輸(宅急便)": "yamato_b2", "99": "yamato_b2"})
    result = CliRunner().invoke(app, ["--config", str(linked.config), "orders", "retry", str(odd)])
    assert result.exit_code == 0, result.stderr
    linked.once()
    assert lk.ledger.schedules_created() == {str(good): 1, str(odd): 1, str(good2): 1}
    linked.once()
    assert lk.ledger.schedules_created() == {str(good): 1, str(odd): 1, str(good2): 1}
