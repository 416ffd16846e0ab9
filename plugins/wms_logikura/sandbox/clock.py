"""The Logikura sandbox clock (JST).

Everything time-dependent in the sandbox (code and token expiry, the rate-limit window,
``shipped_date`` / ``received_date`` defaults) reads one :class:`Clock`, so a test moves time
instead of sleeping: ``state.clock.advance(86_400)`` expires an access token. The clock itself
is :class:`hooks.sandbox.Clock`; this adds Logikura's forms.
"""

from __future__ import annotations

from datetime import date

from hooks.sandbox.clock import JST
from hooks.sandbox.clock import Clock as KitClock

__all__ = ["JST", "Clock"]


class Clock(KitClock):
    """A JST clock tests can move, with Logikura's date forms."""

    def timestamp(self) -> float:
        """Current sandbox time as POSIX seconds."""
        return self.now().timestamp()

    def today(self) -> date:
        """Today's date in Japan (Logikura's business dates)."""
        return self.now().date()

    def iso(self) -> str:
        """Current time as ISO 8601 with ``+09:00`` (Logikura's ``updated_at`` form)."""
        return self.text()
