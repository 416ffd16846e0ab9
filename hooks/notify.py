"""What a notifier plugin (a sink of ``nebridge_notify``) is lent, and the message text.

The engine owns every thread and HTTP client: a notifier plugin is called on the engine's
notifier job, one delivery at a time, and must return (or raise) within its own timeout.
It sends through what :class:`NotifyContext` lends it — ``ctx.http`` (a bounded session:
deadline and size cap) for webhooks; an SMTP plugin opens one socket for the call with
``smtplib`` and a timeout and closes it before it returns (a socket, not a thread or a
pool). Returning means delivered; raising means not delivered, and the engine tries again
later with backoff, with the same ``notification.delivery_key``.

:func:`render` gives the plain text of a notification in Japanese or English, so every sink
tells staff the same thing in the same words.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from hooks.credentials import read_credential
from hooks.records import Notification

if TYPE_CHECKING:  # a type only: ``status`` reads the notifiers without loading requests
    from hooks.http import BoundedSession

Language = Literal["ja", "en"]


@dataclass(frozen=True)
class NotifyContext:
    """What the engine lends a notifier plugin for one delivery."""

    #: The engine's bounded HTTP session (never open a client of your own).
    http: BoundedSession
    #: Where secrets live as files (``hooks.credentials.read_credential(name, folder)``).
    credentials_dir: Path
    #: Call it with every secret the plugin reads, so it never reaches a log.
    mask_secret: Callable[[str], None]
    #: The zone times are shown in (``timezone`` of ``daemon.yaml``; None: the system's).
    zone: tzinfo | None = None
    #: The environment secrets may come from (``os.environ`` in the daemon).
    env: Mapping[str, str] = field(default_factory=dict)


def secret(
    ctx: NotifyContext, credential: str, env_var: str, configured: str | None = None
) -> str | None:
    """A notifier's secret: credential ``credential`` (systemd's copy, else the file in
    ``ctx.credentials_dir``), then env ``env_var``, then the value in ``daemon.yaml``; masked in
    the logs. Raises :class:`hooks.credentials.SecretUnreadable` for an unusable credential."""
    value = (
        read_credential(credential, ctx.credentials_dir, ctx.env)
        or ctx.env.get(env_var)
        or configured
        or None
    )
    if value:
        ctx.mask_secret(value)
    return value


_KINDS: dict[str, tuple[str, str]] = {
    "held_order": ("取込保留の受注", "Order held at import"),
    "held_event": ("保留中のWMS実績", "WMS event held"),
    "failed_action": ("ネクストエンジンへの反映失敗", "Next Engine action failed"),
    "in_doubt_action": ("反映結果が不明な処理", "Next Engine action in doubt"),
    "rejected_file": ("取り込めなかったファイル", "File rejected"),
    "file_not_taken": ("取得できないファイル", "File not taken"),
    "paused_stage": ("停止中の処理", "Stage paused"),
    "crashed_stage": ("異常終了した処理", "Stage crashed"),
    "held_instruction": ("保留中の出荷指示", "Order instruction held"),
    "wms_mismatch": ("WMSとの不一致", "WMS mismatch"),
    "wms_read_failed": ("WMSの読み取り失敗", "WMS read failed"),
    "ne_link_lost": ("ネクストエンジン連携の切断", "Next Engine link lost"),
    "ne_token_expiring": ("ネクストエンジン連携の期限切れ間近", "Next Engine link about to lapse"),
    "wms_auth_lost": ("WMSの認可切れ", "WMS authorisation lost"),
    "notify_failing": ("通知の送信失敗", "Notifications not delivered"),
    "order_changed": ("取り込み後に変更された受注", "Order changed after import"),
    "stock_drift": ("在庫数のずれ", "Stock differs from the WMS"),
    "service_not_started": ("会社の処理が起動しない", "Company not served: its start failed"),
    "vault_key_missing": ("暗号鍵がないワーカー", "A worker lacks the vault key"),
    "database_unreachable": ("データベース接続不可", "Database unreachable"),
    "digest": ("まとめ", "Digest"),
    "test": ("テスト送信", "Test message"),
}

_EVENTS: dict[str, tuple[str, str, str, str]] = {
    # event: (ja tag, en tag, ja lead, en lead)
    "open": (
        "【要対応】",
        "[Action needed]",
        "対応が必要なことが発生しました。",
        "Something needs a person.",
    ),
    "reminder": (
        "【未解決】",
        "[Still open]",
        "次の件はまだ解決していません。",
        "This is still not resolved.",
    ),
    "resolved": (
        "【解決】",
        "[Resolved]",
        "次の件は解決しました。対応は不要です。",
        "This is resolved; nothing more to do.",
    ),
    "digest": (
        "【まとめ】",
        "[Digest]",
        "対応が必要なことが複数発生しました。",
        "Several things need a person.",
    ),
    "test": (
        "【テスト】",
        "[Test]",
        "nebridge からのテスト送信です。この通知先は正しく設定されています。",
        "A test message from nebridge: this sink is set up correctly.",
    ),
}

_LABELS = {
    "ja": {
        "company": "会社",
        "kind": "種類",
        "ids": "対象",
        "warehouse": "拠点",
        "since": "発生",
        "detail": "内容",
        "fix": "対処",
        "count": "件数",
        "footer": "一覧: `nebridge attention` / 通知履歴: `nebridge notify list`",
    },
    "en": {
        "company": "Company",
        "kind": "Kind",
        "ids": "About",
        "warehouse": "Warehouse",
        "since": "Since",
        "detail": "Detail",
        "fix": "Fix",
        "count": "Count",
        "footer": "Everything that waits: `nebridge attention` / sent messages: "
        "`nebridge notify list`",
    },
}


#: A command suggested to a person: `nebridge …` in backquotes.
_COMMAND = re.compile(r"`nebridge ([^`]*)`")

#: The commands that cover every company (daemon.yaml, the fleet as a whole): they refuse
#: ``--company``, so :func:`for_company` leaves them as they are.
EVERY_COMPANY = frozenset({"companies", "config", "systemd", "demo", "plugins new"})


def _for_one_company(command: str) -> bool:
    """Whether ``nebridge <command>`` works on one company and names none yet: not the
    fleet-wide commands, nor the worker itself (``nebridge run`` without ``--once``)."""
    words = command.split()
    if not words or words[0].startswith("-"):  # `nebridge --version`
        return False
    if any(w == "--company" or w.startswith("--company=") for w in words):
        return False
    if words[0] in EVERY_COMPANY or " ".join(words[:2]) in EVERY_COMPANY:
        return False
    return words[0] != "run" or "--once" in words


def for_company(text: str, company: str) -> str:
    """``text`` with every command it suggests (`nebridge …`) run for ``company``: the one
    place a fix, a CLI hint or a log line is made to name the fleet company it is about
    (`nebridge orders retry 7 --company acme`); unchanged for ``""`` (a single-company
    installation), and for the commands covering every company (:data:`EVERY_COMPANY`)."""
    if not company:
        return text
    return _COMMAND.sub(
        lambda m: (
            f"`nebridge {m.group(1)} --company {company}`"
            if _for_one_company(m.group(1))
            else m.group(0)
        ),
        text,
    )


def kind_label(kind: str, language: Language) -> str:
    """The human name of an attention kind in ``language``."""
    ja, en = _KINDS.get(kind, (kind, kind.replace("_", " ")))
    return ja if language == "ja" else en


def subject_line(notification: Notification, language: Language, prefix: str = "") -> str:
    """One line naming the event, the kind and what it is about (an e-mail subject); in
    fleet mode it starts (after ``prefix``) with the company, ``[acme] ``."""
    tags = _EVENTS.get(notification.event, _EVENTS["open"])
    tag = tags[0] if language == "ja" else tags[1] + " "
    about = ", ".join(notification.ids[:3]) + (" …" if len(notification.ids) > 3 else "")
    if notification.event == "digest":
        about = f"{notification.count}件" if language == "ja" else f"{notification.count} problems"
    company = f"[{notification.company}] " if notification.company else ""
    text = f"{prefix}{company}{tag}{kind_label(notification.kind, language)}"
    if about:
        text += f": {about}"
    if notification.warehouse:
        text += f" ({notification.warehouse})"
    return text


def render(
    notification: Notification, language: Language = "ja", zone: tzinfo | None = None
) -> str:
    """The plain-text body of ``notification`` in ``language`` (times shown in ``zone``)."""
    labels = _LABELS[language]
    tags = _EVENTS.get(notification.event, _EVENTS["open"])
    lines = [tags[2] if language == "ja" else tags[3], ""]
    if notification.company:
        lines.append(f"{labels['company']}: {notification.company}")
    if notification.event == "digest":
        lines.append(f"{labels['count']}: {notification.count}")
    else:
        lines.append(f"{labels['kind']}: {kind_label(notification.kind, language)}")
    if notification.ids and notification.event != "digest":
        lines.append(f"{labels['ids']}: {', '.join(notification.ids)}")
    if notification.warehouse:
        lines.append(f"{labels['warehouse']}: {notification.warehouse}")
    if notification.since is not None:
        moment = notification.since.astimezone(zone)
        lines.append(f"{labels['since']}: {moment:%Y-%m-%d %H:%M %Z}")
    if notification.detail:
        lines.append(f"{labels['detail']}: {notification.detail}")
    if notification.fix:
        lines.append(f"{labels['fix']}: {notification.fix}")
    if notification.lines:
        lines.append("")
        lines.extend(f"- {line}" for line in notification.lines)
        if notification.count > len(notification.lines):
            rest = notification.count - len(notification.lines)
            lines.append(f"… ほか{rest}件" if language == "ja" else f"… and {rest} more")
    lines += ["", "-- ", f"nebridge: {for_company(labels['footer'], notification.company)}"]
    return "\n".join(lines)
