"""The parts every sandbox's state has: its settings, one re-entrant lock around every change,
a clock, a ledger, fault injection, and the URL clients reach it at.

Subclass :class:`SandboxWorld` with your types and add the upstream system's records and
rules::

    class MyState(SandboxWorld[MyConfig, Clock, Ledger[MyEntry], MyFaults]):
        def __init__(self, config: MyConfig) -> None:
            super().__init__(config, Clock, Ledger(MyEntry), MyFaults(FaultSettings, config.faults))
"""

from __future__ import annotations

import threading
from typing import Any, Generic, TypeVar

from hooks.sandbox.clock import Clock
from hooks.sandbox.config import SandboxSettings
from hooks.sandbox.faults import FaultBook
from hooks.sandbox.ledger import Ledger

ConfigT = TypeVar("ConfigT", bound=SandboxSettings)
ClockT = TypeVar("ClockT", bound=Clock)
LedgerT = TypeVar("LedgerT", bound=Ledger[Any])
FaultsT = TypeVar("FaultsT", bound=FaultBook[Any])


class SandboxWorld(Generic[ConfigT, ClockT, LedgerT, FaultsT]):
    """A sandbox's state: hold :attr:`lock` around each API call and each Python helper."""

    def __init__(
        self, config: ConfigT, clock_type: type[ClockT], ledger: LedgerT, faults: FaultsT
    ) -> None:
        self.config = config
        self.lock = threading.RLock()
        self.clock = clock_type(config.clock_start, frozen=config.clock_frozen)
        self.ledger = ledger
        self.faults = faults
        #: ``http://host:port`` once the server is bound (see ``SandboxServer.bind``).
        self.base_url = ""
