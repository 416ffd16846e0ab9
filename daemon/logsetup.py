"""Logging: journald-friendly priority prefixes under systemd, and secret redaction.

Every secret the process learns (client secret, tokens) is registered with
:func:`register_secret`; a filter on the root handler replaces it in every log line, so a
secret can never reach the journal even through an exception message. A line logged for a
fleet company (``company`` in its context: its jobs on a worker) names the company in every
command it suggests (``hooks.notify.for_company``).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}
_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_HANDLER_NAME = "nebridge"
_context: ContextVar[tuple[tuple[str, str], ...]] = ContextVar("nebridge_log_context", default=())


@contextmanager
def log_context(**values: str) -> Iterator[None]:
    """Add ``key=value`` pairs (warehouse, plugin, run …) to every log line inside the block."""
    token = push_log_context(**values)
    try:
        yield
    finally:
        _context.reset(token)


def push_log_context(**values: str) -> Token[tuple[tuple[str, str], ...]]:
    """:func:`log_context` without the context manager, for hot loops: undo it with
    ``reset_log_context(token)`` in a ``finally``."""
    current = dict(_context.get())
    current.update(values)
    return _context.set(tuple(current.items()))


#: (context, plugin) → that context naming the plugin: the engine names each plugin it calls,
#: per event and plugin, in a handful of contexts; bounded by clearing.
_with_plugin: dict[tuple[tuple[tuple[str, str], ...], str], tuple[tuple[str, str], ...]] = {}


def push_plugin_context(plugin: str) -> Token[tuple[tuple[str, str], ...]]:
    """``push_log_context(plugin=plugin)``, at half the cost: it runs around every hook call."""
    current = _context.get()
    named = _with_plugin.get((current, plugin))
    if named is None:
        if len(_with_plugin) >= 1024:
            _with_plugin.clear()
        named = _with_plugin[(current, plugin)] = tuple({**dict(current), "plugin": plugin}.items())
    return _context.set(named)


def reset_log_context(token: Token[tuple[tuple[str, str], ...]]) -> None:
    """Undo one :func:`push_log_context`."""
    _context.reset(token)


def register_secret(value: str | None) -> None:
    """Remember ``value`` so it is masked in every log line from now on."""
    if value and len(value) >= 6:
        with _secrets_lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class _Formatter(logging.Formatter):
    def __init__(self, journal: bool) -> None:
        fmt = (
            "%(name)s: %(message)s"
            if journal
            else ("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        super().__init__(fmt)
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = _context.get()
        if context:
            company = dict(context).get("company")
            if company:  # a fleet company's line: the commands it suggests name it
                from hooks.notify import for_company

                text = for_company(text, company)
            text += " [" + " ".join(f"{k}={v}" for k, v in context) + "]"
        text = redact(text)
        if self.journal:
            prio = _PRIORITY.get(record.levelno, 6)
            return "\n".join(f"<{prio}>{line}" for line in text.splitlines())
        return text


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of the record (it may be replaced)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        return


def configure_logging(level: str = "INFO") -> None:
    """Install nebridge's handler on the root logger (idempotent)."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    if any(getattr(h, "name", "") == _HANDLER_NAME for h in root.handlers):
        return
    handler = _StderrHandler()
    handler.name = _HANDLER_NAME
    handler.setFormatter(_Formatter(journal=bool(os.environ.get("JOURNAL_STREAM"))))
    root.addHandler(handler)
    for noisy in ("apscheduler", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
