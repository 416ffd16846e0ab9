"""What a command run for one fleet company writes names that company in every command it
suggests (issue #19).

A command's hints (``(now: `nebridge run --once`)``, ``… then `nebridge inbox retry NAME```)
are written in many places — ``info``, ``fail``, ``typer.echo``, ``--json`` errors, log lines
on stderr. Rather than each of them, the root command passes what it writes to stdout and
stderr through :func:`hooks.notify.for_company` (the function the notifier and ``attention
--company`` use) while a company is given, so each suggested command carries ``--company
CODE`` and runs for the same company. The worker's log lines get the same from its log
context (:mod:`daemon.logsetup`). Started by the root command (``daemon.cli.common.CliGroup``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO


class _CompanyStream:
    """A text stream that writes through to ``stream``, with ``company()``'s commands."""

    def __init__(self, stream: TextIO, company: Callable[[], str]) -> None:
        self._stream = stream
        self._company = company

    def write(self, text: str) -> int:
        """Write ``text`` with every suggested command run for the company (if one is
        given by now); the length of ``text``, as a stream answers."""
        company = self._company() if "`nebridge " in text else ""
        if company:
            from hooks.notify import for_company  # only then: `hooks` is heavy at start-up

            text, length = for_company(text, company), len(text)
            self._stream.write(text)
            return length
        self._stream.write(text)
        return len(text)

    def __getattr__(self, name: str) -> Any:  # flush, isatty, encoding, buffer, fileno …
        return getattr(self._stream, name)


@contextmanager
def commands_for_company(company: Callable[[], str]) -> Iterator[None]:
    """For the block, what is written to ``sys.stdout`` and ``sys.stderr`` names
    ``company()`` (read at each write: the root command learns it once its options are
    parsed; ``""`` leaves the text as it is) in every command it suggests."""
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout = _CompanyStream(stdout, company)
    sys.stderr = _CompanyStream(stderr, company)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = stdout, stderr
