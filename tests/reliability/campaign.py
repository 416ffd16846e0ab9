"""The whole campaign: crash consistency, fault storm, bad input, security — and the figures."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from daemon.logsetup import redact
from tests.reliability.corpus import run_corpus
from tests.reliability.crash import run_crash_phase
from tests.reliability.results import Figures
from tests.reliability.security import check_security
from tests.reliability.storm import run_storm_phase

PHASES = ("crash", "storm", "corpus", "security")


@dataclass(frozen=True)
class Settings:
    """Sizes and switches of one campaign (the CLI's options)."""

    orders: int = 2000
    others: int = 2000
    kills: int = 24
    seed: int = 8
    phases: tuple[str, ...] = PHASES

    @classmethod
    def bounded(cls) -> Settings:
        """The version that runs inside the normal test suite (about a minute and a half)."""
        return cls(orders=120, others=120, kills=5, seed=3)


class _RedactingFormatter(logging.Formatter):
    """This process's log lines as the daemon would write them (secrets masked)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


@contextmanager
def _process_log(path: Path) -> Iterator[None]:
    """Keep every log line of this process (in-process runs of the corpus) for the scan."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(_RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        handler.close()


def run_campaign(
    settings: Settings, command: str, workdir: Path | None = None, keep: bool = False
) -> Figures:
    """Run the chosen phases in a work folder (removed afterwards unless ``keep``)."""
    unknown = set(settings.phases) - set(PHASES)
    if unknown:
        raise ValueError(f"unknown phase(s) {sorted(unknown)}; choose from {', '.join(PHASES)}")
    root = workdir or Path(tempfile.mkdtemp(prefix="nebridge-reliability-"))
    root.mkdir(parents=True, exist_ok=True)
    figures = Figures(
        command,
        {k: v for k, v in asdict(settings).items() if k != "phases"}
        | {"phases": ",".join(settings.phases)},
    )
    started = time.monotonic()
    secrets: set[str] = set()
    try:
        with _process_log(root / "campaign-process.log"):
            s = settings
            if "crash" in s.phases:
                figures.phases.append(
                    run_crash_phase(root / "crash", s.seed, s.orders, s.others, s.kills)
                )
            if "storm" in s.phases:
                figures.phases.append(
                    run_storm_phase(root / "storm", s.seed + 1, s.orders, s.others)
                )
            if "corpus" in s.phases:
                figures.corpus = run_corpus(root / "corpus")
                secrets |= figures.corpus.secrets
            for phase in figures.phases:
                secrets |= phase.secrets
            if "security" in s.phases:
                cells = sum(p.formula_cells for p in figures.phases)
                figures.security = check_security(root, secrets, cells)
    finally:
        figures.seconds = time.monotonic() - started
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    return figures
