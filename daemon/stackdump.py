"""SIGUSR1: write every thread's stack to stderr (the journal) and keep running.

A Python signal handler, run by the main thread between two bytecodes, reads the stacks with
:func:`sys._current_frames` while holding the GIL. :mod:`faulthandler`'s dump reads the other
threads' frames without it and crashed busy workers with SIGSEGV (seen in the fleet benchmark
and in CI), so it is not used.
"""

from __future__ import annotations

import signal
import sys
import threading
import traceback
from types import FrameType


def install() -> None:
    """Dump every thread's stack on SIGUSR1 (main thread only)."""
    signal.signal(signal.SIGUSR1, _dump)


def _dump(_signum: int, _frame: FrameType | None) -> None:
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    current = threading.get_ident()
    lines = []
    for ident, frame in sys._current_frames().items():
        which = "Current thread" if ident == current else "Thread"
        lines.append(f"{which} {names.get(ident, '?')} ({ident:#x}) (most recent call first):")
        for entry in reversed(traceback.extract_stack(frame)):
            lines.append(f'  File "{entry.filename}", line {entry.lineno} in {entry.name}')
        lines.append("")
    sys.stderr.write("\n".join(lines))
    sys.stderr.flush()
