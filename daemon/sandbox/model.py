"""The records of the sandbox world: orders, rows, goods, upload queue rows, token pairs.

Hot fields that the sandbox's own rules read (ids, status, cancel type, quantities) are slots;
every other NE field lives in a sparse ``extra`` dict of NE strings, so a 100,000-order world
stays small. Values are NE strings; ``None`` is NE's null.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal


class Order:
    """One receive order (受注伝票) with its rows and options."""

    __slots__ = (
        "cancel_type_id",
        "creation_date",
        "extra",
        "id",
        "last_modified",
        "option",
        "rows",
        "shop_id",
        "status_id",
        "stock_consumed",
    )

    def __init__(
        self,
        order_id: int,
        shop_id: int,
        status_id: int,
        cancel_type_id: int,
        creation_date: str,
        last_modified: str,
        extra: dict[str, str | None],
    ) -> None:
        self.id = order_id
        self.shop_id = shop_id
        self.status_id = status_id
        self.cancel_type_id = cancel_type_id
        self.creation_date = creation_date
        self.last_modified = last_modified
        self.extra = extra
        self.rows: list[Row] = []
        self.option: dict[str, str | None] = {}
        self.stock_consumed = False


class Row:
    """One order row (受注明細); ``allocation`` is its stock allocation (引当数)."""

    __slots__ = ("allocation", "cancel_flag", "extra", "goods_id", "order", "quantity", "row_no")

    def __init__(
        self,
        order: Order,
        row_no: int,
        goods_id: str,
        quantity: int,
        cancel_flag: int,
        extra: dict[str, str | None],
    ) -> None:
        self.order = order
        self.row_no = row_no
        self.goods_id = goods_id
        self.quantity = quantity
        self.cancel_flag = cancel_flag
        self.allocation = 0
        self.extra = extra


class Goods:
    """One goods master record with its (basic 拠点) stock."""

    __slots__ = ("allocation", "code", "creation_date", "extra", "last_modified", "quantity")

    def __init__(
        self,
        code: str,
        quantity: int,
        creation_date: str,
        extra: dict[str, str | None],
    ) -> None:
        self.code = code
        self.quantity = quantity
        self.allocation = 0
        self.creation_date = creation_date
        self.last_modified: str | None = None
        self.extra = extra

    @property
    def free(self) -> int:
        """Free stock (フリー在庫数) = quantity - allocation."""
        return self.quantity - self.allocation


@dataclass
class Que:
    """One upload queue row (``api_v1_system_que``) and the upload it will apply."""

    que_id: int
    method_name: str
    upload_name: str
    client_file_name: str | None
    file_name: str
    creation_date: str
    created_at: datetime
    rows: list[dict[str, str]]
    call_no: int | None
    status_id: int = 0
    message: str | None = None
    last_modified: str | None = None
    parse_error: str | None = None
    inject_failure: bool = False
    row_errors: list[dict[str, Any]] = field(default_factory=list)


PairStatus = Literal["live", "rotated", "revoked"]


@dataclass
class TokenPair:
    """An access/refresh token pair with end dates; only ``live`` pairs are accepted."""

    pair_id: int
    access_token: str
    refresh_token: str
    access_end: datetime
    refresh_end: datetime
    status: PairStatus = "live"
