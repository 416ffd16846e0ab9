"""Configuration of the Logikura sandbox: one dataclass, every guessed behaviour a field.

The sandbox follows ``shared/reference/logikura-api.md`` (the OpenAPI 1.0 document "ロジクラ
API"). Where that reference only lets us guess (**[G]**, or a fact the SPEC leaves out), the
behaviour is a field of :class:`SandboxConfig` with the default the reference suggests, and is
listed in :data:`GUESSED_OPTIONS`, which ``docs/logikura-sandbox.md`` mirrors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from hooks.sandbox.config import GuessedOption, SandboxSettings
from hooks.sandbox.faults import FaultSettings

__all__ = [
    "GUESSED_OPTIONS",
    "INJECTABLE_STATUSES",
    "FaultConfig",
    "GuessedOption",
    "SandboxConfig",
]

LinksListing = Literal["list", "embedded", "none"]
RateWindow = Literal["fixed", "sliding"]
RateKey = Literal["grant", "global"]
OrderNumberPolicy = Literal["allow", "reject"]
HistoryItemKey = Literal["inventory", "product_variant"]

#: Delivery-method codes the sandbox knows (code -> name). Only ``sagawa_e_hiden_2`` is in the
#: SPEC; the rest stand in for the table in Logikura's CSV help article (guessed).
DEFAULT_DELIVERY_METHODS: dict[str, str] = {
    "sagawa_e_hiden_2": "佐川e飛伝II",
    "yamato_b2": "ヤマトB2クラウド",
    "japanpost_yu_pack": "ゆうパック",
    "japanpost_yu_packet": "ゆうパケット",
    "japanpost_click_post": "クリックポスト",
    "seino": "西濃運輸",
}
INJECTABLE_STATUSES = frozenset({429, 499, 500, 502, 503, 504})


@dataclass
class FaultConfig(FaultSettings):
    """Fault-injection settings (all off by default; the fields are
    :class:`hooks.sandbox.FaultSettings`); see :class:`~.faults.Faults`.

    ``rates`` maps an HTTP status (``"503"``, ``"429"`` …) to the probability that any API call
    answers with it instead of running; ``fault_paths`` limits those to paths starting with one
    of the given prefixes.
    """


@dataclass
class SandboxConfig(SandboxSettings):
    """Everything that shapes one sandbox world; guessed behaviours are in GUESSED_OPTIONS.

    Where it listens, the seed, the clock and ``access_token_lifetime_s`` come from
    :class:`hooks.sandbox.SandboxSettings`.
    """

    LABEL: ClassVar[str] = "Logikura sandbox"
    FAULTS: ClassVar[type[FaultSettings]] = FaultConfig

    seed_size: int = 30
    client_id: str = "nebridge-logikura-sandbox"
    client_secret: str = "nebridge-logikura-sandbox-secret"
    code_lifetime_s: int = 600
    refresh_token_lifetime_s: int = 90 * 86_400
    rate_limit_per_minute: int = 100
    faults: FaultConfig = field(default_factory=FaultConfig)
    # --- guessed behaviours ---
    rate_limit_status: int = 429
    rate_limit_window: RateWindow = "fixed"
    rate_limit_key: RateKey = "grant"
    page_size: int = 25
    rotate_refresh_token: bool = True
    external_links: LinksListing = "list"
    history_warehouse_id: bool = True
    consignee_code_unique: bool = True
    duplicate_order_number: OrderNumberPolicy = "allow"
    reject_unknown_delivery_method: bool = True
    delivery_methods: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_DELIVERY_METHODS))
    history_item_inventory_id: HistoryItemKey = "inventory"
    direct_shipment_allows_negative: bool = False
    allocation_all_or_nothing: bool = True

    def __post_init__(self) -> None:
        if self.rate_limit_status not in (429, 499):
            raise ValueError("rate_limit_status must be 429 or 499")
        if self.page_size < 1 or self.rate_limit_per_minute < 1:
            raise ValueError("page_size and rate_limit_per_minute must be >= 1")


GUESSED_OPTIONS: tuple[GuessedOption, ...] = (
    GuessedOption(
        "rate_limit_status",
        "§1, §5",
        "status of an over-limit answer: 429 (the live service per freee-mcp) or 499 (the SPEC)",
    ),
    GuessedOption(
        "rate_limit_window",
        "§1",
        "`fixed`: a 60 s window opened by the first request, `X-Rate-Limit-Reset` = "
        "seconds to its end; `sliding`: the last 60 s",
    ),
    GuessedOption(
        "rate_limit_key",
        "§1",
        "`grant`: each authorisation (code flow, refreshed tokens included) has its "
        "own 100/min; `global`: one budget for the whole sandbox",
    ),
    GuessedOption("page_size", "§1", "records per page of every list (no size parameter)"),
    GuessedOption(
        "rotate_refresh_token",
        "§1",
        "a refresh answer carries a new refresh token (90 days from then) and the old "
        "one stops working; off: the same refresh token is returned",
    ),
    GuessedOption(
        "external_links",
        "§2",
        "how 紐付け links can be read: `list` = `GET /api/v1/external_service_product_"
        "variants` (paged), `embedded` = `external_service_product_variants` inside "
        "each product variant, `none` = not readable",
    ),
    GuessedOption(
        "history_warehouse_id",
        "§3",
        "shipping schedules/histories carry `warehouse_id` once started (the SPEC's "
        "schema has none; off: only `packing_items[].stock_id` tells the warehouse)",
    ),
    GuessedOption(
        "consignee_code_unique", "§3", "creating a consignee with a code that exists answers 422"
    ),
    GuessedOption(
        "duplicate_order_number",
        "§4",
        "`allow`: two schedules may carry one `sales_order.order_number`; `reject`: 422",
    ),
    GuessedOption(
        "reject_unknown_delivery_method",
        "§3",
        "a `delivery_method_code` not in `delivery_methods` answers 422 (off: stored "
        "with the code as its name)",
    ),
    GuessedOption(
        "delivery_methods",
        "§3",
        "known delivery-method codes and names (only `sagawa_e_hiden_2` is in the SPEC)",
    ),
    GuessedOption(
        "history_item_inventory_id",
        "§5",
        "what `inventory_id` of a direct shipping-history item names: an inventory "
        "(`inventory`) or a product variant (`product_variant`, as its description "
        "says)",
    ),
    GuessedOption(
        "direct_shipment_allows_negative",
        "§2",
        "a direct shipping history may take more than the free stock (off: 422)",
    ),
    GuessedOption(
        "allocation_all_or_nothing",
        "§4",
        "`PATCH …/start` allocates every item or none (off: the items with stock are "
        "allocated and the schedule still answers 422 for the rest)",
    ),
)
