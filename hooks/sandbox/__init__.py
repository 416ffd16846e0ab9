"""A kit for writing a local sandbox of the system your connector talks to.

The Next Engine sandbox (``daemon.sandbox``) and the Logikura sandbox
(``plugins.wms_logikura.sandbox``) are built on it; see ``docs/sandbox-kit.md``. It gives the
parts every sandbox shares, so yours holds only the upstream system's rules:

- :class:`SandboxServer`: the HTTP loop on one loopback port, ``start()``/``stop()``, the
  ``/_sandbox/`` control API, a clean stop that joins every thread;
- :class:`SandboxWorld`: the state's settings, lock, clock, ledger, faults and base URL;
- :class:`Clock`: a JST clock tests move instead of sleeping;
- :class:`Ledger`: the append-only record of every change, for end-to-end assertions;
- :class:`FaultBook`: seeded fault rates and one-shot schedules;
- :class:`ControlApi`: the shared control routes (config, faults, clock);
- :class:`SandboxSettings` / :class:`GuessedOption`: strict config loading, documented guesses.

It imports nothing from ``daemon`` or ``plugins``.
"""

from hooks.sandbox.clock import JST, Clock
from hooks.sandbox.config import GuessedOption, SandboxSettings
from hooks.sandbox.control import ControlApi, ControlError
from hooks.sandbox.faults import Draw, FaultBook, FaultSettings, Scheduled
from hooks.sandbox.ledger import Ledger, LedgerEntry
from hooks.sandbox.server import (
    SandboxHandler,
    SandboxServer,
    StatePart,
    run_until_signal,
    with_query,
)
from hooks.sandbox.world import SandboxWorld

__all__ = [
    "JST",
    "Clock",
    "ControlApi",
    "ControlError",
    "Draw",
    "FaultBook",
    "FaultSettings",
    "GuessedOption",
    "Ledger",
    "LedgerEntry",
    "SandboxHandler",
    "SandboxServer",
    "SandboxSettings",
    "SandboxWorld",
    "Scheduled",
    "StatePart",
    "run_until_signal",
    "with_query",
]
