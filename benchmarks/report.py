"""The benchmark table: one row per sandbox latency and workload, plus the latency rows,
built from the measured passes (:class:`Run`) and latency runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from benchmarks.latency import Arrivals, LatencyResult
from benchmarks.worker import JobResult

UPLOAD = "/api_v1_master_goods/upload"
_RESOURCE = {
    "receiveorder_base": "order",
    "receiveorder_row": "row",
    "master_goods": "goods",
    "system_que": "que",
}
COLUMNS = (
    "NE ms",
    "workload",
    "events",
    "run",
    "wall s",
    "ev/s",
    "pipe ev/s",
    "CPU s",
    "RSS MB",
    "NE calls by endpoint",
    "calls/order",
    "uploads/disp",
    "p50/p95 s",
    "naive run",
    "naive wall ×",
    "naive calls ×",
    "check",
)


@dataclass
class Run:
    """One measured pass, as the worker and the sandbox saw it."""

    latency_ms: int
    kind: str
    strategy: str
    size: int
    job: JobResult
    calls: dict[str, int] = field(default_factory=dict)
    shipped: int = 0
    check: str = "ok"

    @property
    def total_calls(self) -> int:
        """NE API calls of the pass."""
        return sum(self.calls.values())


def endpoint(path: str) -> str:
    """A short name of an NE API path (``order/search``, ``shipped``, ``upload``...)."""
    parts = path.strip("/").removeprefix("api_v1_").split("/")
    if len(parts) == 2 and parts[1] in ("search", "count"):
        return f"{_RESOURCE.get(parts[0], parts[0])}/{parts[1]}"
    return parts[-1]


def calls_text(calls: Mapping[str, float]) -> str:
    """NE calls by endpoint, most first (``shipped 10,000, order/search 40``)."""
    ranked = sorted(calls.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{endpoint(p)} {round(n):,}" for p, n in ranked if round(n)) or "0"


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    if digits == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _run_text(size: int, ran: int) -> str:
    return "full" if ran == size else f"{ran:,} ×{size / ran:,.4g}"


@dataclass
class Row:
    """One line of the table; every figure scaled to the workload's full size."""

    latency_ms: int
    workload: str
    title: str
    events: int
    run: str = "—"
    wall_s: float | None = None
    events_per_s: float | None = None
    pipeline_events_per_s: float | None = None
    cpu_s: float | None = None
    rss: str = "—"
    calls: dict[str, float] = field(default_factory=dict)
    calls_per_order: float | None = None
    uploads_per_dispatch: float | None = None
    latency: str = "—"
    naive_run: str = "—"
    naive_wall_x: float | None = None
    naive_calls_x: float | None = None
    check: str = "—"

    @classmethod
    def from_runs(
        cls,
        latency_ms: int,
        workload: str,
        title: str,
        size: int,
        runs: Mapping[str, Run | None],
    ) -> Row:
        """Figures of the nebridge run, and the naive run as ratios to it."""
        row = cls(latency_ms, workload, title, size)
        ours, naive = runs.get("nebridge"), runs.get("naive")
        checks = []
        if ours is not None:
            scale = size / ours.size
            job = ours.job
            row.run = _run_text(size, ours.size)
            row.wall_s = job.wall_s * scale
            row.events_per_s = ours.size / job.wall_s if job.wall_s else None
            inbound = job.intake_s + job.pipelines_s
            if ours.kind != "import" and inbound:
                row.pipeline_events_per_s = ours.size / inbound
            row.cpu_s = job.cpu_s * scale
            row.rss = _num(job.peak_rss_mb) + ("" if scale == 1 else f" ({ours.size:,})")
            row.calls = {p: n * scale for p, n in ours.calls.items()}
            if ours.kind == "ship" and ours.shipped:
                row.calls_per_order = ours.total_calls / ours.shipped
            if ours.kind in ("other", "receipts"):
                row.uploads_per_dispatch = float(ours.calls.get(UPLOAD, 0))
            checks.append(ours.check if ours.check == "ok" else f"nebridge: {ours.check}")
        if naive is not None:
            scale = size / naive.size
            row.naive_run = _run_text(size, naive.size)
            if row.wall_s:
                row.naive_wall_x = naive.job.wall_s * scale / row.wall_s
            ours_calls = sum(row.calls.values())
            if ours_calls:
                row.naive_calls_x = naive.total_calls * scale / ours_calls
            if naive.check != "ok":
                checks.append(f"naive: {naive.check}")
        row.check = "; ".join(dict.fromkeys(checks)) or "—"
        return row

    @classmethod
    def from_latency(
        cls, latency_ms: int, arrivals: Arrivals, results: Mapping[str, LatencyResult | None]
    ) -> Row:
        """The daemon-process row: p50/p95, idle/peak RSS, naive latencies as ratios."""
        title = (
            f"{arrivals.files} files × {arrivals.orders} orders, one every "
            f"{arrivals.period_s:g} s, daemon process"
        )
        ours, naive = results.get("nebridge"), results.get("naive")
        row = cls(latency_ms, "latency", title, arrivals.files * arrivals.orders, run="full")
        checks = []
        if ours is not None:
            row.wall_s = ours.duration_s
            row.cpu_s = ours.cpu_s
            row.rss = f"idle {ours.idle_rss_mb:.0f} / peak {ours.peak_rss_mb:.0f}"
            row.calls = {p: float(n) for p, n in ours.calls.items()}
            if ours.shipped:
                row.calls_per_order = sum(ours.calls.values()) / ours.shipped
            row.latency = f"{ours.p50_s:.2f} / {ours.p95_s:.2f}"
            if ours.shipped != ours.orders:
                checks.append(f"nebridge shipped {ours.shipped} of {ours.orders}")
        if naive is not None:
            row.naive_run = f"p50/p95 {naive.p50_s:.2f} / {naive.p95_s:.2f} s"
            if ours is not None and ours.p50_s:
                row.naive_wall_x = naive.p50_s / ours.p50_s
            if ours is not None and ours.calls:
                row.naive_calls_x = sum(naive.calls.values()) / sum(ours.calls.values())
            if naive.shipped != naive.orders:
                checks.append(f"naive shipped {naive.shipped} of {naive.orders}")
        row.check = "; ".join(checks) or "ok"
        return row

    def cells(self) -> list[str]:
        """The row's cells, in :data:`COLUMNS` order."""
        return [
            str(self.latency_ms),
            self.workload,
            f"{self.events:,}",
            self.run,
            _num(self.wall_s, 2),
            _num(self.events_per_s),
            _num(self.pipeline_events_per_s),
            _num(self.cpu_s, 2),
            self.rss,
            calls_text(self.calls) if self.calls else "—",
            _num(self.calls_per_order, 3),
            _num(self.uploads_per_dispatch, 1),
            self.latency,
            self.naive_run,
            _num(self.naive_wall_x, 1),
            _num(self.naive_calls_x, 1),
            self.check,
        ]


def render(rows: Sequence[Row], *, markdown: bool = False) -> str:
    """The table as aligned text (or Markdown), with the notes below it."""
    cells = [list(COLUMNS), *(row.cells() for row in rows)]
    if markdown:
        lines = ["| " + " | ".join(c) + " |" for c in cells]
        lines.insert(1, "|" + "---|" * len(COLUMNS))
    else:
        widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
        lines = [
            "  ".join(c[i].ljust(widths[i]) for i in range(len(COLUMNS))).rstrip() for c in cells
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
    titles = dict.fromkeys(f"{r.workload}: {r.title}" for r in rows)
    notes = [
        "",
        *titles,
        "run: 'full', or 'N ×F' = ran N events and every figure is scaled by F (linear "
        "extrapolation; RSS is that of the smaller run).",
        "ev/s: events (shipments, receipts, imported orders) per wall second of one daemon "
        "pass; pipe ev/s: through inbox -> plugins -> outbox only (no NE calls).",
        "calls/order: NE calls per shipped order; uploads/disp: stock uploads per dispatch "
        "(one NE company); naive ×: naive figure / nebridge figure (latency row: p50).",
    ]
    if markdown:
        notes = [f"- {note}" if note else note for note in notes]
    return "\n".join(lines + notes)
