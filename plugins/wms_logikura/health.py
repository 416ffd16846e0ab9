"""``nebridge doctor`` for the Logikura connector: a client secret can be read, and the token
file (when nebridge was authorised) is readable by the service user only."""

from __future__ import annotations

import stat

from hooks.credentials import SecretUnreadable
from hooks.records import HealthCheck
from hooks.surface import ConnectorInUse
from plugins.wms_logikura.config import (
    CLIENT_SECRET_CREDENTIAL,
    CLIENT_SECRET_ENV,
    LogikuraConfig,
)


def logikura_checks(connector: ConnectorInUse | None) -> list[HealthCheck]:
    """The client secret and the token file's mode (none when another connector is in use or
    the section is invalid: ``doctor`` shows that under ``config``). Whether the link stands
    is doctor's ``wms link`` check."""
    if connector is None or not isinstance(connector.options, LogikuraConfig):
        return []
    config = connector.options
    checks = [_client_secret(config, connector)]
    tokens = config.token_path(connector.state_dir)
    if tokens.exists():
        mode = stat.S_IMODE(tokens.stat().st_mode)
        checks.append(
            HealthCheck(
                "token file",
                mode == 0o600,
                f"{tokens} mode {mode:o}",
                "" if mode == 0o600 else f"chmod 600 {tokens}",
            )
        )
    return checks


def _client_secret(config: LogikuraConfig, connector: ConnectorInUse) -> HealthCheck:
    try:
        secret = config.client_secret_value(credentials_dir=connector.credentials_dir)
    except SecretUnreadable as exc:
        return HealthCheck(
            "client secret",
            False,
            str(exc),
            "make the credential file readable by the service user's group "
            "(files 0640, root:nebridge)",
        )
    if secret:
        return HealthCheck("client secret", True, "configured (not shown)")
    return HealthCheck(
        "client secret",
        False,
        "no client secret for wms.logikura",
        f"put it in the credential file {CLIENT_SECRET_CREDENTIAL} in "
        f"{connector.credentials_dir}, or set {CLIENT_SECRET_ENV}",
    )
