"""Errors of the Next Engine client and the policy each one stands for.

Every class says what the caller must do next; the client itself retries only answers where
NE stated the call was not applied (overload, transient codes, a stale token pair) and
requests that certainly never left this host (:class:`NeNotSent`).

==========================  ================================================  ================
class                       NE codes / cause                                  policy
==========================  ================================================  ================
:class:`NeOverloaded`       003001, 003002                                    client retries,
                                                                              then raises
:class:`NeTransient`        000001, 008003, 008007, 009005, 011007, 020007    client retries,
                                                                              then raises
:class:`NeMaintenance`      002007, 003004, 003005, 008010                    caller reschedules
                                                                              after
                                                                              ``retry_after``
:class:`NeTokenStale`       002002 twice (after one reload of the pair)       re-connect
:class:`NeReauthRequired`   002001, 002004, any ``result=redirect``           re-connect
:class:`NeSuspended`        001007, 002003, 003003                            stop, tell admin
:class:`NeLockConflict`     020006                                            re-read, re-apply
:class:`NeValidationError`  020009, 020015 and every other business code     never retry
:class:`NeSystemError`      999999                                            re-read, then
                                                                              decide
:class:`NeNotSent`          refused / DNS / connect timeout / TLS handshake   client retries
:class:`NeOutcomeUnknown`   read timeout, dropped after sending               reconcile, never
                                                                              resend blindly
:class:`NeBadAnswer`        HTTP status not 200, not JSON, fields missing     as above
==========================  ================================================  ================
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, ClassVar

OVERLOAD_CODES = frozenset({"003001", "003002"})
TRANSIENT_CODES = frozenset({"000001", "008003", "008007", "009005", "011007", "020007"})
MAINTENANCE_CODES = frozenset({"002007", "003004", "003005", "008010"})
STALE_TOKEN_CODE = "002002"
REAUTH_CODES = frozenset({"002001", "002004"})
SUSPENDED_CODES = frozenset({"001007", "002003", "003003"})
LOCK_CONFLICT_CODE = "020006"
SYSTEM_ERROR_CODE = "999999"
BULK_PARTIAL_CODE = "020500"

DEFAULT_MAINTENANCE_RETRY_AFTER = timedelta(minutes=30)


class NextEngineError(Exception):
    """Base of every Next Engine failure: NE's ``code`` and ``message``, and what to do next.

    Messages never contain tokens or the client secret; the client redacts NE's text before
    building the error.
    """

    next_step: ClassVar[str] = "Check the message and the Next Engine status page."

    def __init__(self, code: str, message: str, *, path: str = "") -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.path = path

    def __str__(self) -> str:
        return f"{self.what()} — {self.hint()}"

    def what(self) -> str:
        """What Next Engine answered, without what to do (for a line that adds its own fix)."""
        where = f" on {self.path}" if self.path else ""
        code = f" [{self.code}]" if self.code else ""
        return f"Next Engine{code}{where}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, path={self.path!r})"

    def hint(self) -> str:
        """What the caller should do next."""
        return self.next_step


class NeOverloaded(NextEngineError):
    """NE's main function is overloaded and did not run the call (retried by the client)."""

    next_step = "NE did not apply the call; it was retried already, try again in a few minutes."


class NeTransient(NextEngineError):
    """A short-lived NE condition (deploy, order import, printing); the call was not applied."""

    next_step = "NE did not apply the call; it was retried already, try again in a few minutes."


class NeMaintenance(NextEngineError):
    """NE (platform or main function) is under maintenance or stock-take; nothing applied.

    Not retried by the client: the caller reschedules NE work after :attr:`retry_after`.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        path: str = "",
        retry_after: timedelta = DEFAULT_MAINTENANCE_RETRY_AFTER,
    ) -> None:
        super().__init__(code, message, path=path)
        self.retry_after = retry_after

    def hint(self) -> str:
        """Pause and retry after :attr:`retry_after`."""
        minutes = max(1, round(self.retry_after.total_seconds() / 60))
        return f"NE did not apply the call; pause NE work and try again in about {minutes} min."


class NeReauthRequired(NextEngineError):
    """The stored token pair is no longer accepted: the company must sign in to NE again."""

    next_step = (
        "The Next Engine connection is no longer valid (nebridge holds its Next Engine work "
        "until then): run `nebridge connect` to sign in to Next Engine again."
    )


class NeTokenStale(NeReauthRequired):
    """NE called the pair old (002002) even after reloading the newest stored pair."""


class NeSuspended(NextEngineError):
    """NE use is suspended for this company (contract, payment); re-connecting will not help."""

    next_step = "NE use is suspended for this company; stop NE work and contact the merchant."


class NeLockConflict(NextEngineError):
    """The order changed in NE since it was read (optimistic lock, 020006)."""

    next_step = "Re-read the order to get its new last-modified date, then re-apply the change."


class NeValidationError(NextEngineError):
    """NE rejected the request as invalid for the data or the order's state; never retried."""

    next_step = "Fix the data or the order in NE; sending the same request again will fail again."


class NeSystemError(NextEngineError):
    """NE reported an internal error (999999); a write may or may not have been applied."""

    next_step = (
        "NE had an internal error; re-read the affected data before deciding to retry a write."
    )


class NeTransportError(NextEngineError):
    """No usable answer came back from NE over HTTP; the subclass says whether it was sent."""


class NeNotSent(NeTransportError):
    """The request certainly never reached NE (refused, DNS, connect timeout); safe to retry."""

    next_step = "Nothing reached Next Engine; check the network, retrying is safe."


class NeOutcomeUnknown(NeTransportError):
    """The request may have reached NE but its answer was lost: the change may be applied.

    Never resent by the client; the caller reconciles (re-reads the order or looks for the
    upload queue row) before deciding.
    """

    next_step = (
        "The request may have been applied; re-read the affected data (or look for the upload "
        "queue row) before retrying, never resend blindly."
    )


class NeBadAnswer(NeOutcomeUnknown):
    """NE's answer could not be used (HTTP error, not JSON, fields missing); the call may have
    been applied, and a search answer is never read as "no rows"."""

    next_step = (
        "Next Engine's answer was unusable; the call may have been applied: re-read the "
        "affected data before retrying, never resend blindly. If it persists, check the "
        "nextengine.api_base URL and Next Engine's status page."
    )


class NeQueueTimeout(NextEngineError):
    """An upload queue row did not finish within the time the caller allowed."""

    next_step = "The upload is still queued in NE; poll the queue again later, do not re-upload."

    def __init__(self, que_id: str, status_id: int | None, *, path: str = "") -> None:
        state = "not visible yet" if status_id is None else f"status {status_id}"
        super().__init__("", f"queue {que_id} not finished ({state})", path=path)
        self.que_id = que_id
        self.status_id = status_id


def error_from_response(
    body: Mapping[str, Any],
    *,
    path: str = "",
    message: str | None = None,
    retry_after: timedelta = DEFAULT_MAINTENANCE_RETRY_AFTER,
) -> NextEngineError:
    """Map an NE ``result=error|redirect`` envelope to the error class of its policy.

    ``message`` replaces NE's text (the client passes a redacted one).
    """
    code = str(body.get("code") or "")
    text = message if message is not None else str(body.get("message") or "")
    if body.get("result") == "redirect" or code in REAUTH_CODES:
        return NeReauthRequired(code, text, path=path)
    if code == STALE_TOKEN_CODE:
        return NeTokenStale(code, text, path=path)
    if code in OVERLOAD_CODES:
        return NeOverloaded(code, text, path=path)
    if code in TRANSIENT_CODES:
        return NeTransient(code, text, path=path)
    if code in MAINTENANCE_CODES:
        return NeMaintenance(code, text, path=path, retry_after=retry_after)
    if code in SUSPENDED_CODES:
        return NeSuspended(code, text, path=path)
    if code == LOCK_CONFLICT_CODE:
        return NeLockConflict(code, text, path=path)
    if code == SYSTEM_ERROR_CODE:
        return NeSystemError(code, text, path=path)
    return NeValidationError(code, text, path=path)
