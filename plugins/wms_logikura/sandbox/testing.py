"""The people working in Logikura, played through the sandbox's own API.

:class:`WarehouseStaff` has an authorisation of its own (so its calls do not use nebridge's
rate-limit budget with ``rate_limit_key="grant"``) and does what staff do in Logikura's
screens: start and ship schedules with tracking numbers, book receipts, record shipments of
other channels. The demo and the tests use it; it is not nebridge's client.
"""

from __future__ import annotations

from typing import Any

import requests

Json = dict[str, Any]


class StaffError(Exception):
    """Logikura refused a staff action; ``status`` and ``body`` are its answer."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


class WarehouseStaff:
    """Calls the sandbox's API with a token issued through ``POST /_sandbox/tokens``."""

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self._sign_in()
        self._warehouses: dict[str, int] = {}
        self._variants: dict[str, int] = {}
        self._codes: dict[int, str] = {}

    def _sign_in(self) -> None:
        answer = self.session.post(
            f"{self.base_url}/_sandbox/tokens", json={}, timeout=self.timeout
        )
        answer.raise_for_status()
        self.session.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"

    def _request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One request; staff whose token ended (sandbox time moved on) sign in again."""
        answer = self.session.request(method, url, timeout=self.timeout, **kwargs)
        if answer.status_code == 401:
            self._sign_in()
            answer = self.session.request(method, url, timeout=self.timeout, **kwargs)
        return answer

    def close(self) -> None:
        """Close the HTTP session."""
        self.session.close()

    def call(
        self, method: str, path: str, body: Json | None = None, params: dict[str, str] | None = None
    ) -> Any:
        """One API call; returns the JSON answer, raises :class:`StaffError` on >= 400."""
        answer = self._request(method, f"{self.base_url}{path}", json=body, params=params)
        data = answer.json() if answer.content else None
        if answer.status_code >= 400:
            raise StaffError(answer.status_code, data)
        return data

    def get_all(self, path: str, key: str, params: dict[str, str] | None = None) -> list[Json]:
        """Every record of a list, following ``Link: rel="next"``."""
        url: str | None = f"{self.base_url}{path}"
        records: list[Json] = []
        while url is not None:
            answer = self._request("GET", url, params=params)
            if answer.status_code >= 400:
                raise StaffError(answer.status_code, answer.json())
            records.extend(answer.json()[key])
            url, params = answer.links.get("next", {}).get("url"), None
        return records

    def warehouse_id(self, code: str) -> int:
        """The id of the warehouse (拠点) with ``code``."""
        if not self._warehouses:
            self._warehouses = {
                w["code"]: int(w["id"]) for w in self.get_all("/api/v1/warehouses", "warehouses")
            }
        return self._warehouses[code]

    def variant_id(self, product_code: str) -> int:
        """The id of the product variant with ``product_code``."""
        if product_code not in self._variants:
            self._load_variants()
        return self._variants[product_code]

    def product_code(self, variant_id: int) -> str:
        """The 商品コード of the product variant ``variant_id``."""
        if variant_id not in self._codes:
            self._load_variants()
        return self._codes[variant_id]

    def _load_variants(self) -> None:
        records = self.get_all("/api/v1/product_variants", "product_variants")
        self._variants = {str(v["product_code"]): int(v["id"]) for v in records}
        self._codes = {vid: code for code, vid in self._variants.items()}

    def open_schedules(self) -> list[Json]:
        """Shipping schedules not yet shipped."""
        return self.get_all("/api/v1/shipping_schedules", "shipping_schedules")

    def set_tracking(self, schedule_id: int, tracking_number: str) -> Json:
        """Write the tracking number on a schedule (``ship`` takes no body)."""
        data: Json = self.call(
            "PUT",
            f"/api/v1/shipping_schedules/{schedule_id}",
            {"shipping_schedule": {"tracking_number": tracking_number}},
        )
        return data

    def start(self, schedule_id: int, warehouse: str) -> Json:
        """出荷作業開始 at ``warehouse``: allocates stock (StaffError 422 when short)."""
        data: Json = self.call(
            "PATCH",
            f"/api/v1/shipping_schedules/{schedule_id}/start",
            {"warehouse_id": self.warehouse_id(warehouse)},
        )
        return data

    def ship(self, schedule_id: int) -> Json:
        """出荷確定: the schedule becomes a shipping history; stock is deducted."""
        data: Json = self.call("PUT", f"/api/v1/shipping_schedules/{schedule_id}/ship")
        return data

    def consignee_id(self, code: str) -> int:
        """The id of the consignee with ``code``."""
        for consignee in self.get_all("/api/v1/consignees", "consignees"):
            if consignee["code"] == code:
                return int(consignee["id"])
        raise KeyError(f"no consignee {code!r}")

    def inventory_id(self, warehouse: str, product_code: str) -> int:
        """The inventory of ``product_code`` at ``warehouse``."""
        wid = self.warehouse_id(warehouse)
        for inventory in self.get_all(
            "/api/v1/inventories", "inventories", {"warehouse_id": str(wid)}
        ):
            if inventory["product_variant"]["product_code"] == product_code:
                return int(inventory["id"])
        raise KeyError(f"no inventory of {product_code!r} at {warehouse}")

    def ship_direct(
        self,
        warehouse: str,
        lines: list[tuple[str, int]],
        *,
        consignee: str = "W-001",
        order_number: str | None = None,
        tracking_number: str | None = None,
        shipped_date: str | None = None,
    ) -> Json:
        """A shipment without a schedule (wholesale, shops): ``POST /shipping_histories``."""
        items = [
            {
                "inventory_id": self.inventory_id(warehouse, code),
                "shipping_quantity": qty,
                "price": 0,
            }
            for code, qty in lines
        ]
        history: Json = {
            "shipping_items": items,
            "consignee_id": self.consignee_id(consignee),
            "warehouse_id": self.warehouse_id(warehouse),
            "tracking_number": tracking_number,
            "shipped_date": shipped_date,
        }
        data: Json = self.call(
            "POST",
            "/api/v1/shipping_histories",
            {"sales_order": {"order_number": order_number}, "shipping_history": history},
        )
        return data["shipping_history"]  # type: ignore[no-any-return]

    def receive(self, warehouse: str, lines: list[tuple[str, int]], *, received_date: str) -> Json:
        """A receipt booked directly: ``POST /receiving_histories``; stock goes up."""
        items = [
            {"product_variant_id": self.variant_id(code), "stocked_quantity": qty, "price": 100}
            for code, qty in lines
        ]
        data: Json = self.call(
            "POST",
            "/api/v1/receiving_histories",
            {
                "receiving_history": {
                    "receiving_items": items,
                    "warehouse_id": self.warehouse_id(warehouse),
                    "received_date": received_date,
                }
            },
        )
        return data["receiving_history"]  # type: ignore[no-any-return]

    def control(self, path: str, body: Json) -> Any:
        """A staff action the API does not offer, through ``/_sandbox/staff/…``."""
        answer = self._request("POST", f"{self.base_url}/_sandbox/staff/{path}", json=body)
        data = answer.json() if answer.content else None
        if answer.status_code >= 400:
            raise StaffError(answer.status_code, data)
        return data

    def renumber(self, schedule_id: int, order_number: str | None) -> Json:
        """Edit a schedule's 注文番号 (None blanks it)."""
        data: Json = self.control(
            "renumber", {"schedule_id": schedule_id, "order_number": order_number}
        )
        return data

    def ship_partial(self, schedule_id: int, shipped: dict[str, int]) -> Json:
        """Ship a started schedule with fewer items than planned (product code → shipped)."""
        data: Json = self.control("ship_partial", {"schedule_id": schedule_id, "shipped": shipped})
        return data

    def correct_tracking(self, history_id: int, tracking_number: str | None) -> Json:
        """Change the tracking number of a shipped history."""
        data: Json = self.control(
            "correct_tracking", {"history_id": history_id, "tracking_number": tracking_number}
        )
        return data

    def garble(self, kind: str, record_id: int, **fields: Any) -> Json:
        """Have the API show a history with ``fields`` replaced (malformed answers)."""
        data: Json = self.control("garble", {"kind": kind, "id": record_id, "fields": fields})
        return data

    def delete_schedule(self, schedule_id: int) -> None:
        """``DELETE /shipping_schedules/{id}`` (an idle schedule)."""
        self.call("DELETE", f"/api/v1/shipping_schedules/{schedule_id}")

    def delete_receipt(self, receipt_id: int) -> None:
        """``DELETE /receiving_histories/{id}``: the receipt is undone."""
        self.call("DELETE", f"/api/v1/receiving_histories/{receipt_id}")
