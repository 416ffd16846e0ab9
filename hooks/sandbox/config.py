"""Sandbox configuration plumbing: one dataclass per sandbox, every guessed behaviour a field.

Subclass :class:`SandboxSettings` (adding ``faults``, your credentials and your guessed
options), set :attr:`~SandboxSettings.LABEL`, :attr:`~SandboxSettings.FAULTS` and
:attr:`~SandboxSettings.CLOCK`, and list each guess as a :class:`GuessedOption` so your docs
can mirror them. :meth:`~SandboxSettings.from_mapping` reads JSON/YAML data strictly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, NamedTuple, Self

from hooks.sandbox.clock import Clock
from hooks.sandbox.faults import FaultSettings


@dataclass
class SandboxSettings:
    """Where the sandbox listens, its world's seed and clock, and how long tokens live."""

    #: How error messages name the sandbox ("unknown <LABEL> option(s)").
    LABEL: ClassVar[str] = "sandbox"
    #: The fault settings type of the ``faults`` field.
    FAULTS: ClassVar[type[FaultSettings]] = FaultSettings
    #: The clock type that reads ``clock_start``.
    CLOCK: ClassVar[type[Clock]] = Clock

    host: str = "127.0.0.1"
    port: int = 0
    seed: int = 1
    redirect_uri: str | None = None
    clock_start: datetime | None = None
    clock_frozen: bool = False
    access_token_lifetime_s: int = 86_400

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Self:
        """Build a config from plain data (JSON/YAML); unknown keys raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown {cls.LABEL} option(s): {', '.join(sorted(unknown))}")
        values = dict(data)
        if isinstance(values.get("faults"), Mapping):
            fault_names = {f.name for f in dataclasses.fields(cls.FAULTS)}
            bad = set(values["faults"]) - fault_names
            if bad:
                raise ValueError(f"unknown fault option(s): {', '.join(sorted(bad))}")
            values["faults"] = cls.FAULTS(**values["faults"])
        start = values.get("clock_start")
        if isinstance(start, str):
            parsed = cls.CLOCK.parse(start)
            if parsed is None:
                raise ValueError(
                    f"clock_start is not a date: {start!r}; write {cls.CLOCK.TEXT_FORM}"
                )
            values["clock_start"] = parsed
        return cls(**values)


class GuessedOption(NamedTuple):
    """One documented guess: option name, reference section and what it controls."""

    name: str
    reference: str
    behaviour: str
