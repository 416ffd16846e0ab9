"""notify_email — 対応が必要なことをメールで知らせる (SMTP).

A sink of ``nebridge_notify``: each notification becomes one plain-text e-mail in Japanese or
English (``language``), sent through an SMTP server with STARTTLS (``security: starttls``,
port 587), implicit TLS (``tls``, port 465) or none (``none``: a relay on this machine only).
The password comes from the systemd credential ``notify-email-password``, else env
``NEBRIDGE_NOTIFY_EMAIL_PASSWORD``, else ``password`` here. Each delivery opens one SMTP
connection with ``timeout_seconds`` and closes it before returning (no thread, no pool); the
Message-ID is made from the delivery key, so a copy resent after a crash is the same message.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from hashlib import sha256
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, model_validator

from hooks import hookimpl
from hooks.notify import NotifyContext, render, secret, subject_line
from hooks.records import Notification, PluginInfo

PASSWORD_CREDENTIAL = "notify-email-password"
PASSWORD_ENV = "NEBRIDGE_NOTIFY_EMAIL_PASSWORD"


def _address(value: str) -> str:
    if "@" not in value or any(c in value for c in " \r\n,;<>"):
        raise ValueError(f"{value!r} is not one e-mail address")
    return value


Address = Annotated[str, AfterValidator(_address)]


class EmailConfig(BaseModel):
    """``plugins.notify_email`` options."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    host: str = Field(min_length=1)
    #: Default: 587 for ``starttls``, 465 for ``tls``, 25 for ``none``.
    port: int | None = Field(default=None, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str = ""
    password: SecretStr | None = None
    sender: Address = Field(alias="from")
    to: tuple[Address, ...] = Field(min_length=1)
    subject_prefix: str = "[nebridge] "
    language: Literal["ja", "en"] = "ja"
    timeout_seconds: float = Field(default=30.0, gt=0, le=300)
    #: A CA bundle to trust for the server's certificate (a private CA); default: the system's.
    ca_file: Path | None = None

    @model_validator(mode="after")
    def _no_password_in_clear(self) -> EmailConfig:
        if self.username and self.security == "none":
            raise ValueError(
                "a password is never sent unencrypted: with username set, use "
                "security: starttls or tls"
            )
        return self

    def smtp_port(self) -> int:
        """The port, or the usual one for ``security``."""
        return self.port or {"starttls": 587, "tls": 465, "none": 25}[self.security]


class EmailFailed(Exception):
    """The mail server did not take the message; the text names the server and the cause."""


@hookimpl
def nebridge_plugin_info() -> PluginInfo:
    """Describe the plugin."""
    return PluginInfo(
        name="notify_email",
        summary="Tell staff by e-mail (SMTP) what needs a person, and when it is resolved",
        config_model=EmailConfig,
        setting_ja="対応が必要なことをメールで知らせる",
    )


def build_message(
    notification: Notification, options: EmailConfig, ctx: NotifyContext
) -> EmailMessage:
    """The e-mail for ``notification`` (plain text, UTF-8)."""
    message = EmailMessage()
    message["Subject"] = subject_line(notification, options.language, options.subject_prefix)
    message["From"] = options.sender
    message["To"] = ", ".join(options.to)
    message["Date"] = formatdate(localtime=False)
    digest = sha256(notification.delivery_key.encode()).hexdigest()[:24]
    message["Message-ID"] = f"<nebridge.{digest}@{options.sender.rsplit('@', 1)[1]}>"
    message["X-Nebridge-Delivery"] = notification.delivery_key
    message.set_content(
        render(notification, options.language, ctx.zone), charset="utf-8", cte="base64"
    )  # 7-bit safe for every mail system
    return message


@hookimpl
def nebridge_notify(notification: Notification, options: EmailConfig, ctx: NotifyContext) -> None:
    """Send one e-mail; raise :class:`EmailFailed` when the server does not take it."""
    password = secret(
        ctx,
        PASSWORD_CREDENTIAL,
        PASSWORD_ENV,
        options.password.get_secret_value() if options.password else None,
    )
    message = build_message(notification, options, ctx)
    server = f"{options.host}:{options.smtp_port()}"
    tls = ssl.create_default_context(cafile=str(options.ca_file) if options.ca_file else None)
    try:
        smtp: smtplib.SMTP
        if options.security == "tls":
            smtp = smtplib.SMTP_SSL(
                options.host, options.smtp_port(), timeout=options.timeout_seconds, context=tls
            )
        else:
            smtp = smtplib.SMTP(options.host, options.smtp_port(), timeout=options.timeout_seconds)
        with smtp:
            if options.security == "starttls":
                smtp.starttls(context=tls)
            if options.username:
                if not password:
                    raise EmailFailed(
                        f"no password for {options.username} at {server}: write it to the "
                        f"credential {PASSWORD_CREDENTIAL} or set {PASSWORD_ENV}"
                    )
                smtp.login(options.username, password)
            smtp.send_message(message)
    except smtplib.SMTPException as exc:
        raise EmailFailed(
            f"the mail server {server} refused the message: {type(exc).__name__}: {exc}"
        ) from None
    except (OSError, ssl.SSLError) as exc:
        raise EmailFailed(
            f"cannot reach the mail server {server}: {type(exc).__name__}: {exc}"
        ) from None
