"""Configuration of the Logikura connector (the ``wms.logikura`` section of ``daemon.yaml``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date, timedelta, timezone
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from hooks.credentials import read_credential

CLIENT_SECRET_ENV = "NEBRIDGE_LOGIKURA_CLIENT_SECRET"
CLIENT_SECRET_CREDENTIAL = "logikura-client-secret"
JST = timezone(timedelta(hours=9), "JST")
LinkCodes = Literal["link_or_product_code", "link", "product_code"]


class LogikuraConfig(BaseModel):
    """Where Logikura lives, how this app is registered there, and how records map.

    ``warehouse_codes`` maps a nebridge warehouse code to a Logikura 拠点 code where they
    differ (by default they are equal). ``delivery_methods`` maps a Next Engine delivery
    method (its name, or its id when the order has no name) to a Logikura delivery-method
    code; unmapped methods get ``default_delivery_method`` (None = none), or fail the order
    with ``unmapped_delivery_method: fail``. ``link_codes`` says where a product's 紐付けコード
    comes from: the 紐付け link of ``link_account`` (default: the account whose service is
    ネクストエンジン), falling back to the variant's 商品コード, or only one of the two.

    Histories are read over the dates from ``lookback_days`` before the last whole read
    (a history entered with a date further back is not seen), by what changed since the last
    poll, and in whole every ``sweep_hours`` (see :mod:`plugins.wms_logikura.inbound`).
    ``ignore_warehouses`` lists Logikura 拠点 codes nebridge does not manage: their histories
    are not reported as untaken.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_base: str = "https://api.logikura.com"
    auth_base: str = "https://logikura.com"
    client_id: str = ""
    client_secret: SecretStr | None = None
    redirect_uri: str = "http://127.0.0.1:8766/callback"
    scope: str = "read write"
    token_file: Path | None = None
    warehouse_codes: dict[str, str] = Field(default_factory=dict)
    delivery_methods: dict[str, str] = Field(default_factory=dict)
    default_delivery_method: str | None = None
    unmapped_delivery_method: Literal["default", "fail"] = "default"
    link_codes: LinkCodes = "link_or_product_code"
    link_account: str | None = None
    consignee_code_prefix: str = Field(default="NE-", max_length=16)
    poll_seconds: float = Field(default=60.0, gt=0)
    products_refresh_seconds: float = Field(default=900.0, ge=0)
    lookback_days: int = Field(default=14, ge=1, le=92)
    sweep_hours: float = Field(default=24.0, ge=0, le=168)
    ignore_warehouses: list[str] = Field(default_factory=list)
    start_date: date | None = None
    requests_per_minute: int = Field(default=100, ge=1, le=100)
    max_wait_seconds: float = Field(default=120.0, gt=0)
    timeout_seconds: float = Field(default=30.0, gt=0)
    schedule_settle_seconds: float = Field(default=120.0, ge=0)
    refresh_before_seconds: float = Field(default=3600.0, ge=0, lt=86_400)

    @field_validator("api_base", "auth_base", "redirect_uri")
    @classmethod
    def _url(cls, value: str) -> str:
        """An absolute http(s) URL, kept without a trailing slash."""
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/") if parts.path in ("", "/") else value

    @field_validator("scope")
    @classmethod
    def _scope(cls, value: str) -> str:
        """``read`` and ``write`` (nebridge creates schedules, so it needs both)."""
        scopes = value.replace("+", " ").split()
        if set(scopes) != {"read", "write"}:
            raise ValueError(
                "nebridge needs scope 'read write' (it reads histories and "
                "creates shipping schedules)"
            )
        return "read write"

    def client_secret_value(
        self, env: Mapping[str, str] | None = None, credentials_dir: Path | None = None
    ) -> str | None:
        """The client secret: credential ``logikura-client-secret`` (systemd's copy, else the
        file in ``credentials_dir``), then env ``NEBRIDGE_LOGIKURA_CLIENT_SECRET``, then this
        file. Raises :class:`hooks.credentials.SecretUnreadable` for an unusable credential."""
        env = os.environ if env is None else env
        found = read_credential(CLIENT_SECRET_CREDENTIAL, credentials_dir, env)
        if found is not None:
            return found
        if env.get(CLIENT_SECRET_ENV):
            return env[CLIENT_SECRET_ENV]
        return self.client_secret.get_secret_value() if self.client_secret else None

    def token_path(self, state_dir: Path) -> Path:
        """Where tokens are kept (0600): ``token_file``, else in the state folder."""
        return self.token_file or state_dir / "logikura-tokens.json"

    def logikura_warehouse_code(self, code: str) -> str:
        """The Logikura 拠点 code of a nebridge warehouse code."""
        return self.warehouse_codes.get(code, code)
