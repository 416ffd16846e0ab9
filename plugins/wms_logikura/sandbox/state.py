"""The Logikura sandbox world and Logikura's rules on it: OAuth grants, the product master,
inventories per warehouse, consignees, shipping schedules (``idle → shipping → completed``),
shipping and receiving histories.

All state lives in memory behind one re-entrant lock (:attr:`SandboxState.lock`); the HTTP
layer holds it around each API call, the Python helpers take it themselves. Every change is
written to the :class:`~.ledger.Ledger`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date
from typing import Any

from hooks.sandbox.world import SandboxWorld
from plugins.wms_logikura.sandbox.clock import Clock
from plugins.wms_logikura.sandbox.config import SandboxConfig
from plugins.wms_logikura.sandbox.errors import ApiError, Json, fail
from plugins.wms_logikura.sandbox.faults import Faults
from plugins.wms_logikura.sandbox.ledger import Ledger
from plugins.wms_logikura.sandbox.model import (
    Account,
    Consignee,
    Inventory,
    Link,
    Receipt,
    ReceiptItem,
    ShipItem,
    Shipment,
    Variant,
    Warehouse,
)
from plugins.wms_logikura.sandbox.oauth import OAuthRules
from plugins.wms_logikura.sandbox.seed import NE_SERVICE_NAME, build_world
from plugins.wms_logikura.sandbox.traffic import RateLimiter, RateVerdict, Traffic

OPEN_STATES = ("idle", "inspecting", "shipping")
SALES_ORDER_FIELDS = (
    "billing_address_id",
    "shop_id",
    "order_number",
    "order_date",
    "shipping_cost",
    "sales_commission",
    "other_cost",
    "point",
    "total_price",
    "gift_message",
    "gift_enabled",
    "external_service_code",
)
SCHEDULE_TEXT_FIELDS = (
    "tracking_number",
    "description",
    "delivery_slip_note",
    "picking_note",
    "delivery_specification_time",
)
CONSIGNEE_FIELDS = (
    "code",
    "name",
    "email",
    "phone_number",
    "postal_code",
    "address1",
    "address2",
    "description",
)


def _object(data: Any, name: str) -> Json:
    if not isinstance(data, dict):
        raise fail(422, f"param is missing or the value is empty: {name}")
    return data


def _int(data: Json, name: str, *, minimum: int | None = None, required: bool = True) -> int | None:
    value = data.get(name)
    if value is None:
        if required:
            raise fail(422, f"{name} を入力してください")
        return None
    if isinstance(value, bool):
        raise fail(422, f"{name} は整数で入力してください")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise fail(422, f"{name} は整数で入力してください") from None
    if number != value and str(number) != str(value).strip():
        raise fail(422, f"{name} は整数で入力してください")
    if minimum is not None and number < minimum:
        raise fail(422, f"{name} は{minimum}以上の値にしてください")
    return number


def _req_int(data: Json, name: str, minimum: int | None = None) -> int:
    value = _int(data, name, minimum=minimum)
    assert value is not None
    return value


def _date(value: Any, name: str) -> str | None:
    if value is None or value == "":
        return None
    try:
        return date.fromisoformat(str(value)).isoformat()
    except ValueError:
        raise fail(422, f"{name} は日付(YYYY-MM-DD)で入力してください") from None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


class SandboxState(SandboxWorld[SandboxConfig, Clock, Ledger, Faults], OAuthRules):
    """The in-memory Logikura account of one company, with Logikura's rules as methods (OAuth:
    :class:`~plugins.wms_logikura.sandbox.oauth.OAuthRules`)."""

    def __init__(self, config: SandboxConfig) -> None:
        super().__init__(config, Clock, Ledger(), Faults(config.faults))
        self.traffic = Traffic()
        self.limiter = RateLimiter(config.rate_limit_per_minute, 60.0, config.rate_limit_window)
        self.base_url = "http://127.0.0.1"  # links in answers before the server is bound
        self.warehouses: dict[int, Warehouse] = {}
        self.variants: dict[int, Variant] = {}
        self.inventories: dict[int, Inventory] = {}
        self.consignees: dict[int, Consignee] = {}
        self.accounts: dict[int, Account] = {}
        self.links: dict[int, Link] = {}
        self.shipments: dict[int, Shipment] = {}
        self.receipts: dict[int, Receipt] = {}
        self.overrides: dict[tuple[str, int], Json] = {}
        self._ids: dict[str, int] = defaultdict(int)
        self._source = "python"
        self._call_no: int | None = None
        self._start_oauth()
        build_world(self)

    # ---------------------------------------------------------------- plumbing
    def next_id(self, kind: str) -> int:
        """The next id of ``kind`` (1, 2, …); schedules and histories share ``shipment``."""
        self._ids[kind] += 1
        return self._ids[kind]

    @contextmanager
    def acting(self, source: str, call_no: int | None = None) -> Iterator[None]:
        """Hold the lock and attribute ledger entries to ``source`` (and an API call)."""
        with self.lock:
            previous = self._source, self._call_no
            self._source, self._call_no = source, call_no
            try:
                yield
            finally:
                self._source, self._call_no = previous

    def _log(self, kind: str, **data: Any) -> None:
        self.ledger.append(kind, self.clock.iso(), self._source, call_no=self._call_no, **data)

    def rate_check(self, key: str) -> RateVerdict:
        """Count one API request of ``key`` against the per-minute limit."""
        return self.limiter.check(key, self.clock.timestamp())

    # ---------------------------------------------------------------- rendering
    def warehouse_json(self, w: Warehouse) -> Json:
        """拠点 as the API shows it."""
        return {"id": w.id, "name": w.name, "code": w.code, "updated_at": w.updated_at}

    def link_json(self, link: Link) -> Json:
        """紐付け as the API shows it."""
        return {
            "id": link.id,
            "external_service_account_id": link.account_id,
            "product_variant_id": link.variant_id,
            "external_service_product_code": link.code,
        }

    def variant_json(self, v: Variant) -> Json:
        """種類 as the API shows it (links embedded with ``external_links="embedded"``)."""
        data: Json = {
            "id": v.id,
            "product_id": v.product_id,
            "name": v.name,
            "product_code": v.product_code,
            "barcode": v.barcode,
            "sales_price": f"{v.sales_price:.1f}",
            "purchase_price": f"{v.purchase_price:.1f}",
            "weight": None,
            "weight_unit": None,
            "image": None,
            "option1": None,
            "option2": None,
            "option3": None,
            "order_point": None,
            "sales_start_date": None,
        }
        if self.config.external_links == "embedded":
            data["external_service_product_variants"] = [
                self.link_json(link) for link in self.links.values() if link.variant_id == v.id
            ]
        return data

    def inventory_json(self, inv: Inventory) -> Json:
        """在庫 as the API shows it."""
        return {
            "id": inv.id,
            "warehouse_id": inv.warehouse_id,
            "product_variant": self.variant_json(self.variants[inv.variant_id]),
            "quantity": inv.quantity,
            "updated_at": inv.updated_at,
            "will_pick_quantity": inv.will_pick,
            "not_assigned_quantity": inv.not_assigned,
        }

    def consignee_json(self, c: Consignee) -> Json:
        """出荷先 as the API shows it."""
        return {
            "id": c.id,
            "code": c.code,
            "name": c.name,
            "email": c.email,
            "phone_number": c.phone_number,
            "postal_code": c.postal_code,
            "address1": c.address1,
            "address2": c.address2,
            "description": c.description,
            "updated_at": c.updated_at,
        }

    def shipment_json(self, s: Shipment) -> Json:
        """A schedule (open) or a history (completed) as the API shows it."""
        history = s.state == "completed"
        items = [
            {
                "id": i.id,
                "product_variant_id": i.variant_id,
                "sales_order_quantity": i.quantity,
                "shipping_quantity": i.shipped,
                "price": f"{i.price:.1f}",
                "note": i.note,
                "progress_state": i.state,
                "lot_code": None,
                "expiration_date": None,
                "packing_items": list(i.packing) if history else [],
            }
            for i in s.items
        ]
        data: Json = {
            "id": s.id,
            "code": s.code,
            "due_date": s.due_date,
            "tracking_number": s.tracking_number,
            "description": s.description,
            "delivery_slip_note": s.delivery_slip_note,
            "delivery_date": s.delivery_date,
            "picking_note": s.picking_note,
            "consignee_id": s.consignee_id,
            "sales_order": dict(s.sales_order) if s.sales_order is not None else None,
            "delivery_method": dict(s.delivery_method) if s.delivery_method else None,
            "shipping_items": items,
            "shipping_composite_items": [],
            "progress_state": s.state,
        }
        if history:
            data["shipped_date"] = s.shipped_date
        if self.config.history_warehouse_id:
            data["warehouse_id"] = s.warehouse_id
        data.update(self.overrides.get(("shipment", s.id), {}))
        return data

    def receipt_json(self, r: Receipt) -> Json:
        """入荷履歴 as the API shows it."""
        return {**self._receipt_fields(r), **self.overrides.get(("receipt", r.id), {})}

    def _receipt_fields(self, r: Receipt) -> Json:
        return {
            "id": r.id,
            "warehouse_id": r.warehouse_id,
            "supplier_id": r.supplier_id,
            "shipping_slip_number": r.shipping_slip_number,
            "tracking_number": r.tracking_number,
            "box_quantity": r.box_quantity,
            "due_date": None,
            "received_date": r.received_date,
            "description": r.description,
            "updated_at": r.updated_at,
            "progress_state": "completed",
            "receiving_items": [
                {
                    "id": i.id,
                    "receiving_schedule_id": r.id,
                    "product_variant_id": i.variant_id,
                    "inventory_id": i.inventory_id,
                    "price": i.price,
                    "purchase_order_quantity": i.quantity,
                    "stocked_quantity": i.quantity,
                    "received_date": r.received_date,
                    "progress_state": "completed",
                    "lot_code": None,
                    "expiration_date": None,
                }
                for i in r.items
            ],
        }

    # ---------------------------------------------------------------- lookups
    def warehouse_by_code(self, code: str) -> Warehouse:
        """The warehouse with ``code`` (KeyError if none)."""
        for w in self.warehouses.values():
            if w.code == code:
                return w
        raise KeyError(f"no warehouse {code!r}")

    def variant_by_code(self, product_code: str) -> Variant:
        """The variant with ``product_code`` (KeyError if none)."""
        for v in self.variants.values():
            if v.product_code == product_code:
                return v
        raise KeyError(f"no product variant {product_code!r}")

    @property
    def ne_account(self) -> Account:
        """The Next Engine external-service account of the seeded world."""
        return next(a for a in self.accounts.values() if a.external_service_name == NE_SERVICE_NAME)

    def _inventory(self, warehouse_id: int, variant_id: int, create: bool) -> Inventory | None:
        for inv in self.inventories.values():
            if inv.warehouse_id == warehouse_id and inv.variant_id == variant_id:
                return inv
        if not create:
            return None
        iid = self.next_id("inventory")
        inv = Inventory(iid, warehouse_id, variant_id, 0, 0, self.clock.iso())
        self.inventories[iid] = inv
        return inv

    def _warehouse_ref(self, value: Any, status: int = 422) -> Warehouse:
        try:
            warehouse = self.warehouses.get(int(value))
        except (TypeError, ValueError):
            warehouse = None
        if warehouse is None:
            raise fail(status, f"拠点が見つかりません: {value}")
        return warehouse

    def _consignee_ref(self, value: Any, status: int = 422) -> Consignee:
        try:
            consignee = self.consignees.get(int(value))
        except (TypeError, ValueError):
            consignee = None
        if consignee is None:
            raise fail(status, f"出荷先が見つかりません: {value}")
        return consignee

    def _shipment(self, sid: int, *, history: bool | None = None) -> Shipment:
        s = self.shipments.get(sid)
        if s is None or (history is not None and (s.state == "completed") != history):
            raise fail(404, "Not Found")
        return s

    def _move(
        self, inv: Inventory, delta: int, kind: str, record_id: int, order_number: str | None = None
    ) -> None:
        inv.quantity += delta
        inv.updated_at = self.clock.iso()
        self._log(
            kind,
            record_id=record_id,
            order_number=order_number,
            warehouse=self.warehouses[inv.warehouse_id].code,
            product_code=self.variants[inv.variant_id].product_code,
            delta=delta,
            detail={"quantity": inv.quantity, "will_pick": inv.will_pick},
        )

    # ---------------------------------------------------------------- product master
    def insert_variant(
        self,
        product_code: str,
        name: str,
        link_code: str | None,
        stock: Mapping[str, int],
        *,
        price: int = 1000,
    ) -> Variant:
        """Add a product with one variant, its NE link and stock per warehouse code."""
        with self.lock:
            pid = self.next_id("product")
            vid = self.next_id("variant")
            variant = Variant(vid, pid, name, product_code, None, price, price // 2)
            self.variants[vid] = variant
            if link_code is not None:
                lid = self.next_id("link")
                self.links[lid] = Link(lid, self.ne_account.id, vid, link_code)
            for code, quantity in stock.items():
                inv = self._inventory(self.warehouse_by_code(code).id, vid, True)
                assert inv is not None
                inv.quantity = quantity
            return variant

    def add_variant(
        self,
        product_code: str,
        *,
        name: str | None = None,
        link_code: str | None = None,
        stock: Mapping[str, int] | None = None,
    ) -> Json:
        """Python helper: a new variant (optionally linked to Next Engine) with stock."""
        with self.acting("python"):
            variant = self.insert_variant(
                product_code, name or product_code, link_code, stock or {}
            )
            self._log("variant.create", record_id=variant.id, product_code=product_code)
            return self.variant_json(variant)

    def stock(self, warehouse_code: str, product_code: str) -> Json:
        """Python helper: ``{quantity, will_pick, not_assigned}`` of one inventory."""
        with self.lock:
            inv = self._inventory(
                self.warehouse_by_code(warehouse_code).id,
                self.variant_by_code(product_code).id,
                False,
            )
            if inv is None:
                return {"quantity": 0, "will_pick": 0, "not_assigned": 0}
            return {
                "quantity": inv.quantity,
                "will_pick": inv.will_pick,
                "not_assigned": inv.not_assigned,
            }

    def schedules_for(self, order_number: str) -> list[Json]:
        """Python helper: every schedule/history whose ``sales_order.order_number`` matches."""
        with self.lock:
            return [
                self.shipment_json(s)
                for s in self.shipments.values()
                if (s.sales_order or {}).get("order_number") == order_number
            ]

    def list_warehouses(self) -> list[Json]:
        """``GET /api/v1/warehouses``."""
        return [self.warehouse_json(w) for w in self.warehouses.values()]

    def list_variants(self) -> list[Json]:
        """``GET /api/v1/product_variants``."""
        return [self.variant_json(v) for v in self.variants.values()]

    def get_variant(self, vid: int) -> Json:
        """``GET /api/v1/product_variants/{id}`` (the bare variant, as the SPEC says)."""
        variant = self.variants.get(vid)
        if variant is None:
            raise fail(404, "Not Found")
        return self.variant_json(variant)

    def list_accounts(self) -> list[Json]:
        """``GET /api/v1/external_service_accounts``."""
        return [
            {
                "id": a.id,
                "name": a.name,
                "uid": a.uid,
                "shop_id": a.shop_id,
                "external_service_name": a.external_service_name,
            }
            for a in self.accounts.values()
        ]

    def list_links(self) -> list[Json]:
        """``GET /api/v1/external_service_product_variants`` (guessed; 404 unless ``list``)."""
        if self.config.external_links != "list":
            raise fail(404, "Not Found")
        return [self.link_json(link) for link in self.links.values()]

    def create_link(self, body: Json) -> Json:
        """``POST /api/v1/external_service_product_variants``."""
        account = _req_int(body, "external_service_account_id")
        variant = _req_int(body, "product_variant_id")
        code = body.get("external_service_product_code")
        if account not in self.accounts or variant not in self.variants:
            raise fail(422, "外部連携アカウントまたは種類が存在しません")
        if not isinstance(code, str) or not code:
            raise fail(422, "external_service_product_code を入力してください")
        if any(
            link.account_id == account and link.variant_id == variant
            for link in self.links.values()
        ):
            raise fail(422, "この種類はすでに紐付けられています")
        lid = self.next_id("link")
        self.links[lid] = link = Link(lid, account, variant, code)
        self._log(
            "link.create",
            record_id=lid,
            product_code=self.variants[variant].product_code,
            detail={"code": code},
        )
        return {"external_service_product_variant": self.link_json(link)}

    def update_link(self, lid: int, body: Json) -> Json:
        """``PUT /api/v1/external_service_product_variants/{id}``."""
        link = self.links.get(lid)
        if link is None:
            raise fail(404, "Not Found")
        code = body.get("external_service_product_code")
        if not isinstance(code, str) or not code:
            raise fail(422, "external_service_product_code を入力してください")
        link.code = code
        self._log("link.update", record_id=lid, detail={"code": code})
        return {"external_service_product_variant": self.link_json(link)}

    def delete_link(self, lid: int) -> None:
        """``DELETE /api/v1/external_service_product_variants/{id}``."""
        if self.links.pop(lid, None) is None:
            raise fail(404, "Not Found")
        self._log("link.delete", record_id=lid)

    # ---------------------------------------------------------------- stock
    def list_inventories(self, warehouse_id: str | None) -> list[Json]:
        """``GET /api/v1/inventories[?warehouse_id=]``."""
        wanted = None if not warehouse_id else self._warehouse_ref(warehouse_id).id
        return [
            self.inventory_json(inv)
            for inv in self.inventories.values()
            if wanted is None or inv.warehouse_id == wanted
        ]

    def get_stock(self, sid: int) -> Json:
        """``GET /api/v1/stocks/{id}`` (one lot per inventory: the same id)."""
        inv = self.inventories.get(sid)
        if inv is None:
            raise fail(404, "Not Found")
        return {
            "stock": {
                "id": inv.id,
                "inventory_id": inv.id,
                "lot_code": None,
                "expiration_date": None,
                "quantity": inv.quantity,
            }
        }

    # ---------------------------------------------------------------- consignees
    def list_consignees(self) -> list[Json]:
        """``GET /api/v1/consignees``."""
        return [self.consignee_json(c) for c in self.consignees.values()]

    def create_consignee(self, body: Json) -> Json:
        """``POST /api/v1/consignees`` (a taken code is refused with
        ``consignee_code_unique``)."""
        data = _object(body.get("consignee"), "consignee")
        name = data.get("name")
        if not isinstance(name, str) or not name.strip():
            raise fail(422, "名称を入力してください")
        code = _text(data.get("code"))
        if (
            code
            and self.config.consignee_code_unique
            and any(c.code == code for c in self.consignees.values())
        ):
            raise fail(422, f"コードはすでに存在します: {code}")
        kind = data.get("consignee_type") or "customer"
        if kind not in ("wholesaler", "customer"):
            raise fail(422, "consignee_type は wholesaler か customer です")
        cid = self.next_id("consignee")
        consignee = Consignee(
            cid,
            code,
            name,
            consignee_type=str(kind),
            updated_at=self.clock.iso(),
            **{f: _text(data.get(f)) for f in CONSIGNEE_FIELDS[2:]},
        )
        self.consignees[cid] = consignee
        self._log("consignee.create", record_id=cid, detail={"code": code})
        return {"consignee": self.consignee_json(consignee)}

    def update_consignee(self, cid: int, body: Json) -> Json:
        """``PUT /api/v1/consignees/{id}``."""
        consignee = self._consignee_ref(cid, 404)
        data = _object(body.get("consignee"), "consignee")
        for name in CONSIGNEE_FIELDS:
            if name in data:
                setattr(consignee, name, _text(data[name]))
        consignee.updated_at = self.clock.iso()
        self._log("consignee.update", record_id=cid)
        return {"consignee": self.consignee_json(consignee)}

    # ---------------------------------------------------------------- shipping schedules
    def list_schedules(self) -> list[Json]:
        """``GET /api/v1/shipping_schedules``: open schedules (idle, inspecting, shipping)."""
        return [self.shipment_json(s) for s in self.shipments.values() if s.state in OPEN_STATES]

    def get_schedule(self, sid: int) -> Json:
        """``GET /api/v1/shipping_schedules/{id}`` (completed ones too)."""
        return {"shipping_schedule": self.shipment_json(self._shipment(sid))}

    def _sales_order(self, data: Any) -> Json | None:
        if data is None:
            return None
        order = _object(data, "sales_order")
        out: Json = {name: order.get(name) for name in SALES_ORDER_FIELDS}
        out["order_number"] = _text(out["order_number"])
        out["order_date"] = _date(out["order_date"], "order_date")
        out["gift_enabled"] = bool(out["gift_enabled"])
        out["external_service_account"] = None
        return out

    def _delivery_method(self, code: Any) -> dict[str, str] | None:
        if code is None or code == "":
            return None
        name = self.config.delivery_methods.get(str(code))
        if name is None:
            if self.config.reject_unknown_delivery_method:
                raise fail(422, f"配送方法コードが正しくありません: {code}")
            name = str(code)
        return {"code": str(code), "name": name}

    def _ship_items(self, items: Any, composite: Any) -> list[ShipItem]:
        if not isinstance(items, list) or not isinstance(composite, list):
            raise fail(422, "shipping_items と shipping_composite_items を入力してください")
        if composite:
            raise fail(422, "セット品(shipping_composite_items)はサンドボックスでは扱えません")
        if not items:
            raise fail(422, "出荷商品を1つ以上入力してください")
        out = []
        for raw in items:
            item = _object(raw, "shipping_items[]")
            vid = _req_int(item, "product_variant_id")
            if vid not in self.variants:
                raise fail(422, f"種類が見つかりません: {vid}")
            out.append(
                ShipItem(
                    self.next_id("shipping_item"),
                    vid,
                    _req_int(item, "sales_order_quantity", 1),
                    _req_int(item, "price", 0),
                    _text(item.get("note")),
                )
            )
        return out

    def create_schedule(self, body: Json) -> Json:
        """``POST /api/v1/shipping_schedules``: a new schedule in state ``idle``."""
        data = _object(body.get("shipping_schedule"), "shipping_schedule")
        sales_order = self._sales_order(body.get("sales_order"))
        consignee = self._consignee_ref(data.get("consignee_id"))
        order_number = (sales_order or {}).get("order_number")
        if (
            order_number
            and self.config.duplicate_order_number == "reject"
            and any(
                (s.sales_order or {}).get("order_number") == order_number
                for s in self.shipments.values()
            )
        ):
            raise fail(422, f"注文番号はすでに登録されています: {order_number}")
        method = self._delivery_method(data.get("delivery_method_code"))
        items = self._ship_items(data.get("shipping_items"), data.get("shipping_composite_items"))
        sid = self.next_id("shipment")
        schedule = Shipment(
            sid,
            f"SH{self.clock.today():%Y%m%d}{sid:05d}",
            "idle",
            consignee.id,
            sales_order,
            items,
            self.clock.iso(),
            due_date=_date(data.get("due_date"), "due_date"),
            delivery_date=_date(data.get("delivery_date"), "delivery_date"),
            delivery_method=method,
            tracking_number=_text(data.get("tracking_number")),
            description=_text(data.get("description")),
            delivery_slip_note=_text(data.get("delivery_slip_note")),
            picking_note=_text(data.get("picking_note")),
            delivery_specification_time=_text(data.get("delivery_specification_time")),
        )
        self.shipments[sid] = schedule
        self._log("schedule.create", record_id=sid, order_number=order_number)
        return {"shipping_schedule": self.shipment_json(schedule)}

    def update_schedule(self, sid: int, body: Json) -> Json:
        """``PUT /api/v1/shipping_schedules/{id}``: fields of an open schedule (items only
        while idle). Partial bodies are accepted."""
        schedule = self._shipment(sid)
        if schedule.state == "completed":
            raise fail(422, "出荷済みの出荷予定は更新できません")
        data = _object(body.get("shipping_schedule"), "shipping_schedule")
        if "sales_order" in body:
            schedule.sales_order = self._sales_order(body["sales_order"])
        if "consignee_id" in data:
            schedule.consignee_id = self._consignee_ref(data["consignee_id"]).id
        if "delivery_method_code" in data:
            schedule.delivery_method = self._delivery_method(data["delivery_method_code"])
        for name in SCHEDULE_TEXT_FIELDS:
            if name in data:
                setattr(schedule, name, _text(data[name]))
        for name in ("due_date", "delivery_date"):
            if name in data:
                setattr(schedule, name, _date(data[name], name))
        if "shipping_items" in data:
            if schedule.state != "idle":
                raise fail(422, "出荷作業中の出荷予定の商品は変更できません")
            schedule.items = self._ship_items(
                data["shipping_items"], data.get("shipping_composite_items", [])
            )
        self._log(
            "schedule.update",
            record_id=sid,
            order_number=(schedule.sales_order or {}).get("order_number"),
            detail={"fields": sorted(data)},
        )
        return {"shipping_schedule": self.shipment_json(schedule)}

    def delete_schedule(self, sid: int) -> None:
        """``DELETE /api/v1/shipping_schedules/{id}``: only an idle, unallocated schedule."""
        schedule = self._shipment(sid, history=False)
        if schedule.state != "idle" or any(i.allocated for i in schedule.items):
            raise fail(422, "出荷作業中(引当済み)の出荷予定は削除できません")
        del self.shipments[sid]
        self._log(
            "schedule.delete",
            record_id=sid,
            order_number=(schedule.sales_order or {}).get("order_number"),
        )

    def start_schedule(self, sid: int, body: Json) -> Json:
        """``PATCH …/{id}/start``: allocate free stock at ``warehouse_id`` and move to
        ``shipping``; 422 ``{shipping_item_ids, errors}`` lists the items that are short."""
        schedule = self._shipment(sid)
        if schedule.state == "completed":
            raise fail(422, "出荷済みです")
        if schedule.state != "idle":
            raise fail(422, "出荷作業はすでに開始されています")
        warehouse = self._warehouse_ref(body.get("warehouse_id"))
        if schedule.warehouse_id not in (None, warehouse.id):
            raise fail(422, "別の拠点で一部引当済みです")
        order_number = (schedule.sales_order or {}).get("order_number")
        pending = [i for i in schedule.items if i.allocated < i.quantity]
        need: dict[int, int] = defaultdict(int)
        for item in pending:
            need[item.variant_id] += item.quantity
        short_variants = set()
        for vid, quantity in need.items():
            inv = self._inventory(warehouse.id, vid, False)
            if inv is None or inv.not_assigned < quantity:
                short_variants.add(vid)
        short = [i.id for i in pending if i.variant_id in short_variants]
        if short and self.config.allocation_all_or_nothing:
            self._log(
                "schedule.allocation_failed",
                record_id=sid,
                order_number=order_number,
                warehouse=warehouse.code,
                detail={"shipping_item_ids": short},
            )
            raise ApiError(
                422,
                {
                    "shipping_item_ids": short,
                    "errors": ["在庫が不足しているため引当できない商品があります"],
                },
            )
        schedule.warehouse_id = warehouse.id
        for item in pending:
            if item.variant_id in short_variants:
                continue
            inv = self._inventory(warehouse.id, item.variant_id, False)
            assert inv is not None
            inv.will_pick += item.quantity
            item.allocated, item.state = item.quantity, "shipping"
            self._log(
                "stock.allocate",
                record_id=sid,
                order_number=order_number,
                warehouse=warehouse.code,
                product_code=self.variants[item.variant_id].product_code,
                delta=0,
                detail={"allocated": item.quantity, "will_pick": inv.will_pick},
            )
        if short:
            raise ApiError(
                422,
                {
                    "shipping_item_ids": short,
                    "errors": ["在庫が不足しているため引当できない商品があります"],
                },
            )
        schedule.state = "shipping"
        self._log(
            "schedule.start", record_id=sid, order_number=order_number, warehouse=warehouse.code
        )
        return {"shipping_schedule": self.shipment_json(schedule)}

    def ship_schedule(self, sid: int, shipped: Mapping[int, int] | None = None) -> Json:
        """``PUT …/{id}/ship``: complete a started schedule; its stock is deducted for good.

        ``shipped`` (staff in the screen, not the API) gives the quantity actually shipped per
        variant id where less than planned left: a partial shipment."""
        schedule = self._shipment(sid)
        if schedule.state == "completed":
            raise fail(422, "すでに出荷済みです")
        if schedule.state != "shipping" or schedule.warehouse_id is None:
            raise fail(422, "出荷作業を開始してから出荷を確定してください")
        order_number = (schedule.sales_order or {}).get("order_number")
        for item in schedule.items:
            inv = self._inventory(schedule.warehouse_id, item.variant_id, False)
            assert inv is not None
            inv.will_pick -= item.allocated
            quantity = min(item.quantity, (shipped or {}).get(item.variant_id, item.quantity))
            if quantity < 0:
                raise fail(422, "出荷数は0以上で入力してください")
            self._move(inv, -quantity, "stock.ship", sid, order_number)
            item.shipped, item.state = quantity, "completed"
            item.packing = [
                {
                    "id": self.next_id("packing_item"),
                    "packed_quantity": quantity,
                    "stock_id": inv.id,
                }
            ]
        schedule.state, schedule.shipped_date = "completed", self.clock.today().isoformat()
        self._log(
            "schedule.ship",
            record_id=sid,
            order_number=order_number,
            warehouse=self.warehouses[schedule.warehouse_id].code,
            detail={"tracking_number": schedule.tracking_number},
        )
        return {"shipping_schedule": self.shipment_json(schedule)}

    # ---------------------------------------------------------------- histories
    @staticmethod
    def _in_window(day: str | None, first: str | None, last: str | None) -> bool:
        return day is not None and (first is None or day >= first) and (last is None or day <= last)

    def list_shipping_histories(self, first: str | None, last: str | None) -> list[Json]:
        """``GET /api/v1/shipping_histories?shipped_date_from=&shipped_date_to=``."""
        first, last = _date(first, "shipped_date_from"), _date(last, "shipped_date_to")
        return [
            self.shipment_json(s)
            for s in self.shipments.values()
            if s.state == "completed" and self._in_window(s.shipped_date, first, last)
        ]

    def get_shipping_history(self, sid: int) -> Json:
        """``GET /api/v1/shipping_histories/{id}``."""
        return {"shipping_history": self.shipment_json(self._shipment(sid, history=True))}

    def create_shipping_history(self, body: Json) -> Json:
        """``POST /api/v1/shipping_histories``: a shipment without a schedule (wholesale,
        shops), deducted from the given inventories at once."""
        data = _object(body.get("shipping_history"), "shipping_history")
        sales_order = self._sales_order(body.get("sales_order"))
        warehouse = self._warehouse_ref(data.get("warehouse_id"), 404)
        consignee = self._consignee_ref(data.get("consignee_id"), 404)
        raw_items = data.get("shipping_items")
        if not isinstance(raw_items, list) or not raw_items:
            raise fail(422, "出荷商品を1つ以上入力してください")
        lines: list[tuple[Inventory, int, int]] = []
        need: dict[int, int] = defaultdict(int)
        for raw in raw_items:
            item = _object(raw, "shipping_items[]")
            ref = _req_int(item, "inventory_id")
            quantity = _req_int(item, "shipping_quantity", 1)
            if self.config.history_item_inventory_id == "product_variant":
                inv = self._inventory(warehouse.id, ref, True) if ref in self.variants else None
            else:
                inv = self.inventories.get(ref)
            if inv is None or inv.warehouse_id != warehouse.id:
                raise fail(422, f"この拠点の在庫が見つかりません: {ref}")
            need[inv.id] += quantity
            lines.append((inv, quantity, _req_int(item, "price", 0)))
        if not self.config.direct_shipment_allows_negative:
            for iid, quantity in need.items():
                if self.inventories[iid].not_assigned < quantity:
                    raise fail(422, "在庫が不足しています")
        sid = self.next_id("shipment")
        order_number = (sales_order or {}).get("order_number")
        shipped = _date(data.get("shipped_date"), "shipped_date") or self.clock.today().isoformat()
        items = []
        for inv, quantity, price in lines:
            self._move(inv, -quantity, "stock.ship", sid, order_number)
            items.append(
                ShipItem(
                    self.next_id("shipping_item"),
                    inv.variant_id,
                    quantity,
                    price,
                    state="completed",
                    shipped=quantity,
                    packing=[
                        {
                            "id": self.next_id("packing_item"),
                            "packed_quantity": quantity,
                            "stock_id": inv.id,
                        }
                    ],
                )
            )
        history = Shipment(
            sid,
            f"SH{self.clock.today():%Y%m%d}{sid:05d}",
            "completed",
            consignee.id,
            sales_order,
            items,
            self.clock.iso(),
            tracking_number=_text(data.get("tracking_number")),
            description=_text(data.get("description")),
            warehouse_id=warehouse.id,
            shipped_date=shipped,
        )
        self.shipments[sid] = history
        self._log(
            "history.create", record_id=sid, order_number=order_number, warehouse=warehouse.code
        )
        return {"shipping_history": self.shipment_json(history)}

    def list_receiving_histories(self, first: str | None, last: str | None) -> list[Json]:
        """``GET /api/v1/receiving_histories?received_date_from=&received_date_to=``."""
        first, last = _date(first, "received_date_from"), _date(last, "received_date_to")
        return [
            self.receipt_json(r)
            for r in self.receipts.values()
            if self._in_window(r.received_date, first, last)
        ]

    def get_receiving_history(self, rid: int) -> Json:
        """``GET /api/v1/receiving_histories/{id}``."""
        receipt = self.receipts.get(rid)
        if receipt is None:
            raise fail(404, "Not Found")
        return {"receiving_history": self.receipt_json(receipt)}

    def create_receiving_history(self, body: Json) -> Json:
        """``POST /api/v1/receiving_histories``: a receipt booked directly; stock goes up."""
        data = _object(body.get("receiving_history"), "receiving_history")
        warehouse = self._warehouse_ref(data.get("warehouse_id"))
        received = _date(data.get("received_date"), "received_date")
        if received is None:
            raise fail(422, "received_date を入力してください")
        raw_items = data.get("receiving_items")
        if not isinstance(raw_items, list) or not raw_items:
            raise fail(422, "入荷商品を1つ以上入力してください")
        parsed = []
        for raw in raw_items:
            item = _object(raw, "receiving_items[]")
            vid = _req_int(item, "product_variant_id")
            if vid not in self.variants:
                raise fail(422, f"種類が見つかりません: {vid}")
            price = item.get("price")
            if not isinstance(price, int | float) or isinstance(price, bool):
                raise fail(422, "price を入力してください")
            parsed.append((vid, _req_int(item, "stocked_quantity", 1), float(price)))
        rid = self.next_id("receipt")
        items = []
        for vid, quantity, price in parsed:
            inv = self._inventory(warehouse.id, vid, True)
            assert inv is not None
            self._move(inv, quantity, "stock.receive", rid)
            items.append(ReceiptItem(self.next_id("receiving_item"), vid, quantity, price, inv.id))
        receipt = Receipt(
            rid,
            warehouse.id,
            received,
            items,
            self.clock.iso(),
            supplier_id=_int(data, "supplier_id", required=False),
            description=_text(data.get("description")),
        )
        self.receipts[rid] = receipt
        self._log("receipt.create", record_id=rid, warehouse=warehouse.code)
        return {"receiving_history": self.receipt_json(receipt)}

    def delete_receiving_history(self, rid: int) -> None:
        """``DELETE /api/v1/receiving_histories/{id}``: the receipt is undone; stock goes down."""
        receipt = self.receipts.get(rid)
        if receipt is None:
            raise fail(404, "Not Found")
        for item in receipt.items:
            self._move(self.inventories[item.inventory_id], -item.quantity, "stock.unreceive", rid)
        del self.receipts[rid]
        self._log(
            "receipt.delete", record_id=rid, warehouse=self.warehouses[receipt.warehouse_id].code
        )

    # ---------------------------------------------------------------- staff in the screens
    def renumber_schedule(self, sid: int, order_number: str | None) -> Json:
        """Staff edit the order number (注文番号) of a schedule; None blanks it."""
        with self.acting("control"):
            schedule = self._shipment(sid)
            schedule.sales_order = {**(schedule.sales_order or {}), "order_number": order_number}
            self._log("schedule.renumber", record_id=sid, order_number=order_number)
            return self.shipment_json(schedule)

    def ship_partial(self, sid: int, shipped: Mapping[str, int]) -> Json:
        """Staff ship a started schedule with fewer items than planned (product code →
        quantity shipped; products not named ship in full)."""
        with self.acting("control"):
            by_variant = {self.variant_by_code(code).id: int(q) for code, q in shipped.items()}
            return self.ship_schedule(sid, by_variant)

    def correct_tracking(self, sid: int, tracking_number: str | None) -> Json:
        """Staff correct the tracking number of a shipped history (Logikura's screen allows
        it; the API does not)."""
        with self.acting("control"):
            history = self._shipment(sid, history=True)
            old, history.tracking_number = history.tracking_number, tracking_number
            self._log(
                "history.tracking",
                record_id=sid,
                order_number=(history.sales_order or {}).get("order_number"),
                detail={"from": old, "to": tracking_number},
            )
            return self.shipment_json(history)

    def garble(self, kind: str, record_id: int, fields: Mapping[str, Any]) -> Json:
        """Make the API show a history (``shipment`` or ``receipt``) with ``fields`` replaced
        as given — malformed answers for tests; ``{}`` restores it."""
        with self.acting("control"):
            if kind == "shipment":
                self._shipment(record_id)
            elif kind == "receipt":
                if record_id not in self.receipts:
                    raise fail(404, "Not Found")
            else:
                raise ValueError("kind must be shipment or receipt")
            if fields:
                self.overrides[(kind, record_id)] = dict(fields)
            else:
                self.overrides.pop((kind, record_id), None)
            self._log("record.garble", record_id=record_id, detail={"fields": sorted(fields)})
            return {"kind": kind, "id": record_id, "fields": dict(fields)}
