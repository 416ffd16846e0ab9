"""NE result codes the sandbox answers with, and the exception that carries one.

NE's official message list could not be retrieved (reference §3.2, gaps §2), so only some codes
are known. Every situation has a *key*; :data:`DEFAULT_ERROR_CODES` maps keys to ``(code,
message)``. Keys marked ``[G]`` are guesses: ``SandboxConfig.error_codes`` overrides any key,
so a test or plugin author can match whatever NE turns out to send.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

ResultKind = Literal["error", "redirect"]

#: key -> (code, message, confidence / reference section)
ERROR_TABLE: dict[str, tuple[str, str, str]] = {
    "path_not_found": ("000001", "APIのパスが存在しません", "S §3.2"),
    "uid_missing": ("001001", "POSTパラメータにuidが指定されていません", "S §3.2"),
    "state_missing": ("001002", "POSTパラメータにstateが指定されていません", "G"),
    "client_secret_invalid": ("001003", "client_idまたはclient_secretが正しくありません", "G §3.2"),
    "uid_state_invalid": ("001005", "uidまたはstateが無効です(期限切れ・使用済み)", "G"),
    "access_token_missing": (
        "002001",
        "POSTパラメータにaccess_tokenが指定されていません",
        "S §3.2",
    ),
    "access_token_invalid": ("002002", "access_tokenが無効です(更新済みの古いトークン)", "C-3"),
    "access_token_expired": (
        "002004",
        "access_tokenの期限が切れています。再ログインしてください",
        "G",
    ),
    "refresh_token_invalid": ("002004", "refresh_tokenが無効、または期限切れです", "C-2 §3.2"),
    "platform_maintenance": ("002007", "ネクストエンジンサーバーがメンテナンス中です", "C-2 §3.2"),
    "company_suspended": ("001007", "ネクストエンジンの利用が停止されています", "C-2 §3.2"),
    "ne_suspended": ("002003", "ネクストエンジンの利用が停止されています", "C-2 §3.2"),
    "main_suspended": ("003003", "メイン機能の利用が停止されています", "S §3.2"),
    "order_import_running": ("008003", "受注取込中のため更新できません", "S §3.2"),
    "printing_running": ("008007", "納品書印刷中の受注伝票があります", "S §3.2"),
    "stocktake_running": ("008010", "棚卸中のため更新できません", "S §3.2"),
    "import_in_progress": ("020007", "受注取り込み中です", "S §3.2"),
    "no_connection": ("003001", "メイン機能が混雑しており接続できません", "C-3 §3.2"),
    "overloaded": ("003002", "メイン機能が混雑しています", "C-3 §3.2"),
    "host_maintenance": ("003004", "メイン機能のホストがメンテナンス中です", "C-2 §3.2"),
    "main_maintenance": ("003005", "メイン機能がメンテナンス中です", "S §3.2"),
    "fields_missing": ("004001", "fieldsが指定されていません", "G"),
    "field_unknown": ("004002", "存在しないフィールドが指定されています", "G"),
    "operator_unknown": ("004003", "存在しない検索条件が指定されています", "G"),
    "param_invalid": ("004004", "パラメータの値が正しくありません", "G"),
    "limit_too_large": ("004005", "limitが上限を超えています", "G"),
    "in_too_many": ("004006", "in/ninの値が多すぎます", "G"),
    "param_missing": ("004007", "必須パラメータが指定されていません", "G"),
    "data_type_invalid": ("004008", "data_typeが正しくありません", "G"),
    "data_invalid": ("004009", "dataを展開できません", "G"),
    "order_not_found": ("020001", "受注伝票が存在しません", "G"),
    "xml_invalid": ("020002", "XMLが正しくありません", "G"),
    "field_not_updatable": ("020003", "更新できない項目が指定されています", "G"),
    "shipped_update_flag_required": (
        "020004",
        "出荷確定済の受注伝票はreceive_order_shipped_update_flag=1の場合のみ更新できます",
        "G",
    ),
    "lock_mismatch": (
        "020006",
        "最終更新日が変更されています。再度検索してから更新してください",
        "C-2 §3.2",
    ),
    "status1_restricted": (
        "020009",
        "受注メール取込済の受注伝票はキャンセル区分と作業用欄のみ更新できます",
        "S §3.2",
    ),
    "status_not_allowed": ("020010", "この受注状態では処理できません", "G"),
    "order_cancelled": ("020011", "キャンセルされた受注伝票は処理できません", "G"),
    "print_date_future": (
        "020012",
        "納品書印刷指示日がAPI実行日以前でない場合は更新できません",
        "S §4.8",
    ),
    "already_printed": ("020013", "既に納品書印刷済みです", "G"),
    "already_shipped": ("020014", "既に出荷確定済みです", "G"),
    "validation": ("020015", "入力値が正しくありません", "S §3.2"),
    "row_not_found": ("020016", "指定された明細行が存在しません", "G"),
    "bulk_too_many": ("020017", "一度に更新できる受注伝票の数を超えています", "G"),
    "bulk_partial": ("020500", "", "S §3.2"),
    "system_error": ("999999", "APIサーバーでシステムエラーが発生しました", "C-3 §3.2"),
    "app_auth_invalid": ("001003", "client_idまたはclient_secretが正しくありません", "G"),
}

#: key -> (code, message): the defaults ``SandboxConfig.error_codes`` can override.
DEFAULT_ERROR_CODES: dict[str, tuple[str, str]] = {
    key: (code, message) for key, (code, message, _conf) in ERROR_TABLE.items()
}

#: Codes a fault can inject, mapped to the key that carries their message.
INJECTABLE_CODES: dict[str, str] = {
    "000001": "path_not_found",
    "001007": "company_suspended",
    "002003": "ne_suspended",
    "002007": "platform_maintenance",
    "003001": "no_connection",
    "003002": "overloaded",
    "003003": "main_suspended",
    "003004": "host_maintenance",
    "003005": "main_maintenance",
    "008003": "order_import_running",
    "008007": "printing_running",
    "008010": "stocktake_running",
    "020007": "import_in_progress",
    "009005": "transient_009005",
    "011007": "transient_011007",
    "999999": "system_error",
}

_INJECT_MESSAGES: dict[str, str] = {
    "transient_009005": "一時的なエラーです(009005, 意味は未確認)",
    "transient_011007": "一時的なエラーです(011007, 意味は未確認)",
}


class ErrorCodes:
    """Resolves a situation key to NE's ``(code, message)``, honouring config overrides."""

    def __init__(self, overrides: Mapping[str, tuple[str, str] | str] | None = None) -> None:
        self._table = dict(DEFAULT_ERROR_CODES)
        for key, value in (overrides or {}).items():
            if key not in self._table:
                raise ValueError(f"unknown error key {key!r}")
            if isinstance(value, str):
                self._table[key] = (value, self._table[key][1])
            else:
                self._table[key] = (value[0], value[1])

    def lookup(self, key: str) -> tuple[str, str]:
        """Return ``(code, message)`` for ``key``."""
        if key in _INJECT_MESSAGES:
            return key.rsplit("_", 1)[1], _INJECT_MESSAGES[key]
        return self._table[key]

    def code(self, key: str) -> str:
        """Return only the code for ``key``."""
        return self.lookup(key)[0]


class NEError(Exception):
    """An NE error answer: ``result`` (error/redirect), a code key and an optional detail.

    ``message`` replaces the table text (bulk endpoints put a per-order list there);
    ``tokens`` says whether the token fields may be echoed (NE drops them for bad tokens).
    """

    def __init__(
        self,
        key: str,
        detail: str | None = None,
        *,
        result: ResultKind = "error",
        message: Any = None,
        tokens: bool = True,
    ) -> None:
        super().__init__(key if detail is None else f"{key}: {detail}")
        self.key = key
        self.detail = detail
        self.result: ResultKind = result
        self.message = message
        self.tokens = tokens

    def body(self, codes: ErrorCodes) -> dict[str, Any]:
        """The envelope fields of this error (without tokens)."""
        code, text = codes.lookup(self.key)
        if self.message is not None:
            message: Any = self.message
        else:
            message = text if self.detail is None else f"{text} ({self.detail})"
        return {"result": self.result, "code": code, "message": message, "request_id": ""}
