"""The records of the Logikura sandbox world (in memory), named after the SPEC's schemas."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Warehouse:
    """拠点."""

    id: int
    code: str
    name: str
    updated_at: str


@dataclass
class Variant:
    """種類 (the SKU): ``product_code`` is 商品コード."""

    id: int
    product_id: int
    name: str
    product_code: str | None
    barcode: str | None
    sales_price: int
    purchase_price: int


@dataclass
class Inventory:
    """在庫 per warehouse × variant; its only lot (在庫詳細) has the same id."""

    id: int
    warehouse_id: int
    variant_id: int
    quantity: int
    will_pick: int
    updated_at: str

    @property
    def not_assigned(self) -> int:
        """Free stock (未割当数量)."""
        return self.quantity - self.will_pick


@dataclass
class Consignee:
    """出荷先."""

    id: int
    code: str | None
    name: str
    email: str | None = None
    phone_number: str | None = None
    postal_code: str | None = None
    address1: str | None = None
    address2: str | None = None
    description: str | None = None
    consignee_type: str = "customer"
    updated_at: str = ""


@dataclass
class Account:
    """外部連携アカウント."""

    id: int
    name: str
    uid: str
    shop_id: int | None
    external_service_name: str


@dataclass
class Link:
    """商品の外部サービス連携紐付け (紐付けコード)."""

    id: int
    account_id: int
    variant_id: int
    code: str


@dataclass
class ShipItem:
    """出荷予定商品 / 出荷履歴商品."""

    id: int
    variant_id: int
    quantity: int
    price: int
    note: str | None = None
    state: str = "idle"
    shipped: int | None = None
    allocated: int = 0
    packing: list[dict[str, int]] = field(default_factory=list)


@dataclass
class Shipment:
    """出荷予定 (``state`` idle/inspecting/shipping) that becomes 出荷履歴 (completed)."""

    id: int
    code: str
    state: str
    consignee_id: int
    sales_order: dict[str, Any] | None
    items: list[ShipItem]
    created_at: str
    tracking_number: str | None = None
    due_date: str | None = None
    description: str | None = None
    delivery_slip_note: str | None = None
    delivery_date: str | None = None
    picking_note: str | None = None
    delivery_method: dict[str, str] | None = None
    delivery_specification_time: str | None = None
    warehouse_id: int | None = None
    shipped_date: str | None = None


@dataclass
class ReceiptItem:
    """入荷履歴の商品."""

    id: int
    variant_id: int
    quantity: int
    price: float
    inventory_id: int


@dataclass
class Receipt:
    """入荷履歴 (booked directly)."""

    id: int
    warehouse_id: int
    received_date: str
    items: list[ReceiptItem]
    updated_at: str
    supplier_id: int | None = None
    shipping_slip_number: str | None = None
    tracking_number: str | None = None
    box_quantity: int | None = None
    description: str | None = None


@dataclass
class Token:
    """An access or refresh token of one grant (authorisation)."""

    value: str
    grant_id: int
    scope: str
    expires_at: float
    revoked: bool = False


@dataclass
class AuthCode:
    """An authorisation code (valid 10 minutes, once)."""

    value: str
    redirect_uri: str
    scope: str
    expires_at: float
    used: bool = False
