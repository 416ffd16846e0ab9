"""One empty product export of the WMS never empties the product master (attacker review).

A header-only ``products.csv`` used to replace the master with 0 products, so every later
shipment was rejected "unknown product". A master that would drop more than
``wms.csv.products_max_drop_percent`` of the products in use is rejected as a file, with
the reason and the override; through the real CLI, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from daemon.cli import app
from daemon.config import load_config
from daemon.store.engine import make_engine
from daemon.store.models import WmsProduct
from tests.conftest import ConfigFactory
from tests.ne_world import make_world


def cli(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["--config", str(config), *args])
    return result.exit_code, result.stdout + result.stderr


def stored_products(config: Path) -> list[str]:
    engine = make_engine(load_config(config).config.resolved_database_url)
    try:
        with Session(engine) as session:
            return sorted(session.exec(select(col(WmsProduct.product_code))).all())
    finally:
        engine.dispose()


def attention_keys(config: Path) -> list[str]:
    _code, out = cli(config, "attention", "--json")
    data: dict[str, Any] = json.loads(out)
    return [item["key"] for item in data["items"]]


def set_max_drop(config: Path, percent: int) -> None:
    yaml = YAML()
    data = yaml.load(config.read_text(encoding="utf-8"))
    data["wms"]["csv"]["products_max_drop_percent"] = percent
    with config.open("w", encoding="utf-8") as handle:
        yaml.dump(data, handle)


def test_header_only_master_is_rejected_and_the_master_in_use_kept(
    make_config: ConfigFactory, tmp_path: Path, database_url: str
) -> None:
    for world in make_world(make_config, tmp_path, database_url=database_url):
        world.products([("P-A", "A-1"), ("P-B", "B-1"), ("P-C", "C-1")])
        cli(world.config, "run", "--once")
        assert stored_products(world.config) == ["P-A", "P-B", "P-C"]

        world.products([])  # the WMS exported a header and nothing else
        cli(world.config, "run", "--once")
        assert stored_products(world.config) == ["P-A", "P-B", "P-C"]
        report = (world.inbox / "rejected" / "products.csv.errors.txt").read_text()
        assert "holds 0 product(s) where the product master in use holds 3" in report
        assert "products_max_drop_percent: 100" in report
        assert "nebridge inbox retry products.csv" in report
        assert "csv:product_master_shrinks" in attention_keys(world.config)

        world.products([("P-A", "A-1"), ("P-B", "B-1")])  # drops 33%: under the default 50
        cli(world.config, "run", "--once")
        assert stored_products(world.config) == ["P-A", "P-B"]
        assert "csv:product_master_shrinks" not in attention_keys(world.config)


def test_the_override_lets_an_intended_shrink_through(
    make_config: ConfigFactory, tmp_path: Path, database_url: str
) -> None:
    for world in make_world(make_config, tmp_path, database_url=database_url):
        world.products([("P-A", "A-1"), ("P-B", "B-1")])
        cli(world.config, "run", "--once")
        world.products([("P-A", "A-1")])  # drops 50%: not more than the default
        cli(world.config, "run", "--once")
        assert stored_products(world.config) == ["P-A"]
        world.products([])
        cli(world.config, "run", "--once")
        assert stored_products(world.config) == ["P-A"]
        set_max_drop(world.config, 100)
        code, out = cli(world.config, "inbox", "retry", "products.csv")
        assert code == 0, out
        cli(world.config, "run", "--once")
        assert stored_products(world.config) == []
        assert not (world.inbox / "rejected" / "products.csv").exists()
