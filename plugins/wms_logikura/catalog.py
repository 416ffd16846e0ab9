"""What the connector knows of the Logikura account: warehouses (拠点) and the product master.

* Warehouses: each configured nebridge warehouse code is matched to the Logikura 拠点 with
  the same code (or ``wms.logikura.warehouse_codes``); a code Logikura does not have is a
  configuration error that names the codes it has.
* Products: ``/api/v1/product_variants`` gives each variant's 商品コード (the WMS product
  code; ``LK-<id>`` when empty); the 紐付けコード (link code) comes from the variant's
  external-service link of the Next Engine account, read from
  ``/api/v1/external_service_product_variants`` or, where Logikura does not list them, from
  the links embedded in each variant (see ``link_codes``).

Both are cached in the connector's SQLite file with the time they were read, and read again
after ``products_refresh_seconds`` or when something unknown turns up.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hooks.connectors import ConnectorContext
from hooks.records import Problem, ProductLink, WarehouseInfo
from plugins.wms_logikura.client import Json, LogikuraClient
from plugins.wms_logikura.config import LogikuraConfig
from plugins.wms_logikura.errors import LogikuraConfigError, LogikuraRefused
from plugins.wms_logikura.store import LocalStore

CATALOG_KEY = "catalog"
NE_SERVICE_NAMES = ("ネクストエンジン", "next engine", "nextengine")
_Log = logging.Logger | logging.LoggerAdapter[logging.Logger]


@dataclass(frozen=True, slots=True)
class Variant:
    """A Logikura product variant as nebridge uses it."""

    id: int
    product_code: str
    link_code: str | None


@dataclass
class Catalog:
    """One reading of the account's warehouses and product master."""

    fetched_at: float
    warehouses: dict[str, int]
    variants: list[Variant]
    version: str = ""
    by_id: dict[int, Variant] = field(init=False, repr=False)
    by_code: dict[str, Variant] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.by_id = {v.id: v for v in self.variants}
        self.by_code = {v.product_code: v for v in self.variants}
        if not self.version:
            digest = hashlib.sha256(
                json.dumps(
                    sorted((v.id, v.product_code, v.link_code or "") for v in self.variants),
                    ensure_ascii=False,
                ).encode("utf-8")
            ).hexdigest()
            self.version = f"logikura:{digest[:24]}"

    def products(self) -> list[ProductLink]:
        """The product master as the engine stores it."""
        return [ProductLink(v.product_code, v.link_code) for v in self.variants]

    def to_json(self) -> dict[str, Any]:
        """Cache form."""
        return {
            "fetched_at": self.fetched_at,
            "warehouses": self.warehouses,
            "version": self.version,
            "variants": [[v.id, v.product_code, v.link_code] for v in self.variants],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Catalog:
        """Inverse of :meth:`to_json`."""
        return cls(
            float(data["fetched_at"]),
            {str(k): int(v) for k, v in data["warehouses"].items()},
            [
                Variant(int(i), str(c), None if link is None else str(link))
                for i, c, link in data["variants"]
            ],
            str(data["version"]),
        )


class CatalogCache:
    """Reads the catalog from Logikura when the cached one is too old (or forced)."""

    def __init__(
        self, config: LogikuraConfig, store: LocalStore, clock: Callable[[], float], log: _Log
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.log = log

    def cached(self) -> Catalog | None:
        """The cached catalog, however old."""
        data = self.store.get_json(CATALOG_KEY)
        try:
            return Catalog.from_json(data) if data else None
        except (KeyError, TypeError, ValueError):
            return None

    def get(self, client: LogikuraClient, *, force: bool = False) -> Catalog:
        """A catalog no older than ``products_refresh_seconds`` (a fresh one if ``force``)."""
        catalog = self.cached()
        fresh = (
            catalog is not None
            and self.clock() - catalog.fetched_at < self.config.products_refresh_seconds
        )
        if catalog is not None and fresh and not force:
            return catalog
        catalog = self.fetch(client)
        self.store.put_json(CATALOG_KEY, catalog.to_json())
        return catalog

    def fetch(self, client: LogikuraClient) -> Catalog:
        """Read warehouses, variants and links from Logikura now."""
        warehouses: dict[str, int] = {}
        for record in client.get_all("/api/v1/warehouses", "warehouses"):
            if record.get("code"):
                warehouses[str(record["code"])] = int(record["id"])
        raw = list(client.get_all("/api/v1/product_variants", "product_variants"))
        links = self._links(client, raw)
        variants: list[Variant] = []
        seen: set[str] = set()
        for record in sorted(raw, key=lambda r: int(r["id"])):
            vid = int(record["id"])
            code = str(record.get("product_code") or "").strip() or f"LK-{vid}"
            if code in seen:
                self.log.warning(
                    "Logikura product code %s is used by more than one variant; "
                    "variant %d is known as %s#%d",
                    code,
                    vid,
                    code,
                    vid,
                )
                code = f"{code}#{vid}"
            seen.add(code)
            variants.append(Variant(vid, code, self._link_code(code, links, vid)))
        catalog = Catalog(self.clock(), warehouses, variants)
        self.log.info(
            "Logikura catalog read: %d warehouse(s), %d product variant(s), %d with a link code",
            len(warehouses),
            len(variants),
            sum(1 for v in variants if v.link_code),
        )
        return catalog

    def _link_code(self, product_code: str, links: dict[int, str] | None, vid: int) -> str | None:
        mode = self.config.link_codes
        if mode == "product_code":
            return product_code
        linked = (links or {}).get(vid)
        if mode == "link":
            return linked
        return linked or product_code

    def _links(self, client: LogikuraClient, variants: list[Json]) -> dict[int, str] | None:
        """Variant id → 紐付けコード of the Next Engine account (None: not readable)."""
        if self.config.link_codes == "product_code":
            return None
        account = self._account(client)
        if account is None:
            return {}
        try:
            records: Iterable[Json] = list(
                client.get_all(
                    "/api/v1/external_service_product_variants", "external_service_product_variants"
                )
            )
        except LogikuraRefused as exc:
            if exc.status != 404:
                raise
            records = [
                link for v in variants for link in v.get("external_service_product_variants") or []
            ]
            if not any("external_service_product_variants" in v for v in variants):
                return self._unreadable()
        return {
            int(r["product_variant_id"]): str(r["external_service_product_code"])
            for r in records
            if int(r.get("external_service_account_id") or 0) == account
            and r.get("external_service_product_code")
        }

    def _unreadable(self) -> dict[int, str] | None:
        if self.config.link_codes == "link":
            raise LogikuraConfigError(
                "Logikura does not let nebridge read the 紐付けコード links; set "
                "wms.logikura.link_codes: product_code (or link_or_product_code)"
            )
        self.log.warning(
            "Logikura does not list 紐付けコード links; each variant's 商品コード "
            "is used as its link code"
        )
        return None

    def _account(self, client: LogikuraClient) -> int | None:
        """The external-service account whose product codes are Next Engine goods codes."""
        accounts = list(
            client.get_all("/api/v1/external_service_accounts", "external_service_accounts")
        )
        wanted = self.config.link_account
        if wanted is not None:
            for account in accounts:
                if wanted in (
                    str(account.get("name")),
                    str(account.get("uid")),
                    str(account.get("id")),
                ):
                    return int(account["id"])
            names = ", ".join(str(a.get("name")) for a in accounts) or "none"
            raise LogikuraConfigError(
                f"wms.logikura.link_account {wanted!r} is not an "
                f"external-service account in Logikura (it has: {names})"
            )
        found = [
            a
            for a in accounts
            if any(
                n in str(a.get("external_service_name") or "").casefold() for n in NE_SERVICE_NAMES
            )
        ]
        if len(found) > 1:
            names = ", ".join(str(a.get("name")) for a in found)
            raise LogikuraConfigError(
                f"Logikura has several Next Engine accounts ({names}); "
                "name one in wms.logikura.link_account"
            )
        if not found:
            self.log.warning(
                "Logikura has no Next Engine external-service account; link codes "
                "fall back to each variant's 商品コード"
            )
            return None
        return int(found[0]["id"])


def resolve_warehouses(
    config: LogikuraConfig, catalog: Catalog, configured: Mapping[str, WarehouseInfo]
) -> dict[str, int]:
    """nebridge warehouse code → Logikura warehouse id; every configured code must exist."""
    resolved: dict[str, int] = {}
    missing = []
    for code in configured:
        target = config.logikura_warehouse_code(code)
        if target in catalog.warehouses:
            resolved[code] = catalog.warehouses[target]
        else:
            missing.append(f"{code}" + (f" (as {target})" if target != code else ""))
    if missing:
        have = ", ".join(sorted(catalog.warehouses)) or "none"
        raise LogikuraConfigError(
            f"warehouse(s) {', '.join(missing)} of daemon.yaml have no Logikura 拠点 with that "
            f"code (Logikura has: {have}); fix warehouses[].code or map them in "
            "wms.logikura.warehouse_codes"
        )
    return resolved


WAREHOUSE_IDS_KEY = "warehouse_ids"
RENAMED_KEY = "warehouse_renamed"


@dataclass
class WarehouseMap:
    """The configured warehouses as Logikura ids, for reading histories.

    Unlike :func:`resolve_warehouses` it never stops the reading: a 拠点 staff renamed is
    still found by the id nebridge last saw for it (and reported, so daemon.yaml gets
    updated); a code that matches nothing at all is listed in ``missing`` (the reader reads
    the other warehouses, then fails the pass with it).
    """

    by_id: dict[int, str]
    names: dict[int, str]
    missing: list[str]

    @classmethod
    def build(
        cls, config: LogikuraConfig, catalog: Catalog, ctx: ConnectorContext, store: LocalStore
    ) -> WarehouseMap:
        """Match ``ctx.warehouses`` to the catalog, reporting renamed and missing 拠点."""
        names = {lid: code for code, lid in catalog.warehouses.items()}
        known: dict[str, int] = {
            str(k): int(v) for k, v in (store.get_json(WAREHOUSE_IDS_KEY) or {}).items()
        }
        was_renamed = set(store.get_json(RENAMED_KEY) or [])
        renamed: set[str] = set()
        by_id: dict[int, str] = {}
        missing: list[str] = []
        for code in ctx.warehouses:
            target = config.logikura_warehouse_code(code)
            key = f"logikura:warehouse:{code}"
            if target in catalog.warehouses:
                by_id[catalog.warehouses[target]] = code
                known[code] = catalog.warehouses[target]
                if code in was_renamed:
                    ctx.resolve_problem(key)
            elif known.get(code) in names:
                lid = known[code]
                by_id[lid] = code
                renamed.add(code)
                ctx.report_problem(
                    Problem(
                        key=key,
                        kind="wms_mismatch",
                        severity="warning",
                        warehouse=code,
                        subject=f"拠点 #{lid}",
                        reason=(
                            f"Logikura 拠点 #{lid}, which nebridge knew as {target}, is now "
                            f"called {names[lid]}; nebridge goes on reading it by its id"
                        ),
                        fix=(
                            f"map it in daemon.yaml: wms.logikura.warehouse_codes: {{{code}: "
                            f"{names[lid]}}} (schedules are not sent to it until then)"
                        ),
                    )
                )
            else:
                have = ", ".join(sorted(catalog.warehouses)) or "none"
                missing.append(
                    f"warehouse {code} of daemon.yaml has no Logikura 拠点 "
                    f"{target} (Logikura has: {have}); fix warehouses[].code or "
                    "map it in wms.logikura.warehouse_codes"
                )
        if store.get_json(WAREHOUSE_IDS_KEY) != known:
            store.put_json(WAREHOUSE_IDS_KEY, known)
        if renamed != was_renamed:
            store.put_json(RENAMED_KEY, sorted(renamed))
        return cls(by_id, names, missing)

    def describe(self, lid: int) -> str:
        """``CODE (#id)`` of a Logikura warehouse id, for messages."""
        if lid < 0:
            return "unknown (its stock is at no warehouse daemon.yaml lists)"
        return f"{self.names.get(lid, '?')} (#{lid})"

    def describe_code(self, lid: int) -> str:
        """The Logikura code of a warehouse id ("" if unknown)."""
        return self.names.get(lid, "")
