"""Phase 4 — security: no secret in any output, private token files, loopback-only listeners.

* Every log line and CLI output of the campaign (each daemon and CLI process's output, and
  this process's own log) is searched for every access and refresh token the sandboxes
  issued and for the client secret; so are the databases and the WMS files.
* Token files (and their lock files) are mode 0600.
* The sandbox and the Prometheus metrics endpoint listen on loopback unless told otherwise.
* Order files written to the WMS neutralise formula-injection prefixes (checked per order in
  the crash and storm phases; counted here).
"""

from __future__ import annotations

import re
import socket
import stat
import time
import urllib.request
from collections.abc import Iterable
from contextlib import ExitStack, suppress
from pathlib import Path

from tests.reliability.results import SecurityReport
from tests.reliability.world import (
    CLIENT_SECRET,
    Proc,
    World,
    free_port,
    make_world,
    wait_until,
)

NOT_SCANNED = ("daemon.yaml", "nextengine-tokens.json", "credentials")
URL = re.compile(r"http://([0-9.]+|\[[0-9a-f:]+\]):(\d+)")


def check_security(root: Path, secrets: set[str], formula_cells: int) -> SecurityReport:
    """Scan everything under ``root`` and probe the listeners."""
    report = SecurityReport()
    listeners = root / "listeners"
    world = make_world(listeners)
    try:
        _metrics(world, report)
        _sandbox_cli(world, report)
        secrets |= issued_secrets(world)
    finally:
        world.sandbox.stop()
    _scan(root, secrets | {CLIENT_SECRET}, report)
    _token_files(root, report)
    report.add(
        "order files neutralise formula prefixes",
        formula_cells > 0,
        f"{formula_cells} order(s) with =, +, -, @ names written as '=…, '+…, '-…, '@…",
    )
    return report


def issued_secrets(world: World) -> set[str]:
    """Every access and refresh token the world's sandbox ever issued."""
    pairs = world.sandbox.state._pairs.values()  # all pairs, live or dead
    return {token for pair in pairs for token in (pair.access_token, pair.refresh_token)}


def _scan(root: Path, secrets: set[str], report: SecurityReport) -> None:
    report.secrets_known = len(secrets)
    needles = [s.encode("utf-8") for s in secrets if len(s) >= 8]
    hits: list[str] = []
    for path in _files(root):
        data = path.read_bytes()
        report.scanned_files += 1
        report.scanned_bytes += len(data)
        if any(needle in data for needle in needles):
            hits.append(str(path.relative_to(root)))
    logs = sum(1 for p in _files(root) if p.suffix == ".log")
    report.add(
        "no token or client secret in any log line, CLI output, database or WMS file",
        not hits,
        f"found in {hits[:5]}"
        if hits
        else f"{logs} log/output files and {report.scanned_files - logs} other files clean",
    )


def _files(root: Path) -> Iterable[Path]:
    for path in sorted(root.rglob("*")):
        if (
            path.is_file()
            and not path.is_symlink()
            and not any(
                part in NOT_SCANNED or part.startswith(".nextengine-tokens")
                for part in path.relative_to(root).parts
            )
        ):
            yield path


def _token_files(root: Path, report: SecurityReport) -> None:
    found = sorted(root.rglob("nextengine-tokens.json")) + sorted(
        root.rglob("nextengine-tokens.json.lock")
    )
    loose = [str(p) for p in found if stat.S_IMODE(p.stat().st_mode) != 0o600]
    leftovers = sorted(str(p) for p in root.rglob(".nextengine-tokens.json.*.tmp"))
    report.add(
        "token files and their locks are mode 0600",
        bool(found) and not loose,
        f"{len(found)} checked" + (f"; not 0600: {loose}" if loose else ""),
    )
    report.add("no token temp file left behind", not leftovers, ", ".join(leftovers))


def listening(port: int) -> set[str]:
    """The local addresses a TCP port listens on (from /proc/net/tcp and tcp6)."""
    found: set[str] = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:
                found.add(_address(address, width))
    return found


def _address(hex_address: str, width: int) -> str:
    raw = bytes.fromhex(hex_address)
    if width == 8:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def _metrics(world: World, report: SecurityReport) -> None:
    for host, wanted in ((None, {"127.0.0.1"}), ("0.0.0.0", {"0.0.0.0"})):
        port = free_port()
        metrics = f"metrics:\n  port: {port}\n" + (f"  host: {host}\n" if host else "")
        good = world.config.read_text("utf-8")
        world.config.write_text(good + metrics, encoding="utf-8")
        proc = world.start("run")
        try:
            wait_until(lambda port=port: bool(listening(port)), 20)
            bound = listening(port)
            if host is None:
                report.add(
                    f"metrics endpoint answers through {FLOOD} half-sent connections "
                    "with bounded threads",
                    *_flooded_scrape(port, proc.popen.pid),
                )
        finally:
            proc.terminate()
            world.config.write_text(good, encoding="utf-8")
        label = (
            "metrics endpoint binds to loopback by default"
            if host is None
            else "metrics endpoint binds where metrics.host says"
        )
        report.add(label, bound == wanted, f"port {port} listening on {sorted(bound)}")


FLOOD = 200


def _flooded_scrape(port: int, pid: int) -> tuple[bool, str]:
    """Open ``FLOOD`` connections that send half a request, then scrape: the answer comes and
    the daemon's threads grow by its few server slots, not by one per connection."""
    before = _threads(pid)
    with ExitStack() as stack:
        for _ in range(FLOOD):
            conn = stack.enter_context(socket.create_connection(("127.0.0.1", port), 30))
            with suppress(OSError):
                conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x")
        during = _threads(pid)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as got:
                answered = b"nebridge_" in got.read()
        except OSError as exc:
            return False, f"the scrape failed: {exc}"
    return (
        answered and during - before < FLOOD // 4,
        f"daemon threads {before} before, {during} during the flood; scrape answered",
    )


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def _sandbox_cli(world: World, report: SecurityReport) -> None:
    report.add(
        "sandbox default host is loopback",
        world.sandbox.config.host == "127.0.0.1"
        and world.sandbox.base_url.startswith("http://127.0.0.1:"),
        world.sandbox.base_url,
    )
    proc: Proc = world.start("sandbox", "serve", "--port", "0", label="sandbox-serve")
    try:
        wait_until(lambda: URL.search(proc.log.read_text("utf-8", "replace")) is not None, 20)
        match = URL.search(proc.log.read_text("utf-8", "replace"))
        bound = listening(int(match.group(2))) if match else set()
        time.sleep(0.1)
    finally:
        proc.terminate()
    report.add(
        "`nebridge sandbox serve` binds to loopback by default",
        bound == {"127.0.0.1"},
        f"{match.group(0) if match else 'no URL printed'} listening on {sorted(bound)}",
    )
