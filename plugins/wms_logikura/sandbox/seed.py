"""The seeded world: three warehouses (拠点), two external-service accounts, ``seed_size``
product variants with stock and 紐付け links, and two wholesale / shop consignees.

Same ``seed`` → the same world, field for field (token values are random). The seed writes
records directly, without ledger entries: initial stock is not a movement.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Protocol

from plugins.wms_logikura.sandbox.clock import Clock
from plugins.wms_logikura.sandbox.config import SandboxConfig
from plugins.wms_logikura.sandbox.model import Account, Consignee, Variant, Warehouse

#: (code, name): the seed article's warehouses.
WAREHOUSES: tuple[tuple[str, str], ...] = (
    ("ITAKU", "委託販売在庫"),
    ("SHINJUKU", "新宿拠点"),
    ("ASAKUSA", "浅草拠点"),
)
NE_ACCOUNT_NAME = "ネクストエンジン連携"
NE_SERVICE_NAME = "ネクストエンジン"
#: (base code, name) of the generated products; variants add a colour / size suffix.
BASES: tuple[tuple[str, str], ...] = (
    ("TSHIRT", "Tシャツ"),
    ("Mug", "マグカップ"),
    ("cap", "キャップ"),
    ("BAG-Tote", "トート"),
    ("sock", "ソックス"),
    ("Pen-Gel", "ゲルペン"),
    ("NOTE", "ノート"),
    ("towel", "タオル"),
)
SUFFIXES: tuple[str, ...] = ("Red-S", "red-M", "NAVY-L", "wht", "Blk-01", "mini", "27", "A5")
CONSIGNEES: tuple[tuple[str, str, str], ...] = (
    ("W-001", "株式会社サンプル卸売", "wholesaler"),
    ("SHOP-SHINJUKU", "新宿店", "customer"),
)


class World(Protocol):
    """The parts of :class:`~plugins.wms_logikura.sandbox.state.SandboxState` the seed fills
    (named here so the seed does not import the state that calls it)."""

    config: SandboxConfig
    clock: Clock
    warehouses: dict[int, Warehouse]
    accounts: dict[int, Account]
    consignees: dict[int, Consignee]

    def next_id(self, kind: str) -> int: ...

    def insert_variant(
        self,
        product_code: str,
        name: str,
        link_code: str | None,
        stock: Mapping[str, int],
        *,
        price: int = 1000,
    ) -> Variant: ...


def build_world(state: World) -> None:
    """Fill ``state`` with the seeded world."""
    rng = random.Random(state.config.seed)
    now = state.clock.iso()
    for code, name in WAREHOUSES:
        wid = state.next_id("warehouse")
        state.warehouses[wid] = Warehouse(wid, code, name, now)
    ne = state.next_id("account")
    state.accounts[ne] = Account(
        ne, NE_ACCOUNT_NAME, f"ne-company-{state.config.seed:04d}", None, NE_SERVICE_NAME
    )
    shop = state.next_id("account")
    state.accounts[shop] = Account(shop, "新宿店 スマレジ", "smaregi-shinjuku", 1, "スマレジ")
    for code, name, kind in CONSIGNEES:
        cid = state.next_id("consignee")
        state.consignees[cid] = Consignee(cid, code, name, consignee_type=kind, updated_at=now)
    for n in range(state.config.seed_size):
        base, label = BASES[n % len(BASES)]
        suffix = SUFFIXES[(n // len(BASES)) % len(SUFFIXES)]
        product_code = f"{base}-{suffix}" + (f"-{n // 64}" if n >= 64 else "")
        roll = rng.random()
        if roll < 0.1:
            link: str | None = None
        elif roll < 0.3:
            link = product_code.swapcase()
        else:
            link = product_code
        stock = {
            "ITAKU": rng.randint(0, 100),
            "SHINJUKU": rng.randint(0, 30),
            "ASAKUSA": rng.randint(0, 30),
        }
        state.insert_variant(
            product_code,
            f"{label} {suffix}",
            link,
            stock,
            price=rng.choice((600, 1200, 2980, 3500)),
        )
