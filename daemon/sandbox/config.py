"""Configuration of the NE sandbox: one dataclass, every guessed behaviour a field.

Facts in the reference are marked confirmed ([C-n]), single-source ([S]) or guessed ([G]). Each
[G] behaviour the sandbox implements is a field of :class:`SandboxConfig` with the default the
reference suggests, and is listed in :data:`GUESSED_OPTIONS` (which ``docs/sandbox.md`` mirrors):

=================================  ===========  ===========  =====================================
option                             default      reference    behaviour
=================================  ===========  ===========  =====================================
shipped_allowed_from_20            True         §4.8 gaps§3  ``shipped`` accepts status 20 too
shipped_stock_effect               "allocated"  §4.8 §8      stock taken: allocated/quantity/none
case_insensitive_goods_codes       True         §5.1 gaps§8  goods codes match ignoring case
upload_recases_goods_code          True         gaps §8      upload rewrites stored code case
upload_row_error_mode              "row"        gaps §5.3    bad rows skipped (que 2) / file -1
que_processing_delay_s             1.0          §5.5         seconds from que 0 to 2 (1 midway)
que_upload_name                    "NE_API"     gaps §6      ``que_upload_name`` of API uploads
que_client_file_name               None         gaps §6      ``que_client_file_name`` of uploads
limit_max                          10000        §2.2 gaps§7  largest ``limit``
limit_over_max                     "reject"     §2.2         above ``limit_max``: reject/clamp
in_max                             1000         §2.3 gaps§7  most values in ``-in``/``-nin``
strictly_increasing_last_modified  True         §8           each write moves last_modified >=1 s
reallocate_on_change               True         §8           re-allocate on qty/goods/cancel edits
neauth_revokes_previous_pair       True         §1.3         ``api_neauth`` kills older pairs
state_single_use                   True         §1.2         a uid/state pair works once
shuffle_unsorted_results           False        §2.2         unsorted searches in random order
bulk_max_orders                    1000         §4.7         most orders in one bulk XML
tags_must_exist                    False        §4.7         tags must be in the tag master
accept_slash_dates                 True         §4.7         ``YYYY/MM/DD`` accepted as a date
reject_unknown_params              False        §2.2         unknown plain params are errors
error_codes                        {}           §3.2         override any code (``errors.py``)
=================================  ===========  ===========  =====================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from daemon.sandbox.clock import Clock
from hooks.sandbox.config import GuessedOption, SandboxSettings
from hooks.sandbox.faults import FaultSettings

__all__ = ["GUESSED_OPTIONS", "FaultConfig", "GuessedOption", "SandboxConfig"]

StockEffect = Literal["allocated", "quantity", "none"]
RowErrorMode = Literal["row", "all_or_nothing"]
LimitPolicy = Literal["reject", "clamp"]


@dataclass
class FaultConfig(FaultSettings):
    """Fault-injection settings (all off by default); see :class:`~.faults.Faults`.

    ``rates`` maps an NE code (``003002``, ``002007``, ``999999``, …) to the probability that
    any API call fails with it. ``003002`` honours ``wait_flag=1``: the call waits
    ``overload_wait_ms`` and then runs. ``fault_paths`` limits rate faults to those paths.
    """

    overload_wait_ms: int = 0
    expire_access_token_every_n_calls: int = 0
    human_edit_rate: float = 0.0
    que_failure_rate: float = 0.0


@dataclass
class SandboxConfig(SandboxSettings):
    """Everything that shapes one sandbox world; see the module docstring for guessed options.

    Where it listens, the seed, the clock and ``access_token_lifetime_s`` come from
    :class:`hooks.sandbox.SandboxSettings`.
    """

    FAULTS: ClassVar[type[FaultSettings]] = FaultConfig
    CLOCK: ClassVar[type[Clock]] = Clock

    seed_size: int = 120
    client_id: str = "nebridge-sandbox"
    client_secret: str = "nebridge-sandbox-secret"
    state_lifetime_s: int = 300
    refresh_token_lifetime_s: int = 3 * 86_400
    faults: FaultConfig = field(default_factory=FaultConfig)
    # --- guessed behaviours ([G] in the reference) ---
    shipped_allowed_from_20: bool = True
    shipped_stock_effect: StockEffect = "allocated"
    case_insensitive_goods_codes: bool = True
    upload_recases_goods_code: bool = True
    upload_row_error_mode: RowErrorMode = "row"
    que_processing_delay_s: float = 1.0
    que_upload_name: str = "NE_API"
    que_client_file_name: str | None = None
    limit_max: int = 10_000
    limit_over_max: LimitPolicy = "reject"
    in_max: int = 1000
    strictly_increasing_last_modified: bool = True
    reallocate_on_change: bool = True
    neauth_revokes_previous_pair: bool = True
    state_single_use: bool = True
    shuffle_unsorted_results: bool = False
    bulk_max_orders: int = 1000
    tags_must_exist: bool = False
    accept_slash_dates: bool = True
    reject_unknown_params: bool = False
    error_codes: dict[str, tuple[str, str] | str] = field(default_factory=dict)


GUESSED_OPTIONS: tuple[GuessedOption, ...] = (
    GuessedOption(
        "shipped_allowed_from_20",
        "§4.8, gaps §3.2",
        "`shipped` also accepts status 20 (every source ships from 40)",
    ),
    GuessedOption(
        "shipped_stock_effect",
        "§4.8, §8",
        "what shipping takes from stock: allocated row qty, full qty, or nothing",
    ),
    GuessedOption(
        "case_insensitive_goods_codes",
        "§5.1, gaps §8",
        "goods codes match ignoring case (upload, allocation, code searches)",
    ),
    GuessedOption(
        "upload_recases_goods_code",
        "gaps §8",
        "an upload row spelled differently rewrites the stored code's case",
    ),
    GuessedOption(
        "upload_row_error_mode",
        "gaps §5.3",
        "`row`: bad CSV rows skipped, que ends 2; `all_or_nothing`: que ends -1",
    ),
    GuessedOption(
        "que_processing_delay_s",
        "§5.5",
        "seconds from que status 0 to 2/-1 (status 1 from half-time)",
    ),
    GuessedOption("que_upload_name", "gaps §5.4, §6", "`que_upload_name` of API uploads"),
    GuessedOption(
        "que_client_file_name", "gaps §6", "`que_client_file_name` of API uploads (None = null)"
    ),
    GuessedOption("limit_max", "§2.2, gaps §7", "largest accepted `limit`"),
    GuessedOption("limit_over_max", "§2.2", "`limit` above the max: `reject` or `clamp`"),
    GuessedOption("in_max", "§2.3, gaps §7", "most values in one `-in` / `-nin`"),
    GuessedOption(
        "strictly_increasing_last_modified",
        "§8",
        "each write moves `receive_order_last_modified_date` by >= 1 s",
    ),
    GuessedOption(
        "reallocate_on_change",
        "§8",
        "allocate more stock after row qty/goods/cancel edits or an un-cancel",
    ),
    GuessedOption(
        "neauth_revokes_previous_pair",
        "§1.3",
        "a new `api_neauth` login kills the previous token pair",
    ),
    GuessedOption("state_single_use", "§1.2", "a uid/state pair can be exchanged only once"),
    GuessedOption(
        "shuffle_unsorted_results",
        "§2.2",
        "searches without `sort` come back in random order (else primary key)",
    ),
    GuessedOption("bulk_max_orders", "§4.7", "most `<receiveorder>` elements per bulk call"),
    GuessedOption("tags_must_exist", "§4.7", "tag tokens must exist in the tag master"),
    GuessedOption("accept_slash_dates", "§4.7", "`YYYY/MM/DD` accepted wherever a date is"),
    GuessedOption(
        "reject_unknown_params", "§2.2", "unknown plain parameters are errors instead of ignored"
    ),
    GuessedOption(
        "error_codes",
        "§3.2, gaps §2",
        "override the code of any situation (all guessed codes in `errors.py`)",
    ),
)
