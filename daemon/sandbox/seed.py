"""The seeded world: company, user, shops, tag master, ~40 goods and ``seed_size`` orders.

Same ``seed`` (and same ``clock_start``) → the same world, field for field. Dates are placed
relative to the clock's start so a world always looks "recent". The generator writes records
directly (no ledger entries, no per-order validation) so 100,000 orders build in seconds.
"""

from __future__ import annotations

import gc
import random
from datetime import timedelta
from typing import Protocol

from daemon.sandbox.clock import NE_DATE_FORMAT, ZERO_DATE, Clock
from daemon.sandbox.config import SandboxConfig
from daemon.sandbox.model import Goods, Order, Row

TAG_TARGET = "[ロジクラ受注取込対象]"
TAG_LOOKALIKE = "[ロジクラ受注取込対象外]"
TAG_CONTAINS_NAME = "[旧ロジクラ受注取込対象]"
TAG_UNBRACKETED = "ロジクラ受注取込対象"

SHOPS: dict[int, str] = {1: "楽天市場店", 2: "Yahoo!ショッピング店", 3: "Amazon店", 4: "自社サイト"}

#: (code, name, selling price): mixed-case codes, unique ignoring case.
GOODS: tuple[tuple[str, str, int], ...] = (
    ("TSHIRT-Red-S", "Tシャツ 赤 S", 2980),
    ("TSHIRT-Red-M", "Tシャツ 赤 M", 2980),
    ("TSHIRT-Red-L", "Tシャツ 赤 L", 2980),
    ("TSHIRT-Navy-S", "Tシャツ 紺 S", 2980),
    ("TSHIRT-Navy-M", "Tシャツ 紺 M", 2980),
    ("TSHIRT-Navy-L", "Tシャツ 紺 L", 2980),
    ("mug-white-01", "マグカップ 白", 1200),
    ("mug-black-01", "マグカップ 黒", 1200),
    ("Mug-Gift-Set", "マグカップ ギフトセット", 3500),
    ("CAP-blk", "キャップ 黒", 2400),
    ("CAP-wht", "キャップ 白", 2400),
    ("cap-Kids", "キッズキャップ", 1800),
    ("Bag-Tote-L", "トートバッグ L", 3200),
    ("bag-tote-s", "トートバッグ S", 2600),
    ("BAG-Mini", "ミニバッグ", 1900),
    ("sock-23", "ソックス 23cm", 600),
    ("sock-25", "ソックス 25cm", 600),
    ("SOCK-27", "ソックス 27cm", 600),
    ("Pen-Gel-05", "ゲルペン 0.5", 180),
    ("pen-gel-07", "ゲルペン 0.7", 180),
    ("PEN-Ball-Blk", "ボールペン 黒", 150),
    ("note-A5", "ノート A5", 320),
    ("Note-B5", "ノート B5", 350),
    ("NOTE-A4-Grid", "方眼ノート A4", 480),
    ("shouhin-001", "サンプル商品 001", 1000),
    ("shouhin-002", "サンプル商品 002", 1500),
    ("Shouhin-003", "サンプル商品 003", 2000),
    ("TOWEL-face", "フェイスタオル", 800),
    ("towel-bath", "バスタオル", 1800),
    ("Towel-Mini", "ミニタオル", 400),
    ("umbrella-65", "傘 65cm", 2200),
    ("Umbrella-Fold", "折りたたみ傘", 2800),
    ("UMB-kids", "キッズ傘", 1600),
    ("candle-S", "キャンドル S", 900),
    ("Candle-M", "キャンドル M", 1400),
    ("CANDLE-L", "キャンドル L", 2100),
    ("soap-lavender", "石けん ラベンダー", 700),
    ("Soap-Citrus", "石けん シトラス", 700),
    ("SOAP-Mint", "石けん ミント", 700),
    ("KEY-ring-01", "キーリング", 500),
)

TAGS: tuple[tuple[int, str, str], ...] = (
    (1, "ロジクラ受注取込対象", "#2E7D32"),
    (2, "ロジクラ受注取込対象外", "#C62828"),
    (3, "旧ロジクラ受注取込対象", "#757575"),
    (4, "ギフト", "#AD1457"),
    (5, "要確認", "#F9A825"),
    (6, "【済】一括更新", "#1565C0"),
)

_NAMES = (
    "佐藤 一郎",
    "鈴木 花子",
    "高橋 健",
    "田中 美咲",
    "伊藤 翔",
    "渡辺 結衣",
    "山本 大輔",
    "中村 さくら",
    "小林 蓮",
    "加藤 陽菜",
)
_KANAS = (
    "サトウ イチロウ",
    "スズキ ハナコ",
    "タカハシ ケン",
    "タナカ ミサキ",
    "イトウ ショウ",
    "ワタナベ ユイ",
    "ヤマモト ダイスケ",
    "ナカムラ サクラ",
    "コバヤシ レン",
    "カトウ ヒナ",
)
_ADDRESSES = (
    "東京都渋谷区神南1-2-3",
    "大阪府大阪市北区梅田2-4-9",
    "北海道札幌市中央区北1条西2",
    "福岡県福岡市博多区博多駅前3-1",
    "愛知県名古屋市中村区名駅4-7-1",
    "神奈川県横浜市西区みなとみらい2-2-1",
)
_ZIPS = ("150-0041", "530-0001", "060-0001", "812-0011", "450-0002", "220-0012")
_STATUSES = (1, 2, 20, 20, 20, 20, 20, 20, 20, 40, 40, 40, 40, 50, 50, 50, 50, 2, 2, 20)
_SUPPLIERS = ("株式会社サンプル商事", "有限会社テスト製作所", "サンド工業")
_CUT_PREFIX = {1: "rakuten-", 2: "yahoo-", 3: "amzn-", 4: "web-"}


class World(Protocol):
    """The parts of :class:`~daemon.sandbox.state.SandboxState` the seed fills (named here so
    the seed does not import the state that calls it)."""

    config: SandboxConfig
    clock: Clock
    shops: dict[int, str]
    company: dict[str, str]
    user: dict[str, str]
    tags: list[dict[str, str | None]]
    goods: dict[str, Goods]

    def goods_key(self, code: str) -> str: ...

    def find_goods(self, code: str) -> Goods | None: ...

    def next_order_id(self) -> int: ...

    def index_order(self, order: Order) -> None: ...


class _DateFmt:
    """Fast NE date formatting of "seconds relative to the clock start" (cached days)."""

    def __init__(self, state: World) -> None:
        self._start = state.clock.start
        self._midnight = self._start.replace(hour=0, minute=0, second=0)
        self._start_offset = int((self._start - self._midnight).total_seconds())
        self._days: dict[int, str] = {}

    def __call__(self, offset_s: int) -> str:
        total = self._start_offset + offset_s
        day, rest = divmod(total, 86_400)
        text = self._days.get(day)
        if text is None:
            text = (self._midnight + timedelta(days=day)).strftime("%Y-%m-%d")
            self._days[day] = text
        hours, rest = divmod(rest, 3600)
        minutes, seconds = divmod(rest, 60)
        return f"{text} {hours:02d}:{minutes:02d}:{seconds:02d}"


def build_world(state: World) -> None:
    """Fill ``state`` deterministically from ``state.config.seed``."""
    rng = random.Random(state.config.seed)
    fmt = _DateFmt(state)
    start_text = state.clock.start.strftime(NE_DATE_FORMAT)
    state.shops = dict(SHOPS)
    state.company = {
        "company_id": "1",
        "company_ne_id": f"NE{rng.getrandbits(40):010X}",
        "company_name": "サンドボックス商店",
        "company_kana": "サンドボックスショウテン",
        "company_app_header": f"sb{rng.getrandbits(32):08x}",
    }
    state.user = {
        "uid": f"{rng.getrandbits(512):0128x}",
        "pic_id": "1",
        "pic_ne_id": f"NEP{rng.getrandbits(40):010X}",
        "pic_name": "山田 花子",
        "pic_kana": "ヤマダ ハナコ",
        "pic_mail_address": "hanako.yamada@example.jp",
        "pic_post_name": "物流部",
    }
    state.tags = [
        {
            "grouping_tag_id": str(tag_id),
            "grouping_tag_name": name,
            "grouping_tag_color": color,
            "grouping_tag_str_color": "#FFFFFF",
            "grouping_tag_memo": None,
            "grouping_tag_deleted_flag": "0",
            "grouping_tag_creation_date": fmt(-90 * 86_400),
            "grouping_tag_last_modified_date": None,
        }
        for tag_id, name, color in TAGS
    ]
    _build_goods(state, rng, fmt)
    # building creates ~10^6 live objects and no garbage: GC passes meanwhile only cost time
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        _build_orders(state, rng, fmt, start_text)
    finally:
        if was_enabled:
            gc.enable()


def _build_goods(state: World, rng: random.Random, fmt: _DateFmt) -> None:
    created = fmt(-120 * 86_400)
    for index, (code, name, price) in enumerate(GOODS):
        quantity = 0 if index % 13 == 5 else rng.randint(5, 200)
        extra: dict[str, str | None] = {
            "goods_name": name,
            "goods_representation_id": code.rsplit("-", 1)[0],
            "goods_type_id": "0",
            "goods_merchandise_id": "0",
            "goods_supplier_id": str(1 + index % 3),
            "supplier_name": _SUPPLIERS[index % 3],
            "goods_jan_code": f"4900000{index:05d}{rng.randint(0, 9)}",
            "goods_selling_price": str(price),
            "goods_cost_price": str(price // 2),
            "goods_display_price": str(price),
            "goods_tax_rate": "10",
            "goods_stock_management_flag": "1",
            "goods_visible_flag": "1",
            "goods_deleted_flag": "0",
            "goods_location": f"A-{index // 10 + 1:02d}-{index % 10 + 1:02d}",
        }
        state.goods[state.goods_key(code)] = Goods(code, quantity, created, extra)


def _build_orders(state: World, rng: random.Random, fmt: _DateFmt, start_text: str) -> None:
    goods_list = list(state.goods.values())
    prices = {g.code: g.extra["goods_selling_price"] or "1000" for g in goods_list}
    names = {g.code: g.extra["goods_name"] for g in goods_list}
    pic_id, pic_name = state.user["pic_id"], state.user["pic_name"]
    rand = rng.random

    def randint(low: int, high: int) -> int:
        # much cheaper than Random.randint, still fully determined by the seed
        return low + int(rand() * (high - low + 1))

    for _ in range(state.config.seed_size):
        order_id = state.next_order_id()
        shop_id = randint(1, 4)
        status = _STATUSES[randint(0, len(_STATUSES) - 1)]
        cancelled = rand() < 0.07
        cancel_type = randint(1, 3) if cancelled else 0
        age = randint(3600, 30 * 86_400)
        created = fmt(-age)
        modified = min(fmt(-age + randint(60, min(age, 2 * 86_400))), start_text)
        who = randint(0, len(_NAMES) - 1)
        where = randint(0, len(_ADDRESSES) - 1)
        extra: dict[str, str | None] = {
            "receive_order_shop_cut_form_id": f"{_CUT_PREFIX[shop_id]}{order_id + 100000:08d}",
            "receive_order_date": created,
            "receive_order_import_date": created,
            "receive_order_import_type_id": "1" if status == 1 else "3",
            "receive_order_confirm_check_id": "2",
            "receive_order_important_check_id": "1",
            "receive_order_delivery_id": ("1", "2", "13", "30")[shop_id - 1],
            "receive_order_payment_method_id": str(randint(1, 4)),
            "receive_order_deposit_type_id": "2",
            "receive_order_customer_type_id": "0",
            "receive_order_purchaser_name": _NAMES[who],
            "receive_order_purchaser_kana": _KANAS[who],
            "receive_order_purchaser_zip_code": _ZIPS[where],
            "receive_order_purchaser_address1": _ADDRESSES[where],
            "receive_order_consignee_name": _NAMES[who],
            "receive_order_consignee_kana": _KANAS[who],
            "receive_order_consignee_zip_code": _ZIPS[where],
            "receive_order_consignee_address1": _ADDRESSES[where],
            "receive_order_deleted_flag": "0",
            "receive_order_creator_id": pic_id,
            "receive_order_creator_name": pic_name,
        }
        roll = rand()
        if roll < 0.25:
            extra["receive_order_gruoping_tag"] = TAG_TARGET
        elif roll < 0.31:
            extra["receive_order_gruoping_tag"] = "[ギフト]" + TAG_TARGET
        elif roll < 0.37:
            extra["receive_order_gruoping_tag"] = TAG_LOOKALIKE
        elif roll < 0.41:
            extra["receive_order_gruoping_tag"] = TAG_CONTAINS_NAME
        elif roll < 0.43:
            extra["receive_order_gruoping_tag"] = TAG_UNBRACKETED
        elif roll < 0.48:
            extra["receive_order_gruoping_tag"] = "[要確認]"
        if cancelled:
            extra["receive_order_cancel_date"] = modified
        future_print = status == 20 and rand() < 0.12
        extra["receive_order_statement_delivery_instruct_printing_date"] = (
            fmt(randint(1, 5) * 86_400) if future_print else ZERO_DATE
        )
        if status >= 40:
            extra["receive_order_statement_delivery_printing_date"] = modified
        if status == 50:
            extra["receive_order_send_date"] = modified
            extra["receive_order_delivery_cut_form_id"] = f"{randint(10**11, 10**12 - 1)}"
        elif rand() < 0.1:
            extra["receive_order_delivery_cut_form_id"] = ""
        order = Order(order_id, shop_id, status, cancel_type, created, modified, extra)
        order.stock_consumed = status == 50
        if rand() < 0.1:
            order.option = {
                "receive_order_option_noshi": "御祝",
                "receive_order_option_message": "お誕生日おめでとう",
            }
        total = 0
        for row_no in range(1, randint(1, 3) + 1):
            goods = goods_list[randint(0, len(goods_list) - 1)]
            code = goods.code
            variant = rand()
            if variant < 0.08:
                code = code.upper() if code.upper() != code else code.lower()
            elif variant < 0.11:
                code = f"NOT-IN-MASTER-{randint(1, 9)}"
            quantity = randint(1, 3)
            cancel_flag = 1 if rand() < 0.05 else 0
            price = prices.get(goods.code, "1000")
            row = Row(
                order,
                row_no,
                code,
                quantity,
                cancel_flag,
                {
                    "receive_order_row_goods_name": names.get(goods.code),
                    "receive_order_row_unit_price": price,
                    "receive_order_row_tax_rate": "10",
                    "receive_order_row_creation_date": created,
                    "receive_order_row_deleted_flag": "0",
                },
            )
            if not cancel_flag:
                total += int(price) * quantity
                target = state.find_goods(code)
                if target is not None and not cancelled and status != 50:
                    take = min(quantity, max(target.quantity - target.allocation, 0))
                    if take > 0:
                        target.allocation += take
                        row.allocation = take
                        row.extra["receive_order_row_stock_allocation_date"] = created
            order.rows.append(row)
        extra["receive_order_goods_amount"] = str(total)
        extra["receive_order_total_amount"] = str(total)
        state.index_order(order)
