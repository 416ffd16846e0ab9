"""Errors of the Logikura connector. Each is also one of the contract's step errors, so the
engine treats it right: auth problems need the admin, unavailability is retried later,
refusals of one record are reported with Logikura's own message."""

from __future__ import annotations

from typing import Any

from hooks.errors import NebridgeError, StepAuthError, StepError, StepNotReady

RECONNECT_HINT = "run `nebridge wms connect` to authorise nebridge in Logikura again"


class LogikuraError(NebridgeError):
    """Base class of the connector's errors; the message says what to do next."""


class LogikuraAuthError(LogikuraError, StepAuthError):
    """Not connected, the grant is gone, or the app lacks a scope: an admin must act."""


class LogikuraUnavailable(LogikuraError, StepNotReady):
    """Logikura did not answer usefully (network, 5xx, rate limit): try again later.

    ``ambiguous`` is True when a write may have been applied although no answer came back.
    """

    def __init__(self, message: str, *, ambiguous: bool = False) -> None:
        super().__init__(message)
        self.ambiguous = ambiguous


class LogikuraRefused(LogikuraError, StepError):
    """Logikura refused a request (400, 404, 422) with ``status`` and its ``body``."""

    def __init__(self, message: str, status: int, body: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class LogikuraConfigError(LogikuraError, StepError):
    """``daemon.yaml`` does not fit the Logikura account (e.g. a warehouse code it lacks)."""
