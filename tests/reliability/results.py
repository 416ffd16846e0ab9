"""The campaign's figures, printed at the end and written to ``RESULTS.md``."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.reliability.checks import Outcome
from tests.reliability.settle import Settlement


@dataclass
class PhaseReport:
    """One phase: what it did, what it injected, what it ended with."""

    name: str
    seconds: float = 0.0
    runs: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    calls: int = 0
    failing_share: float = 0.0
    workload: dict[str, int] = field(default_factory=dict)
    outcome: Outcome = field(default_factory=Outcome)
    settlement: Settlement = field(default_factory=Settlement)
    notes: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    formula_cells: int = 0
    secrets: set[str] = field(default_factory=set, repr=False)

    @property
    def ok(self) -> bool:
        """No problem found (lost, doubled, wrong, or a rule broken)."""
        return not self.problems and not self.outcome.problems


@dataclass
class CorpusReport:
    """The bad-input corpus: one line per input, ``ok`` if it got the error it should."""

    results: list[tuple[str, str, bool, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    secrets: set[str] = field(default_factory=set, repr=False)

    def add(self, group: str, name: str, ok: bool, detail: str) -> None:
        """Record one input's outcome."""
        self.results.append((group, name, ok, detail))
        if not ok:
            self.problems.append(f"{group}/{name}: {detail}")

    @property
    def ok(self) -> bool:
        """Every input got its clear error and nothing was applied."""
        return not self.problems


@dataclass
class SecurityReport:
    """Secret scan and exposure checks."""

    scanned_files: int = 0
    scanned_bytes: int = 0
    secrets_known: int = 0
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    def add(self, name: str, ok: bool, detail: str = "") -> None:
        """Record one check."""
        self.checks.append((name, ok, detail))

    @property
    def problems(self) -> list[str]:
        """The failed checks."""
        return [f"{name}: {detail}" for name, ok, detail in self.checks if not ok]

    @property
    def ok(self) -> bool:
        """Every check passed."""
        return not self.problems


@dataclass
class Figures:
    """Everything the campaign measured."""

    command: str
    settings: dict[str, Any]
    phases: list[PhaseReport] = field(default_factory=list)
    corpus: CorpusReport | None = None
    security: SecurityReport | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Every phase, the corpus and the security checks passed."""
        return (
            all(p.ok for p in self.phases)
            and (self.corpus is None or self.corpus.ok)
            and (self.security is None or self.security.ok)
        )

    def problems(self) -> list[str]:
        """Every problem found, prefixed with where."""
        found = [f"{p.name}: {x}" for p in self.phases for x in p.problems + p.outcome.problems]
        if self.corpus:
            found += [f"corpus: {x}" for x in self.corpus.problems]
        if self.security:
            found += [f"security: {x}" for x in self.security.problems]
        return found

    def summary(self) -> str:
        """The figures as plain text lines (printed at the end)."""
        lines = [
            f"reliability campaign: {'PASSED' if self.ok else 'FAILED'} in {self.seconds:.0f} s",
            f"command: {self.command}",
        ]
        for p in self.phases:
            s = p.settlement
            lines.append(
                f"[{p.name}, {p.seconds:.0f} s] runs {p.runs}, kills {sum(p.kills.values())}, "
                f"NE calls {p.calls}, "
                f"failing {p.failing_share:.1%}, faults {sum(p.faults.values())}, "
                f"events lost {p.outcome.events_lost}, effects doubled "
                f"{p.outcome.effects_doubled}, in doubt {s.in_doubt} (applied "
                f"{len(s.applied)}, not applied {len(s.not_applied)})"
            )
        if self.corpus:
            passed = sum(1 for r in self.corpus.results if r[2])
            lines.append(
                f"[corpus, {self.corpus.seconds:.0f} s] bad inputs tried "
                f"{len(self.corpus.results)}, "
                f"clear error and nothing applied: {passed}"
            )
        if self.security:
            lines.append(
                f"[security] {len(self.security.checks)} checks, "
                f"{len(self.security.problems)} failed; {self.security.scanned_files} "
                f"log/output files scanned for {self.security.secrets_known} secrets"
            )
        lines += [f"PROBLEM: {x}" for x in self.problems()]
        return "\n".join(lines)

    def markdown(self) -> str:
        """``RESULTS.md``."""
        out = [
            "# Reliability campaign results",
            "",
            f"Command: `{self.command}`",
            "",
            f"Outcome: **{'passed' if self.ok else 'FAILED'}** in {self.seconds:.0f} s "
            f"(settings: {', '.join(f'{k}={v}' for k, v in self.settings.items())}).",
            "",
        ]
        out += [
            "| phase | runs | kills | NE calls | calls failing | faults injected | "
            "events lost | effects doubled | in doubt | settled applied / not applied |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for p in self.phases:
            s = p.settlement
            out.append(
                f"| {p.name} | {p.runs} | {sum(p.kills.values())} | {p.calls} | "
                f"{p.failing_share:.1%} | {sum(p.faults.values())} | "
                f"{p.outcome.events_lost} | {p.outcome.effects_doubled} | {s.in_doubt} | "
                f"{len(s.applied)} / {len(s.not_applied)} |"
            )
        for p in self.phases:
            out += ["", f"## {p.name} ({p.seconds:.0f} s)", ""]
            out += [f"- {k}: {v}" for k, v in p.workload.items()]
            if p.kills:
                out += ["", "Kills (SIGKILL) by point:", ""]
                out += [f"- {k}: {v}" for k, v in sorted(p.kills.items())]
            if p.faults:
                out += ["", "Faults injected by kind:", ""]
                out += [f"- {k}: {v}" for k, v in sorted(p.faults.items())]
            out += ["", "Checks:", ""]
            out += [
                f"- {k}: {v}"
                for k, v in sorted(
                    {**p.outcome.lost, **p.outcome.doubled, **p.outcome.wrong}.items()
                )
            ]
            out += [f"- outbox at the end: {dict(sorted(p.outcome.outbox.items()))}"]
            out += [
                "",
                "Outcomes that could not be known, settled by nebridge against Next "
                "Engine (never guessed, never resent blindly):",
                "",
            ]
            out += [f"- {k}: {v}" for k, v in p.outcome.settled_by_nebridge.items()]
            out += [
                f"- in doubt, for the admin: {p.settlement.in_doubt} (resolved by checking "
                f"the sandbox: {len(p.settlement.applied)} applied, "
                f"{len(p.settlement.not_applied)} not applied)",
                "",
            ]
            out += [f"- {k}: {v}" for k, v in p.notes.items()]
            out += [f"- **problem**: {x}" for x in p.problems + p.outcome.problems]
        if self.corpus:
            passed = sum(1 for r in self.corpus.results if r[2])
            groups = Counter(r[0] for r in self.corpus.results)
            by_group = ", ".join(f"{g}: {n}" for g, n in sorted(groups.items()))
            out += [
                "",
                "## Bad input",
                "",
                f"{len(self.corpus.results)} malformed inputs tried, {passed} got a clear "
                f"error naming the input and the reason with nothing applied, and the "
                f"daemon stayed up ({by_group}).",
                "",
                "| group | input | ok | error seen |",
                "|---|---|---|---|",
            ]
            out += [
                f"| {g} | `{n}` | {'yes' if ok else '**no**'} | {_cell(d)} |"
                for g, n, ok, d in self.corpus.results
            ]
        if self.security:
            out += [
                "",
                "## Security",
                "",
                f"{self.security.scanned_files} log and CLI output files "
                f"({self.security.scanned_bytes:,} bytes) scanned for "
                f"{self.security.secrets_known} secrets (every access and refresh token "
                "the sandbox issued, the client secret).",
                "",
                "| check | ok | detail |",
                "|---|---|---|",
            ]
            out += [
                f"| {n} | {'yes' if ok else '**no**'} | {_cell(d)} |"
                for n, ok, d in self.security.checks
            ]
        return "\n".join(out) + "\n"


def _cell(text: str) -> str:
    """A table cell: one line, pipes escaped, shortened."""
    flat = " ".join(text.split()).replace("|", "\\|")
    return flat if len(flat) <= 160 else flat[:159] + "…"
