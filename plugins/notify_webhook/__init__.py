"""notify_webhook — 対応が必要なことを Slack・Chatwork・Webhook で知らせる.

A sink of ``nebridge_notify`` that POSTs each notification through the engine's bounded HTTP
session (``ctx.http``), in one of three formats:

* ``slack`` — a Slack incoming webhook: ``{"text": …}``, plain readable text, no links;
* ``chatwork`` — ``POST {chatwork_base}/v2/rooms/{room_id}/messages`` with header
  ``X-ChatWorkToken`` and form field ``body``;
* ``json`` — the notification record (:meth:`hooks.records.Notification.as_dict`) plus its
  ``subject`` and ``text``; with a secret, signed: header ``X-Nebridge-Signature:
  sha256=<hex HMAC-SHA256 of "<X-Nebridge-Timestamp>.<body>">``.

Every request carries ``X-Nebridge-Delivery`` (the delivery key, the same on a retry). Secrets
— the webhook URL (Slack's URL is one), the Chatwork token, the signing secret — come from a
systemd credential, else an env variable, else this plugin's options (see the README).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from typing import Literal
from urllib.parse import urlsplit

import requests
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from hooks import hookimpl
from hooks.credentials import SecretUnreadable, read_credential
from hooks.notify import NotifyContext, render, secret, subject_line
from hooks.records import HealthCheck, Notification, PluginInfo
from hooks.surface import ConnectorInUse

URL_CREDENTIAL, URL_ENV = "notify-webhook-url", "NEBRIDGE_NOTIFY_WEBHOOK_URL"
TOKEN_CREDENTIAL, TOKEN_ENV = "notify-chatwork-token", "NEBRIDGE_NOTIFY_CHATWORK_TOKEN"
SECRET_CREDENTIAL, SECRET_ENV = "notify-webhook-secret", "NEBRIDGE_NOTIFY_WEBHOOK_SECRET"


class WebhookConfig(BaseModel):
    """``plugins.notify_webhook`` options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["slack", "chatwork", "json"]
    #: Where ``slack`` and ``json`` POST to (or the credential ``notify-webhook-url``).
    url: SecretStr | None = None
    chatwork_base: str = "https://api.chatwork.com"
    room_id: str = ""
    token: SecretStr | None = None
    secret: SecretStr | None = None
    language: Literal["ja", "en"] = "ja"
    timeout_seconds: float = Field(default=15.0, gt=0, le=120)

    @field_validator("chatwork_base")
    @classmethod
    def _base(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL with a host name")
        return value.rstrip("/")

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr | None) -> SecretStr | None:
        parts = urlsplit(value.get_secret_value()) if value else None
        if parts is not None and (parts.scheme not in ("http", "https") or not parts.hostname):
            raise ValueError(
                "is not an http(s) URL with a host name (not shown: a webhook URL is a secret)"
            )
        return value

    @model_validator(mode="after")
    def _room(self) -> WebhookConfig:
        if self.format == "chatwork" and not self.room_id.isdigit():
            raise ValueError(
                "format chatwork needs room_id: the number at the end of the "
                'room\'s address (#!rid123456 → room_id: "123456")'
            )
        return self


class WebhookFailed(Exception):
    """The receiver did not take the message; the text names its host, never the URL."""


@hookimpl
def nebridge_plugin_info() -> PluginInfo:
    """Describe the plugin."""
    return PluginInfo(
        name="notify_webhook",
        summary="Tell staff through Slack, Chatwork or "
        "a JSON webhook what needs a person, and when it is resolved",
        config_model=WebhookConfig,
        setting_ja="対応が必要なことを Slack・Chatwork・Webhook で知らせる",
    )


@hookimpl
def nebridge_health_checks(
    options: WebhookConfig, connector: ConnectorInUse | None
) -> list[HealthCheck]:
    """``doctor``: the secret the format needs is somewhere, where ``notify test`` looks.

    Without it every notification fails, and staff hear nothing until ``notify_failing``.
    """
    if options.format == "chatwork":
        what, credential, env = "Chatwork API token", TOKEN_CREDENTIAL, TOKEN_ENV
        configured = options.token
    else:
        what, credential, env, configured = "webhook URL", URL_CREDENTIAL, URL_ENV, options.url
    name = what
    folder = connector.credentials_dir if connector is not None else None
    try:
        found = read_credential(credential, folder, os.environ)
    except SecretUnreadable as exc:
        return [HealthCheck(name, False, str(exc), f"make the credential {credential} readable")]
    if found or os.environ.get(env) or configured is not None:
        return [HealthCheck(name, True, f"{what} set")]
    return [
        HealthCheck(
            name,
            False,
            f"no {what}: every notification would fail (not in the credential {credential}, "
            f"env {env} or plugins.notify_webhook of daemon.yaml)",
            f"write it to the credential {credential} (or set env {env} for the service), "
            "then check with `nebridge notify test`",
        )
    ]


def slack_text(text: str) -> str:
    """``text`` with the three characters Slack reads as markup escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def signature(key: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of ``<timestamp>.<body>`` with ``key``."""
    mac = hmac.new(key.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _required(value: str | None, what: str, credential: str, env: str) -> str:
    if not value:
        raise WebhookFailed(
            f"no {what}: write it to the credential {credential}, set env "
            f"{env} or set it in plugins.notify_webhook of daemon.yaml"
        )
    return value


def _value(field: SecretStr | None) -> str | None:
    return field.get_secret_value() if field else None


@hookimpl
def nebridge_notify(notification: Notification, options: WebhookConfig, ctx: NotifyContext) -> None:
    """POST one message; raise :class:`WebhookFailed` unless the receiver answers 2xx."""
    subject = subject_line(notification, options.language)
    text = render(notification, options.language, ctx.zone)
    headers = {"X-Nebridge-Delivery": notification.delivery_key}
    if options.format == "chatwork":
        token = _required(
            secret(ctx, TOKEN_CREDENTIAL, TOKEN_ENV, _value(options.token)),
            "Chatwork API token",
            TOKEN_CREDENTIAL,
            TOKEN_ENV,
        )
        url = f"{options.chatwork_base}/v2/rooms/{options.room_id}/messages"
        headers["X-ChatWorkToken"] = token
        body: bytes | dict[str, str] = {"body": f"[info][title]{subject}[/title]{text}[/info]"}
    else:
        url = _required(
            secret(ctx, URL_CREDENTIAL, URL_ENV, _value(options.url)),
            "webhook URL",
            URL_CREDENTIAL,
            URL_ENV,
        )
        headers["Content-Type"] = "application/json; charset=utf-8"
        if options.format == "slack":
            data: dict[str, object] = {"text": slack_text(f"{subject}\n{text}")}
        else:
            data = {**notification.as_dict(), "subject": subject, "text": text}
        body = json.dumps(data, ensure_ascii=False).encode()
        key = (
            secret(ctx, SECRET_CREDENTIAL, SECRET_ENV, _value(options.secret))
            if options.format == "json"
            else None
        )
        if key:
            stamp = str(int(time.time()))
            headers["X-Nebridge-Timestamp"] = stamp
            headers["X-Nebridge-Signature"] = signature(key, stamp, body)
    host = urlsplit(url).netloc
    try:
        answer = ctx.http.post(
            url, data=body, headers=headers, timeout=options.timeout_seconds, allow_redirects=False
        )
    except requests.Timeout:
        raise WebhookFailed(
            f"{host} did not answer within {options.timeout_seconds:g} s (timeout_seconds)"
        ) from None
    except requests.RequestException as exc:
        raise WebhookFailed(f"cannot connect to {host} ({type(exc).__name__})") from None
    if not 200 <= answer.status_code < 300:
        raise WebhookFailed(
            f"{host} answered HTTP {answer.status_code} {answer.text[:200].strip()}"
        )
